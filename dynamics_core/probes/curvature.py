"""Hessian curvature of the probe-set loss: top algebraic eigenvalue (Lanczos)
and trace (Hutchinson), both over Hessian-vector products (double backward).

The loss is `loss_fn(model(inputs), targets)` and the Hessian is taken w.r.t.
all trainable parameters (`requires_grad=True`) in model order. With
`chunk_size`, the HVP is accumulated over chunks of examples weighted by chunk
size, which assumes `loss_fn` averages over examples (the forward pass is then
recomputed for every HVP instead of keeping one graph alive).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import nn

from .modes import flatten, make_generator, probe_mode, rademacher, to_numpy, trainable

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True, eq=False)
class EigenResult:
    """`value`: largest algebraic eigenvalue; `vector`: its unit eigenvector
    (1-D float64 CPU tensor over the flattened trainable parameters, pass it
    back as `v0`); `n_hvp`: Hessian-vector products used."""
    value: float
    vector: torch.Tensor
    n_hvp: int
    converged: bool = True


class _HVP:
    """v -> H v for the loss on a fixed batch; counts calls."""

    def __init__(self, model, loss_fn, inputs, targets, chunk_size=None):
        self.params = trainable(model)
        if not self.params:
            raise ValueError("model has no trainable parameters")
        self.dim = sum(p.numel() for p in self.params)
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        self.model, self.loss_fn = model, loss_fn
        self.inputs, self.targets = inputs, targets
        self.count = 0
        if chunk_size is None:  # one graph, kept alive for every HVP
            self.chunks, self._grad = [], self._graph(inputs, targets)
        else:
            n = len(inputs)
            self.chunks = [(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]
            self._grad = None

    def _graph(self, inputs, targets):
        loss = self.loss_fn(self.model(inputs), targets)
        grads = torch.autograd.grad(loss, self.params, create_graph=True)
        return flatten(grads)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.count += 1
        v = v.to(device=self.device, dtype=self.dtype)
        if self._grad is not None:
            return self._hv(self._grad, v, retain=True)
        n, out = len(self.inputs), torch.zeros_like(v)
        for lo, hi in self.chunks:
            g = self._graph(self.inputs[lo:hi], self.targets[lo:hi])
            out += self._hv(g, v, retain=False) * ((hi - lo) / n)
        return out

    def _hv(self, g, v, retain):
        hv = torch.autograd.grad(g @ v, self.params, retain_graph=retain)
        return flatten(hv).detach()

    def numpy_matvec(self, x: np.ndarray) -> np.ndarray:
        v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1))
        return to_numpy(self(v)).astype(np.float64)


def hessian_top_eigen(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                      targets: torch.Tensor, tol: float = 1e-3, v0=None, *,
                      maxiter: int | None = None, bn_mode: str = "eval",
                      chunk_size: int | None = None,
                      ncv: int = 10,
                      generator: torch.Generator | None = None) -> EigenResult:
    """Largest algebraic Hessian eigenvalue by Lanczos (ARPACK `eigsh`,
    `which='LA'`, k=1) over HVPs. `v0` (e.g. the previous `.vector`) warm-starts;
    otherwise a Gaussian start vector is drawn from the probe's own generator.
    `ncv` = Lanczos basis size (scipy's default 20 costs ≥ 21 HVPs even from
    a perfect warm start; 10 needs ≈ 16 cold and ≈ 11 warm at tol 1e-3)."""
    with probe_mode(model, bn_mode=bn_mode):
        hvp = _HVP(model, loss_fn, inputs, targets, chunk_size)
        if v0 is None:
            g = make_generator(generator)
            v0 = torch.randn(hvp.dim, generator=g, device=g.device, dtype=torch.float64)
        v0 = to_numpy(v0).astype(np.float64).reshape(-1)
        if v0.shape[0] != hvp.dim:
            raise ValueError(f"v0 has {v0.shape[0]} entries, model has {hvp.dim} parameters")
        if hvp.dim <= 2:  # ARPACK needs k < n: build the tiny Hessian column by column
            H = np.stack([hvp.numpy_matvec(e) for e in np.eye(hvp.dim)], axis=1)
            w, V = np.linalg.eigh((H + H.T) / 2)
            return EigenResult(float(w[-1]), torch.from_numpy(V[:, -1].copy()), hvp.count)
        op = LinearOperator((hvp.dim, hvp.dim), matvec=hvp.numpy_matvec, dtype=np.float64)
        converged = True
        try:
            w, V = eigsh(op, k=1, which="LA", tol=tol, v0=v0, ncv=min(ncv, hvp.dim),
                         maxiter=maxiter)
        except ArpackNoConvergence as err:  # keep what Lanczos found, flag it
            if len(err.eigenvalues) == 0:
                raise
            w, V, converged = err.eigenvalues, err.eigenvectors, False
        return EigenResult(float(w[0]), torch.from_numpy(np.ascontiguousarray(V[:, 0])),
                           hvp.count, converged)


def hessian_trace(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                  targets: torch.Tensor, samples: int = 20,
                  generator: torch.Generator | None = None, *, bn_mode: str = "eval",
                  chunk_size: int | None = None) -> float:
    """Hutchinson estimate Tr(H) ≈ mean_s vᵀHv over Rademacher vectors v drawn
    from the probe's own generator (fixed seed when None)."""
    g = make_generator(generator)
    with probe_mode(model, bn_mode=bn_mode):
        hvp = _HVP(model, loss_fn, inputs, targets, chunk_size)
        total = 0.0
        for _ in range(samples):
            v = rademacher(hvp.dim, g, hvp.device, hvp.dtype)
            total += float((v @ hvp(v)).double())
    return total / samples


def hessian_hvp(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                targets: torch.Tensor, vector: torch.Tensor, *,
                bn_mode: str = "eval") -> torch.Tensor:
    """One Hessian-vector product H v (flattened, parameters' dtype)."""
    with probe_mode(model, bn_mode=bn_mode):
        return _HVP(model, loss_fn, inputs, targets)(vector)
