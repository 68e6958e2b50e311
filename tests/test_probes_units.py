"""K in the mini-batch unit and s², the SGD-noise term of the stability
criterion, against brute force on tiny float64 models (the p×p covariance and
per-example Hessians formed explicitly), and the probes that log them in a
trial: right values at the probe steps, training unchanged."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dynamics_core import measure
from dynamics_core import train as train_module
from dynamics_core.config import ProbesConfig, TrialConfig
from dynamics_core.probes import (directional_derivatives, hessian_top_eigen, minibatch_covariance,
                                  minibatch_gradients, sgd_noise)
from dynamics_core.sink import MemorySink
from dynamics_core.train import RunEnv
from test_probes_gradients import conv_bn as _conv_bn, mlp


def conv_bn(seed=1):
    # Tanh: curvature through the activation (ReLU's is 0); train mode: the
    # probes must measure in eval mode anyway
    return _conv_bn(seed, act=nn.Tanh, train=True)


def data(n, shape, c=3, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, c, (n,), generator=g)


def flat_params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def loss_at(model, flat, x, y):
    """Loss of `model` with its parameters replaced by `flat` (for autograd.functional)."""
    params, i = {}, 0
    for n, p in model.named_parameters():
        params[n] = flat[i:i + p.numel()].view_as(p)
        i += p.numel()
    out = torch.func.functional_call(model, params, (x,))
    return F.cross_entropy(out, y)


MODELS = {"mlp": (mlp, (4,)), "conv_bn": (conv_bn, (1, 8))}


# ------------------------------------------------------- K, mini-batch unit
@pytest.mark.parametrize("name", sorted(MODELS))
def test_minibatch_covariance_matches_the_p_by_p_matrix(name):
    make, shape = MODELS[name]
    model = make()
    x, y = data(6 * 5 + 3, shape)              # 6 batches of 5 and a remainder of 3, dropped
    model.eval()
    flat = flat_params(model)
    g = torch.stack([torch.autograd.functional.jacobian(
        lambda w: loss_at(model, w, x[j * 5:(j + 1) * 5], y[j * 5:(j + 1) * 5]), flat)
        for j in range(6)])                    # (6, p): one mean-loss gradient per batch
    if name == "conv_bn":
        model.train()
    centred = g - g.mean(0)
    K = centred.T @ centred / 6                # p×p, brute force
    eig = torch.linalg.eigh(K).eigenvalues
    got = minibatch_covariance(model, F.cross_entropy, x, y, 5)
    assert got["n"] == 6 and got["rank"] == 5  # M − 1 directions
    np.testing.assert_allclose(got["top"], float(eig[-1]), rtol=1e-10)
    np.testing.assert_allclose(got["trace"], float(eig.sum()), rtol=1e-10)
    np.testing.assert_allclose(got["smallest_nonzero"], float(eig[-5]), rtol=1e-8)
    np.testing.assert_allclose(got["trace_over_top"], float(eig.sum() / eig[-1]), rtol=1e-10)
    # each row is the mean of its batch's per-example gradients
    rows = minibatch_gradients(model, F.cross_entropy, x, y, 5)
    torch.testing.assert_close(rows, g, rtol=1e-10, atol=1e-12)


def test_minibatch_covariance_needs_two_batches():
    model = mlp()
    x, y = data(9, (4,))
    with pytest.raises(ValueError, match="at least 2 mini-batches"):
        minibatch_covariance(model, F.cross_entropy, x, y, 5)


# ------------------------------------------------------------ SGD noise, s²
def per_example_hessians(model, x, y):
    flat = flat_params(model)
    return torch.stack([torch.autograd.functional.hessian(
        lambda w: loss_at(model, w, x[i:i + 1], y[i:i + 1]), flat, vectorize=True)
        for i in range(len(x))])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sgd_noise_matches_per_example_hessians(name):
    make, shape = MODELS[name]
    model = make()
    x, y = data(12, shape)
    model.eval()
    H_i = per_example_hessians(model, x, y)                      # (n, p, p)
    H = H_i.mean(0)
    evals, evecs = torch.linalg.eigh(H)
    e = evecs[:, -1]                                             # top eigenvector of the mean loss
    flat = flat_params(model)
    g_i = torch.stack([torch.autograd.functional.jacobian(
        lambda w: loss_at(model, w, x[i:i + 1], y[i:i + 1]), flat, vectorize=True)
        for i in range(len(x))])
    h = torch.einsum("p,npq,q->n", e, H_i, e)
    d1, d2 = directional_derivatives(model, F.cross_entropy, x, y, e)
    torch.testing.assert_close(d1, g_i @ e, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(d2, h, rtol=1e-9, atol=1e-12)
    got = sgd_noise(model, F.cross_entropy, x, y, 3.0 * e)       # any scale: along the unit vector
    np.testing.assert_allclose(got["s2"], float(h.var(unbiased=False)), rtol=1e-9)
    np.testing.assert_allclose(got["curv_mean"], float(evals[-1]), rtol=1e-9)   # mean h_i = λ_H¹
    np.testing.assert_allclose(got["grad_var"], float((g_i @ e).var(unbiased=False)), rtol=1e-9)
    assert got["s2"] > 0


def test_sgd_noise_along_the_lanczos_vector_gives_its_eigenvalue():
    model = mlp(3)
    x, y = data(40, (4,))
    top = hessian_top_eigen(model, F.cross_entropy, x, y, tol=1e-8)
    got = sgd_noise(model, F.cross_entropy, x, y, top.vector)
    np.testing.assert_allclose(got["curv_mean"], top.value, rtol=1e-8)


def test_sgd_noise_refuses_bad_input():
    model = mlp()
    x, y = data(5, (4,))
    with pytest.raises(ValueError, match="entries"):
        sgd_noise(model, F.cross_entropy, x, y, torch.ones(3))
    with pytest.raises(ValueError, match="eval"):
        directional_derivatives(model, F.cross_entropy, x, y, torch.ones(43), bn_mode="train")


# ------------------------------------------------------------- in a trial
OFF = {f: False for f in measure.flags()}
BASE = {"data": {"train_size": 200, "test_size": 100}, "model": {"name": "cnn1d", "width": 8},
        "optim": {"lr": 0.05}, "train": {"epochs": 2, "batch_size": 25, "device": "cpu"},
        "probes": {**OFF, "probe_size": 32, "val_probe_size": 16, "gradcov_mb_batches": 4,
                   "gradcov_mb_size": 20, "schedule": {"kind": "every", "every": 4}}}


def trial(**probes) -> TrialConfig:
    return TrialConfig.model_validate({**BASE, "probes": {**BASE["probes"], **probes}})


def run(cfg, cache):
    sink = MemorySink()
    result = train_module.run(cfg, sink, RunEnv(cache_dir=cache), hooks=measure.default_hooks)
    assert result.status == "finished"
    return sink


@pytest.mark.usefixtures("single_thread")
def test_both_units_and_s2_are_logged_and_training_is_unchanged(mnist1d_cache):
    probed = run(trial(hessian=True, gradcov=True, gradcov_mb=True, sgd_noise=True), mnist1d_cache)
    plain = run(trial(), mnist1d_cache)
    assert probed.series("train/loss") == plain.series("train/loss")
    assert probed.series("val/acc") == plain.series("val/acc")
    steps = [s for s, _ in probed.series("gradcov/top")]
    assert steps == list(range(0, 17, 4))                        # 8 steps per epoch × 2
    for key in ("gradcov_mb/top", "gradcov_mb/trace", "gradcov_mb/trace_over_top", "sgd_noise/s2",
                "sgd_noise/curv_mean", "sgd_noise/grad_var", "sgd_noise/noise_term"):
        assert [s for s, _ in probed.series(key)] == steps, key
    mb, ex = dict(probed.series("gradcov_mb/top")), dict(probed.series("gradcov/top"))
    top, s2 = dict(probed.series("hessian/top")), dict(probed.series("sgd_noise/s2"))
    for s in steps:
        assert 0 < mb[s] < ex[s]          # a mean of 20 gradients varies less than one example's
        assert dict(probed.series("gradcov_mb/trace_over_top"))[s] <= 3 + 1e-9   # rank ≤ M − 1
        # the curvature batch's mean curvature along the Lanczos vector is λ_H¹
        assert dict(probed.series("sgd_noise/curv_mean"))[s] == pytest.approx(top[s], rel=1e-3)
        # s²η²(N − S)/(S(N − 1)) with η = 0.05, S = 25, N = 200
        assert dict(probed.series("sgd_noise/noise_term"))[s] == pytest.approx(
            s2[s] * 0.05 ** 2 * 175 / (25 * 199), rel=1e-12)


@pytest.mark.usefixtures("single_thread")
def test_minibatch_subset_is_fixed_per_trial_and_checked(mnist1d_cache):
    a = run(trial(gradcov_mb=True), mnist1d_cache).series("gradcov_mb/top")
    b = run(trial(gradcov_mb=True), mnist1d_cache).series("gradcov_mb/top")
    assert a == b
    c = run(trial(gradcov_mb=True, probe_seed=1), mnist1d_cache).series("gradcov_mb/top")
    assert a[0][1] != c[0][1]                                    # another subset, another value
    with pytest.raises(ValueError, match="gradcov_mb_batches x gradcov_mb_size = 220"):
        run(trial(gradcov_mb=True, gradcov_mb_batches=11), mnist1d_cache)


def test_sgd_noise_needs_the_hessian_probe():
    with pytest.raises(ValueError, match="needs hessian: true"):
        ProbesConfig(hessian=False, sgd_noise=True)
    assert ProbesConfig(sgd_noise=True).hessian
