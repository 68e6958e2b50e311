"""Hessian probes against the dense Hessian of tiny float64 models."""
import math

import numpy as np

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dynamics_core.probes import hessian_hvp, hessian_top_eigen, hessian_trace


def dense_hessian(model, loss_fn, x, y):
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for n, p in model.named_parameters() if p.requires_grad]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])

    def f(flat):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            params[n] = flat[i:i + k].reshape(s)
            i += k
        return loss_fn(functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(f, flat0)


def tiny_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = torch.randn(16, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    return model, x, y


def tiny_conv_bn():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2), nn.Tanh(),
                          nn.Flatten(), nn.Linear(2 * 6, 3)).double()
    with torch.no_grad():
        model[1].running_mean.copy_(torch.tensor([0.3, -0.2]))
        model[1].running_var.copy_(torch.tensor([1.5, 0.7]))
    model.eval()
    x = torch.randn(12, 1, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    return model, x, y


class Param(nn.Module):
    """A 'model' that returns its own parameter vector: the loss is a quadratic."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return self.w


@pytest.mark.parametrize("make", [tiny_mlp, tiny_conv_bn])
def test_top_eigen_matches_dense(make):
    model, x, y = make()
    evals = torch.linalg.eigh(dense_hessian(model, F.cross_entropy, x, y)).eigenvalues
    res = hessian_top_eigen(model, F.cross_entropy, x, y, tol=1e-10)
    assert abs(res.value - evals[-1].item()) < 1e-4 * abs(evals[-1].item())
    assert res.n_hvp > 0 and res.converged
    assert res.vector.ndim == 1 and res.vector.numel() == sum(p.numel() for p in model.parameters())
    hv = hessian_hvp(model, F.cross_entropy, x, y, res.vector)
    assert torch.allclose(hv, res.value * res.vector, atol=1e-6)


def test_top_eigen_is_algebraic_not_magnitude():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    a = q @ torch.diag(torch.tensor([-10.0, -3.0, 0.5, 1.0, 1.5, 2.0], dtype=torch.float64)) @ q.T
    model = Param(torch.randn(6, dtype=torch.float64))

    def quad(w, a):
        return 0.5 * w @ a @ w

    x = torch.zeros(1, 1, dtype=torch.float64)  # ignored by the model
    evals = torch.linalg.eigh(dense_hessian(model, quad, x, a)).eigenvalues
    assert abs(evals[0]) > abs(evals[-1])  # the largest magnitude is negative
    res = hessian_top_eigen(model, quad, x, a, tol=1e-10)
    assert abs(res.value - 2.0) < 1e-8
    assert abs(abs(res.vector @ q[:, -1]) - 1) < 1e-6


def test_warm_start_reduces_hvps_and_agrees():
    model, x, y = tiny_conv_bn()
    cold = hessian_top_eigen(model, F.cross_entropy, x, y, tol=1e-6)
    warm = hessian_top_eigen(model, F.cross_entropy, x, y, tol=1e-6, v0=cold.vector)
    assert warm.n_hvp < cold.n_hvp
    assert abs(warm.value - cold.value) < 1e-5 * abs(cold.value)


def test_chunked_hvp_equals_full_batch():
    model, x, y = tiny_mlp()
    full = hessian_top_eigen(model, F.cross_entropy, x, y, tol=1e-10)
    chunked = hessian_top_eigen(model, F.cross_entropy, x, y, tol=1e-10, chunk_size=5)
    assert abs(full.value - chunked.value) < 1e-8
    assert abs(hessian_trace(model, F.cross_entropy, x, y, samples=3, chunk_size=5)
               - hessian_trace(model, F.cross_entropy, x, y, samples=3)) < 1e-8


def test_trace_hutchinson_within_statistical_tolerance():
    model, x, y = tiny_mlp()
    h = dense_hessian(model, F.cross_entropy, x, y)
    exact = torch.trace(h).item()
    samples = 400
    # Var(vᵀHv) for Rademacher v = 2 Σ_{i≠j} H_ij²
    std = math.sqrt(2 * ((h ** 2).sum() - (torch.diag(h) ** 2).sum()).item() / samples)
    g = torch.Generator().manual_seed(3)
    est = hessian_trace(model, F.cross_entropy, x, y, samples=samples, generator=g)
    assert abs(est - exact) < 5 * std
    # deterministic with the default (fixed-seed) generator
    assert hessian_trace(model, F.cross_entropy, x, y, samples=5) == \
        hessian_trace(model, F.cross_entropy, x, y, samples=5)


def test_float32_model_agrees_with_float64():
    model, x, y = tiny_mlp()
    exact = torch.linalg.eigh(dense_hessian(model, F.cross_entropy, x, y)).eigenvalues[-1].item()
    res = hessian_top_eigen(model.float(), F.cross_entropy, x.float(), y, tol=1e-6)
    assert abs(res.value - exact) < 1e-4 * abs(exact)


# ------------------------------------------------------------ Lanczos itself
def test_lanczos_stops_at_residual_tolerance():
    model, x, y = tiny_conv_bn()
    evals = torch.linalg.eigh(dense_hessian(model, F.cross_entropy, x, y)).eigenvalues
    loose = hessian_top_eigen(model, F.cross_entropy, x, y, tol=1e-2)
    tight = hessian_top_eigen(model, F.cross_entropy, x, y, tol=1e-10)
    assert loose.converged and loose.n_hvp < tight.n_hvp
    hv = hessian_hvp(model, F.cross_entropy, x, y, loose.vector)
    assert (hv - loose.value * loose.vector).norm() <= 1e-2 * abs(loose.value) * (1 + 1e-9)
    # the eigenvalue error is bounded by the residual (and in practice far below)
    assert abs(loose.value - evals[-1].item()) <= 1e-2 * abs(evals[-1].item())


def test_lanczos_restart_and_maxiter():
    model, x, y = tiny_conv_bn()  # p = 44
    exact = torch.linalg.eigh(dense_hessian(model, F.cross_entropy, x, y)).eigenvalues[-1].item()
    small = hessian_top_eigen(model, F.cross_entropy, x, y, tol=1e-8, ncv=3)
    assert small.converged and small.n_hvp > 3  # restarted at least once
    assert abs(small.value - exact) < 1e-8 * abs(exact)
    capped = hessian_top_eigen(model, F.cross_entropy, x, y, tol=1e-14, maxiter=2)
    assert not capped.converged and capped.n_hvp == 2
    assert capped.value <= exact + 1e-12  # a Ritz value never exceeds the top eigenvalue


def test_lanczos_top_on_matrices():
    from dynamics_core.probes.curvature import lanczos_top
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    # clustered top (1.0, 0.999) and a dominant negative end
    w = np.concatenate([[-50.0], np.linspace(-1, 0.9, 197), [0.999, 1.0]])
    a = (q * w) @ q.T
    theta, x, count, ok = lanczos_top(lambda v: a @ v, rng.standard_normal(200), tol=1e-10)
    assert ok and abs(theta - 1.0) < 1e-12 and abs(abs(x @ q[:, -1]) - 1) < 1e-8
    # a 1-parameter "space" is exhausted after one product
    theta, x, count, ok = lanczos_top(lambda v: -3.0 * v, np.array([2.0]))
    assert ok and count == 1 and theta == -3.0 and abs(x[0]) == 1.0
    # exact eigenvector as start: one product, zero residual
    theta, _, count, ok = lanczos_top(lambda v: a @ v, q[:, -1].copy(), tol=1e-12)
    assert ok and count == 1 and abs(theta - 1.0) < 1e-12
