"""Frequency-principle probes on signals with known spectra."""
import numpy as np
import pytest
import torch

from dynamics_core.probes import (default_grid, frequency_errors, gaussian_smooth, grid_step, label_peaks,
                                  low_high_errors, nudft, pc1_projection)

N, SPAN = 200, 10.0
Z = np.arange(N) * SPAN / N  # uniform: F at k = m/SPAN is an exact DFT bin
BINS = np.arange(40) / SPAN


def signal():
    return np.stack([np.cos(2 * np.pi * 1.0 * Z) + 0.5 * np.sin(2 * np.pi * 2.5 * Z),
                     0.3 + np.cos(2 * np.pi * 1.7 * Z)], axis=1)


def test_nudft_matches_direct_sums():
    rng = np.random.default_rng(0)
    y, z, k = rng.normal(size=(30, 3)), rng.uniform(-2, 2, 30), np.array([0.0, 0.3, 1.1, 4.2])
    direct = np.array([[sum(y[j, d] * np.exp(-2j * np.pi * kk * z[j]) for j in range(30)) / 30
                        for d in range(3)] for kk in k])
    np.testing.assert_allclose(nudft(y, z, k), direct, atol=1e-12)
    np.testing.assert_allclose(nudft(torch.tensor(y[:, 0]), z, k), direct[:, :1], atol=1e-12)


def test_pc1_projection_recovers_direction():
    rng = np.random.default_rng(1)
    u = rng.normal(size=(2, 3))
    u /= np.linalg.norm(u)
    x = 5.0 + rng.normal(size=(50, 1, 1)) * u  # rank one after centring, flattened d = 6
    p1, z = pc1_projection(torch.tensor(x))
    assert abs(abs(p1 @ u.reshape(-1)) - 1) < 1e-12
    assert p1[np.argmax(np.abs(p1))] > 0
    np.testing.assert_allclose(z, x.reshape(50, -1) @ p1)


def test_label_peaks_finds_known_frequencies():
    np.testing.assert_allclose(label_peaks(signal(), Z, num=4, grid=BINS), [1.0, 1.7, 2.5])
    np.testing.assert_allclose(label_peaks(signal(), Z, num=2, grid=BINS), [1.0, 1.7])
    np.testing.assert_allclose(label_peaks(signal(), Z, num=2), [1.0, 1.7])  # default grid


def test_frequency_errors_known_values():
    y = signal()
    k = np.array([0.0, 1.0, 1.7, 2.5])
    np.testing.assert_allclose(frequency_errors(y, y, Z, k), 0.0, atol=1e-12)
    np.testing.assert_allclose(frequency_errors(0.5 * y, y, Z, k), 0.5, rtol=1e-12)
    # a constant offset lives only at k = 0
    err = frequency_errors(y + 0.2, y, Z, k)
    f0 = np.linalg.norm(y.mean(axis=0))
    np.testing.assert_allclose(err, [0.2 * np.sqrt(2) / f0, 0, 0, 0], atol=1e-12)
    # a cyclic shift by s samples is a phase: complex error 2|sin(π k s h)|, magnitude error 0
    s, h = 3, SPAN / N
    shifted = np.roll(y, -s, axis=0)
    k = k[1:]
    np.testing.assert_allclose(frequency_errors(shifted, y, Z, k), 2 * np.abs(np.sin(np.pi * k * s * h)),
                               rtol=1e-9)
    np.testing.assert_allclose(frequency_errors(shifted, y, Z, k, magnitude=True), 0, atol=1e-9)


def test_frequency_errors_int_labels_are_one_hot():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, N)
    probs = rng.dirichlet(np.ones(4), N)
    k = np.array([0.1, 0.5, 1.3])
    np.testing.assert_allclose(frequency_errors(torch.tensor(probs), torch.tensor(labels), Z, k),
                               frequency_errors(probs, np.eye(4)[labels], Z, k))


def test_gaussian_smooth_matches_loop():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(12, 2))
    w = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / (2 * 0.7 ** 2))
    np.testing.assert_allclose(gaussian_smooth(y, x, 0.7), w @ y / w.sum(1, keepdims=True), atol=1e-12)


def test_low_high_errors_known_values():
    rng = np.random.default_rng(4)
    x, labels = rng.normal(size=(40, 3)), rng.integers(0, 3, 40)
    y = np.eye(3)[labels]
    widths = [0.3, 1.0, 3.0]
    same = low_high_errors(y, labels, x, widths)
    np.testing.assert_allclose(same["e_low"], 0, atol=1e-12)
    np.testing.assert_allclose(same["e_high"], 0, atol=1e-12)
    half = low_high_errors(0.5 * y, labels, x, widths)
    np.testing.assert_allclose(half["e_low"], 0.5)
    np.testing.assert_allclose(half["e_high"], 0.5)
    # smoothing keeps constants, so a constant offset is all low-frequency error
    off = low_high_errors(y + 0.1, labels, x, widths)
    np.testing.assert_allclose(off["e_high"], 0, atol=1e-12)
    y_low = np.stack([gaussian_smooth(y, x, w) for w in widths])
    np.testing.assert_allclose(off["e_low"], 0.1 * np.sqrt(y.size) / np.linalg.norm(y_low, axis=(1, 2)))
    np.testing.assert_allclose(off["widths"], widths)


