"""Stiffness against input distance (ξ, the `stiffness_distance` artifact) and
the class matrices as arrays, from the probe round's one Gram; the frequency
probe's filter variant and tracked frequencies."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dynamics_core import models
from dynamics_core.config import DataConfig, ModelConfig, ProbesConfig, TrialConfig
from dynamics_core.hooks import StepContext
from dynamics_core.measure import default_hooks
from dynamics_core.probes import (critical_length, label_peaks, low_high_errors,
                                  stiffness_by_distance, stiffness_from)
from dynamics_core.probes.frequency import nearest_neighbour_scale
from dynamics_core.probes.stiffness import input_distances

pytestmark = pytest.mark.usefixtures("single_thread")


def test_xi_on_a_constructed_crossing():
    """Five same-class points, distances and gradient products set pair by pair:
    bins [0, .5), [.5, 1), [1, 1.5] hold sign +1, +0.5, −1, so ξ lies between
    the centres 0.75 and 1.25 at 0.75 + 0.5 · 0.5 / 1.5."""
    pairs = {(0, 1): (0.25, 1), (2, 3): (0.25, 1),
             (0, 2): (0.75, 1), (0, 3): (0.75, 1), (1, 2): (0.75, 1), (1, 3): (0.75, -1),
             (0, 4): (1.25, -1), (1, 4): (1.25, -1), (2, 4): (1.25, -1), (3, 4): (1.25, -1)}
    dist, gram = np.zeros((5, 5)), 4.0 * np.eye(5)
    for (i, j), (d, dot) in pairs.items():
        dist[i, j] = dist[j, i] = d
        gram[i, j] = gram[j, i] = dot
    y = torch.zeros(5, dtype=torch.long)
    r = stiffness_by_distance(gram=torch.tensor(gram), distances=dist, targets=y,
                              bins=[0.0, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(r["sign"], [1.0, 0.5, -1.0])
    np.testing.assert_allclose(r["cos"], [0.25, 0.125, -0.25])
    assert r["count"].tolist() == [4.0, 8.0, 8.0]          # ordered pairs i ≠ j
    assert r["xi"] == pytest.approx(0.75 + 0.5 * 0.5 / 1.5)
    # the first bin already ≤ 0: its centre; never ≤ 0: NaN; empty bins are skipped
    assert critical_length(np.array([0.1, 0.3]), np.array([-0.2, -1.0])) == pytest.approx(0.1)
    assert np.isnan(critical_length(np.array([0.1, 0.3]), np.array([0.2, 0.1])))
    assert critical_length(np.array([0.1, 0.3, 0.5]), np.array([1.0, np.nan, -1.0])) == pytest.approx(0.3)
    # a registered level above 0: the first crossing of that level, interpolated the same way
    r5 = stiffness_by_distance(gram=torch.tensor(gram), distances=dist, targets=y,
                               bins=[0.0, 0.5, 1.0, 1.5], level=0.75)
    assert r5["xi"] == pytest.approx(0.25 + 0.5 * 0.25 / 0.5)
    assert critical_length(np.array([0.1, 0.3]), np.array([0.9, 0.95]), level=0.9) == pytest.approx(0.1)
    assert np.isnan(critical_length(np.array([0.1, 0.3]), np.array([1.0, 0.95]), level=0.9))


def test_by_distance_from_a_gram_equals_from_gradients():
    g = torch.randn(12, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.randn(12, 2, 3, generator=torch.Generator().manual_seed(1))
    y = torch.arange(12) % 3
    a = stiffness_by_distance(g, x, targets=y, bins=4)
    b = stiffness_by_distance(gram=g @ g.T, distances=input_distances(x), targets=y, bins=4)
    for key in ("edges", "centers", "count", "sign", "cos"):
        np.testing.assert_allclose(a[key], b[key], atol=1e-12)
    assert a["xi"] == b["xi"] or (np.isnan(a["xi"]) and np.isnan(b["xi"]))
    with pytest.raises(ValueError, match="grads or gram"):
        stiffness_by_distance(inputs=x, targets=y)


@pytest.fixture(scope="module")
def probe_round(mnist1d_cache):
    """One probe round of the stiffness and frequency hooks on a tiny MLP, by hand."""
    from dynamics_core.data import load
    data = load(DataConfig(train_size=300, test_size=100), torch.device("cpu"), mnist1d_cache)
    cfg = TrialConfig(model=ModelConfig(name="mlp", width=16),
                      probes=ProbesConfig(hessian=False, gradcov=False, timeline=False, frequency=True,
                                          probe_size=40, val_probe_size=24, stiffness_bins=6))
    model = models.build(cfg.model, data.input_shape, data.num_classes, 0)
    hooks = {h.name: h for h in default_hooks(cfg, data)}
    artifacts = {}
    ctx = StepContext(step=0, epoch=0, model=model, loss_fn=nn.CrossEntropyLoss(), data=data, lr=0.1,
                      momentum=0.0, batch_size=32, init_params=[p.detach().clone() for p in model.parameters()],
                      log_artifact=lambda name, value: artifacts.__setitem__(name, value))
    out = {}
    for h in hooks.values():
        out.update(h(ctx))
    return cfg, model, hooks, out, artifacts


def test_distance_artifact_and_xi_equal_a_pair_loop(probe_round):
    cfg, model, hooks, out, artifacts = probe_round
    ps = hooks["probes.stiffness"].probes
    m64 = models.build(cfg.model, ps.data.input_shape, ps.data.num_classes, 0).double()
    m64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    x, y = ps.x.double(), ps.y
    g = []
    for i in range(len(x)):
        grads = torch.autograd.grad(F.cross_entropy(m64(x[i:i + 1]), y[i:i + 1]), list(m64.parameters()))
        g.append(torch.cat([t.reshape(-1) for t in grads]))
    xf = x.reshape(len(x), -1)
    d, s, c = [], [], []
    for i in range(len(x)):
        for j in range(len(x)):
            if i != j and y[i] == y[j]:
                d.append(1 - float(xf[i] @ xf[j] / (xf[i].norm() * xf[j].norm())))
                dot = float(g[i] @ g[j])
                s.append(np.sign(dot))
                c.append(dot / float(g[i].norm() * g[j].norm()))
    d, s, c = map(np.array, (d, s, c))
    bins = cfg.probes.stiffness_bins
    edges = np.linspace(d.min(), d.max(), bins + 1)
    which = np.minimum(((d - d.min()) / (d.max() - d.min()) * bins).astype(int), bins - 1)
    sign = np.array([s[which == b].mean() if (which == b).any() else np.nan for b in range(bins)])
    cos = np.array([c[which == b].mean() if (which == b).any() else np.nan for b in range(bins)])

    a = artifacts["stiffness_distance"]
    assert isinstance(a, np.ndarray) and a.shape == (3, bins) and a.dtype == np.float64
    np.testing.assert_allclose(a[0], (edges[:-1] + edges[1:]) / 2, atol=1e-12)
    np.testing.assert_allclose(a[1], sign, atol=1e-12)
    np.testing.assert_allclose(a[2], cos, atol=1e-5)
    expected = critical_length(a[0], sign)        # undefined (NaN): not logged
    assert out.get("stiffness/train_train/xi", np.nan) == pytest.approx(expected, nan_ok=True)


def test_class_matrices_are_arrays_of_the_summary_values(probe_round):
    """`stiffness_<pair>` is the (2, C, C) stack [class_sign, class_cos] of
    `stiffness_from` (the values the JSON artifact held), NaN where no pair."""
    from dynamics_core import probes as P
    _, model, hooks, out, artifacts = probe_round
    ps = hooks["probes.stiffness"].probes
    n, c = len(ps.y), ps.num_classes
    # the round's Gram: stiffness alone reads only cosines, so none of it is float64-accumulated
    joint = P.per_example_gram(model, nn.CrossEntropyLoss(), torch.cat([ps.x, ps.xv]),
                               torch.cat([ps.y, ps.yv]), exact=0)
    expected = {"train_train": stiffness_from(ps.y, c, gram=joint[:n, :n]),
                "train_val": stiffness_from(ps.y, c, gram=joint, other_targets=ps.yv),
                "val_val": stiffness_from(ps.yv, c, gram=joint[n:, n:])}
    for pair, s in expected.items():
        a = artifacts[f"stiffness_{pair}"]
        assert isinstance(a, np.ndarray) and a.shape == (2, c, c) and a.dtype == np.float64
        np.testing.assert_array_equal(a[0], s["class_sign"])
        np.testing.assert_array_equal(a[1], s["class_cos"])
        assert out[f"stiffness/{pair}/sign_within"] == s["sign_within"]


def test_frequency_filter_variant_equals_low_high_errors(probe_round):
    cfg, model, hooks, out, _ = probe_round
    h = hooks["probes.frequency"]
    ps = h.probes
    with torch.no_grad():
        probs = model.eval()(ps.x).softmax(1)
    labels = ps.label_repr(ps.y)
    widths = np.array(cfg.probes.frequency_widths) * nearest_neighbour_scale(ps.x)
    direct = low_high_errors(probs, labels, ps.x, widths)
    assert len(widths) == 5
    for j in range(len(widths)):
        assert out[f"freq/e_low_w{j}"] == pytest.approx(direct["e_low"][j], rel=1e-12)
        assert out[f"freq/e_high_w{j}"] == pytest.approx(direct["e_high"][j], rel=1e-12)
    assert not any(k.startswith("freq/e_low_w5") for k in out)
    peaks = label_peaks(labels, h.z, num=cfg.probes.frequencies)
    assert [out[f"freq/k{i}"] for i in range(len(peaks))] == peaks.tolist()
    assert len([k for k in out if k.startswith("freq/k")]) == len(peaks)
    assert len([k for k in out if k.startswith("freq/delta_k")]) == len(peaks)


def test_new_fields_keep_the_default_hash():
    assert TrialConfig(probes=ProbesConfig(stiffness_bins=10, frequency_widths=(0.5, 1.0, 2.0, 4.0, 8.0))
                       ).run_hash() == TrialConfig().run_hash()
    assert TrialConfig(probes=ProbesConfig(stiffness_bins=5)).run_hash() != TrialConfig().run_hash()
    with pytest.raises(ValueError):
        ProbesConfig(frequency_widths=(1.0, 0.0))
