"""Probes never change training: modes, .grad, params, buffers and every RNG
are exactly as before, and training with probes interleaved is bitwise equal
to training without them."""
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dynamics_core import probes as P


def model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 3, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Dropout(0.3),
                          nn.Flatten(), nn.Linear(3 * 8, 4))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 1, 10, generator=g), torch.randint(0, 4, (16,), generator=g)
    model.train()
    model[3].eval()  # a mixed state must come back exactly as it was
    F.cross_entropy(model(x), y).backward()  # .grad set, running stats moved
    model[0].bias.grad = None                # and one .grad absent
    return model, x, y


PROBES = {
    "hessian_top_eigen": lambda m, x, y: P.hessian_top_eigen(m, F.cross_entropy, x, y),
    "hessian_top_eigen_bn_train": lambda m, x, y: P.hessian_top_eigen(
        m, F.cross_entropy, x, y, bn_mode="train"),
    "hessian_trace": lambda m, x, y: P.hessian_trace(m, F.cross_entropy, x, y, samples=3),
    "hessian_trace_chunked_bn_train": lambda m, x, y: P.hessian_trace(
        m, F.cross_entropy, x, y, samples=2, bn_mode="train", chunk_size=8),
    "per_example_gradients": lambda m, x, y: P.per_example_gradients(m, F.cross_entropy, x, y),
    "gradient_covariance": lambda m, x, y: P.gradient_covariance(
        m, F.cross_entropy, x, y, unit="minibatch", minibatch=4),
    "stiffness": lambda m, x, y: P.stiffness(m, F.cross_entropy, x[:8], y[:8], 4,
                                             other=(x[8:], y[8:])),
    "fisher_trace": lambda m, x, y: P.fisher_trace(m, x, samples=2),
    "fisher_trace_exact": lambda m, x, y: P.fisher_trace(m, x, exact=True),
    "sample_labels": lambda m, x, y: P.sample_labels(m, x, samples=3),
    "gradient_norm": lambda m, x, y: P.gradient_norm(m, F.cross_entropy, x, y),
    "minibatch_covariance": lambda m, x, y: P.minibatch_covariance(m, F.cross_entropy, x, y, 4),
    "minibatch_covariance_bn_train": lambda m, x, y: P.minibatch_covariance(
        m, F.cross_entropy, x, y, 4, bn_mode="train"),
    "sgd_noise": lambda m, x, y: P.sgd_noise(
        m, F.cross_entropy, x, y, torch.linspace(-1, 1, sum(p.numel() for p in m.parameters()))),
}


def snapshot(model):
    return {
        "modes": [m.training for m in model.modules()],
        "params": [p.detach().clone() for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state()[1].copy(),
        "python_rng": random.getstate(),
    }


def assert_same(a, b):
    assert a["modes"] == b["modes"]
    for key in ("params", "buffers"):
        assert all(torch.equal(s, t) for s, t in zip(a[key], b[key])), key
    assert [g is None for g in a["grads"]] == [g is None for g in b["grads"]]
    assert all(s is None or torch.equal(s, t) for s, t in zip(a["grads"], b["grads"]))
    assert torch.equal(a["torch_rng"], b["torch_rng"])
    assert np.array_equal(a["numpy_rng"], b["numpy_rng"])
    assert a["python_rng"] == b["python_rng"]


def as_comparable(result):
    if isinstance(result, P.EigenResult):
        return (result.value, result.n_hvp, result.vector.tolist())
    if isinstance(result, dict):
        return {k: np.asarray(v).tolist() for k, v in result.items()}
    if isinstance(result, torch.Tensor):
        return result.tolist()
    return result


@pytest.mark.parametrize("name", sorted(PROBES))
def test_probe_has_no_side_effects_and_is_deterministic(name):
    model, x, y = model_and_data()
    before = snapshot(model)
    first = PROBES[name](model, x, y)
    assert_same(before, snapshot(model))
    with torch.no_grad():  # a caller inside no_grad still gets gradients
        second = PROBES[name](model, x, y)
    assert_same(before, snapshot(model))
    np.testing.assert_equal(as_comparable(first), as_comparable(second))


def test_probe_mode_restores_after_an_error():
    model, x, _ = model_and_data()
    before = snapshot(model)
    with pytest.raises(RuntimeError):
        with P.probe_mode(model, bn_mode="train"):
            assert not model[3].training and model[1].training
            model(x)  # moves the running stats
            raise RuntimeError("probe failed")
    assert_same(before, snapshot(model))


def train(probe_every: int | None):
    model, x, y = model_and_data()
    model.train()  # dropout on: training consumes the global RNG between probes
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(7)  # dropout draws from the global RNG
    for step in range(4):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if probe_every and step % probe_every == 0:
            for probe in PROBES.values():
                probe(model, x, y)
        opt.step()
    return [p.detach().clone() for p in model.parameters()] + list(model.buffers())


def test_training_with_probes_is_bitwise_identical():
    plain, probed = train(None), train(1)
    assert all(torch.equal(a, b) for a, b in zip(plain, probed))