def test_label_peaks_min_sep_keeps_the_higher_of_close_peaks():
    def tones(a10, a17):      # bins 10, 17 and 25 of BINS; |F| is half the amplitude
        w = lambda f: np.cos(2 * np.pi * f * Z)      # noqa: E731
        return (a10 * w(1.0) + a17 * w(1.7) + 0.5 * w(2.5))[:, None]
    np.testing.assert_allclose(label_peaks(tones(1, .8), Z, num=4, grid=BINS, min_sep=5), [1.0, 1.7, 2.5])
    # 8 bins: 10 and 17 are too close, the higher stays; 25 is 8 from 17 and 15 from 10
    np.testing.assert_allclose(label_peaks(tones(1, .8), Z, num=4, grid=BINS, min_sep=8), [1.0, 2.5])
    np.testing.assert_allclose(label_peaks(tones(.8, 1), Z, num=4, grid=BINS, min_sep=8), [1.7, 2.5])
    np.testing.assert_allclose(label_peaks(tones(1, .8), Z, num=4, grid=BINS, min_sep=16), [1.0])
    np.testing.assert_allclose(label_peaks(tones(1, .8), Z, num=4, grid=BINS), [1.0, 1.7, 2.5])
    with pytest.raises(ValueError, match="min_sep"):
        label_peaks(tones(1, .8), Z, grid=BINS, min_sep=0)


def test_label_peaks_min_sep_counts_the_first_bin_above_zero():
    # a ramp's spectrum falls from k = 0 with no interior maximum below N/2: the default
    # rule finds no low peak, the separated rule takes the first bin (k = 0 is no neighbour)
    ramp = (Z / SPAN)[:, None]
    assert len(label_peaks(ramp, Z, num=2, grid=BINS)) == 0
    np.testing.assert_allclose(label_peaks(ramp, Z, num=1, grid=BINS, min_sep=1), [BINS[1]])
    np.testing.assert_allclose(grid_step(Z), default_grid(Z)[1])


def test_centred_separated_probe_round_equals_the_functions(mnist1d_cache):
    """The measure with `frequency_centring: mean` and `frequency_min_sep`: peaks and Δ_F
    of labels and softmax outputs less their probe-set means, the grid's bin
    logged; the two new fields at their defaults keep every old run hash."""
    from torch import nn

    from dynamics_core import models
    from dynamics_core.config import DataConfig, ModelConfig, ProbesConfig, TrialConfig
    from dynamics_core.data import load
    from dynamics_core.hooks import StepContext
    from dynamics_core.measure import default_hooks

    data = load(DataConfig(train_size=300, test_size=100), torch.device("cpu"), mnist1d_cache)
    probes = ProbesConfig(hessian=False, gradcov=False, stiffness=False, timeline=False,
                          frequency=True, probe_size=200, frequency_widths=(),
                          frequency_centring="mean", frequency_min_sep=10)
    cfg = TrialConfig(model=ModelConfig(name="mlp", width=16), probes=probes)
    model = models.build(cfg.model, data.input_shape, data.num_classes, 0)
    (hook,) = [h for h in default_hooks(cfg, data) if h.name == "probes.frequency"]
    ctx = StepContext(step=0, epoch=0, model=model, loss_fn=nn.CrossEntropyLoss(), data=data, lr=0.1,
                      momentum=0.0, batch_size=32, init_params=[], log_artifact=lambda *a: None)
    out = hook(ctx)
    ps = hook.probes
    y = ps.label_repr(ps.y).double().numpy()
    with torch.no_grad():
        t = model.eval()(ps.x).softmax(1).double().numpy()
    yc, tc = y - y.mean(0), t - t.mean(0)
    peaks = label_peaks(yc, hook.z, num=4, min_sep=10)
    assert [out[f"freq/k{i}"] for i in range(len(peaks))] == peaks.tolist()
    assert np.all(np.diff(peaks) >= 10 * out["freq/bin"] * (1 - 1e-9))
    np.testing.assert_allclose([out[f"freq/delta_k{i}"] for i in range(len(peaks))],
                               frequency_errors(tc, yc, hook.z, peaks), rtol=1e-6)
    # centred, the outputs at initialisation (near the class priors) carry almost nothing at k > 0
    assert min(out[f"freq/delta_k{i}"] for i in range(len(peaks))) > 0.8
    assert TrialConfig(probes=ProbesConfig(frequency_centring="none", frequency_min_sep=None)
                       ).run_hash() == TrialConfig().run_hash()
