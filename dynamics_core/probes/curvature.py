"""Hessian curvature of the probe-set loss: top algebraic eigenvalue (Lanczos)
and trace (Hutchinson), both over Hessian-vector products (double backward).

The top eigenvalue comes from a plain Lanczos iteration (`lanczos_top`,
float64 torch on the parameters' device, full reorthogonalisation) that tests convergence after every HVP, so
a good warm start costs one or two HVPs instead of a fixed Krylov basis.

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

    def float64_matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self(v).to(torch.float64)


def lanczos_top(matvec: Callable, v0, tol: float = 1e-3, maxiter: int = 200, ncv: int = 50):
    """Largest algebraic eigenpair of the symmetric operator `matvec` by
    Lanczos from `v0`: float64 numpy vectors in and out, or float64 torch
    tensors (then the iteration runs in torch on v0's device, with torch's
    threads, and x is a tensor).

    After every matvec k the tridiagonal T_k (Lanczos coefficients α, β) is
    diagonalised; θ is its largest eigenvalue with unit eigenvector s, and the
    Ritz vector x = Q_k s has residual ‖H x − θ x‖ = |β_k s[-1]| (exact in
    exact arithmetic, with β_k the norm of the next Lanczos vector). Stops when

    - |β_k s[-1]| ≤ tol·|θ|: a relative *residual* bound, ARPACK's criterion.
      It puts an eigenvalue of H within tol·|θ| of θ, and within
      (tol·θ)²/gap (gap = distance to the rest of the spectrum), so the
      eigenvalue is usually far more accurate than `tol` (≈ 1e-6 relative at
      tol 1e-3 in benchmarks/README.md): the test is conservative. Ritz
      values approach λ¹ from below, and it is λ¹ unless the start vector is
      (nearly) orthogonal to its eigenvector, the caveat of any Krylov method;
    - β_k ≈ 0 or the basis spans the whole space (Krylov space exhausted:
      θ is then exact on that invariant subspace; only a start vector with no
      component along the top eigenvector, e.g. an exact other eigenvector,
      can make it miss the top one);
    - `maxiter` matvecs in total (then `converged` is False).

    Every new Lanczos vector is orthogonalised against the whole basis (twice,
    classical Gram–Schmidt), so no spurious copies of converged Ritz values
    appear. The basis holds at most `ncv` vectors (memory ncv·dim·8 bytes);
    when it is full without convergence the iteration restarts from the
    current Ritz vector. Returns (θ, x, number of matvecs, converged).
    """
    if not isinstance(v0, torch.Tensor):
        def tensor_matvec(v: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.asarray(matvec(v.numpy()), dtype=np.float64).reshape(-1))
        theta, x, count, converged = lanczos_top(
            tensor_matvec, torch.from_numpy(np.array(v0, dtype=np.float64).reshape(-1)),
            tol=tol, maxiter=maxiter, ncv=ncv)
        return theta, x.numpy(), count, converged
    q = v0.detach().to(torch.float64).reshape(-1)
    dim = q.shape[0]
    norm = float(q.norm())
    if not norm > 0:
        raise ValueError("start vector is zero")
    q = q / norm
    size = max(1, min(ncv, dim, maxiter))
    # the Lanczos basis, one vector per row, grown by doubling (a few rows usually suffice)
    Q = torch.empty(min(size, 4), dim, dtype=torch.float64, device=q.device)
    count = 0
    while True:
        Q[0], alpha, beta = q, [], []
        for k in range(size):
            w = matvec(Q[k]).to(torch.float64).reshape(-1)
            count += 1
            alpha.append(float(Q[k] @ w))
            basis = Q[:k + 1]
            for _ in range(2):  # full reorthogonalisation ("twice is enough")
                w = w - basis.T @ (basis @ w)
            b = float(w.norm())
            T = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
            evals, evecs = np.linalg.eigh(T)
            theta, s = float(evals[-1]), evecs[:, -1]
            scale = max(abs(float(evals[0])), abs(theta))
            exhausted = k + 1 == dim or b <= 1e-12 * scale
            converged = exhausted or b * abs(s[-1]) <= tol * abs(theta)
            if converged or count >= maxiter or k + 1 == size:
                break
            beta.append(b)
            if k + 1 == Q.shape[0]:
                Q = torch.cat([Q, torch.empty(min(size, 2 * Q.shape[0]) - Q.shape[0], dim,
                                              dtype=Q.dtype, device=Q.device)])
            Q[k + 1] = w / b
        x = basis.T @ torch.from_numpy(s).to(basis.device)
        x /= x.norm()
        if converged or count >= maxiter:
            return theta, x, count, converged
        q = x  # basis full: restart from the Ritz vector


def hessian_top_eigen(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                      targets: torch.Tensor, tol: float = 1e-3, v0=None, *,
                      maxiter: int | None = None, bn_mode: str = "eval",
                      chunk_size: int | None = None,
                      ncv: int = 50,
                      generator: torch.Generator | None = None) -> EigenResult:
    """Largest algebraic Hessian eigenvalue (not the largest magnitude) by
    Lanczos over HVPs (`lanczos_top`), stopping as soon as the relative
    residual ‖Hx − θx‖ ≤ tol·|θ|; the eigenvalue error is then ≲ (tol·θ)²/gap,
    typically far below `tol`. `v0` (e.g. the previous `.vector`) warm-starts;
    otherwise Lanczos starts from the loss gradient, which lies mostly in the
    top eigenspace (2–6 fewer HVPs than a random start on MNIST-1D models,
    benchmarks/README.md), plus a Gaussian vector from the probe's own
    generator (fixed seed when None) at a tenth of its norm, so that no
    eigenvector has zero weight; from the Gaussian alone where the gradient is
    zero or with `chunk_size` (no graph kept). `maxiter`: most HVPs (default 200, then
    `converged=False` with the best Ritz pair); `ncv`: most Lanczos vectors
    kept (restart from the Ritz vector beyond that)."""
    with probe_mode(model, bn_mode=bn_mode):
        hvp = _HVP(model, loss_fn, inputs, targets, chunk_size)
        if v0 is None:
            g = make_generator(generator)
            v0 = torch.randn(hvp.dim, generator=g, device=g.device, dtype=torch.float64)
            grad = None if hvp._grad is None else hvp._grad.detach().to(v0.device, torch.float64)
            if grad is not None and float(grad.norm()) > 0:
                v0 = grad / grad.norm() + 0.1 * v0 / v0.norm()
        v0 = torch.as_tensor(v0).detach().to(device=hvp.device, dtype=torch.float64).reshape(-1)
        if v0.shape[0] != hvp.dim:
            raise ValueError(f"v0 has {v0.shape[0]} entries, model has {hvp.dim} parameters")
        value, vector, n_hvp, converged = lanczos_top(
            hvp.float64_matvec, v0, tol=tol, maxiter=200 if maxiter is None else maxiter, ncv=ncv)
        return EigenResult(value, vector.cpu(), n_hvp, converged)


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
