"""Spectrum of the gradient covariance K = (1/n) Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ.

The p×p matrix is never formed: with the centred gradients stacked in Gc
(n×p), the nonzero eigenvalues of GcᵀGc/n equal those of the n×n Gram
GcGcᵀ/n, which is accumulated in float64 over column blocks and diagonalised
with `torch.linalg.eigvalsh`.

"Nonzero" means above a relative tolerance: λ > rtol·λ¹ with default
rtol = 1000·n·eps(float64) (≈ 2e-10 for n = 1000), which is far above the
float64 round-off of the Gram and its eigensolver (≈ n·eps·λ¹) and far below
any genuine direction of a float32 gradient covariance.

The probe round computes the uncentred Gram GGᵀ once (`per_example_gram`,
which never forms G for Linear layers; `gram_matrix` from G) and shares it
with stiffness: `gram=` takes it, and the centred Gram is derived
exactly as GcGcᵀ = H GGᵀ H with H = I − 11ᵀ/n (`center_gram`). In float64
this loses accuracy only when the mean gradient dwarfs the spread around it
(absolute round-off ≈ eps·max‖g_i‖² per entry instead of eps·max‖g_i − ḡ‖²),
far below the rank tolerance unless ‖ḡ‖² > ~1000·λ¹(GcGcᵀ); since
‖ḡ‖² ≤ mean‖g_i‖², that needs nearly identical per-example gradients.

`unit="example"`: g_i are per-example gradients. `unit="minibatch"`: g_i are
means of disjoint consecutive minibatches of `minibatch` examples (the
break-even paper measured K on batch-128 gradients); a trailing remainder
smaller than `minibatch` is dropped, and n is the number of minibatches.
"""
from __future__ import annotations

import torch
from torch import nn

from .pergrad import LossFn, per_example_gradients

_BLOCK = 1 << 20  # elements of one float64 column block (per row count)


def centered_gram(grads: torch.Tensor) -> torch.Tensor:
    """GcGcᵀ (n×n, float64) of the row-centred grads, built in column blocks."""
    n, p = grads.shape
    cols = max(1, _BLOCK // max(n, 1))
    gram = torch.zeros(n, n, dtype=torch.float64, device=grads.device)
    for j in range(0, p, cols):
        block = grads[:, j:j + cols].double()
        block = block - block.mean(dim=0, keepdim=True)
        gram += block @ block.T
    return gram


def gram_matrix(grads: torch.Tensor) -> torch.Tensor:
    """GGᵀ (n×n, float64, uncentred): one product when `grads` is already
    float64, else built in float64 column blocks (no full float64 copy)."""
    if grads.dtype == torch.float64:
        return grads @ grads.T
    n, p = grads.shape
    cols = max(1, _BLOCK // max(n, 1))
    gram = torch.zeros(n, n, dtype=torch.float64, device=grads.device)
    for j in range(0, p, cols):
        block = grads[:, j:j + cols].double()
        gram += block @ block.T
    return gram


def center_gram(gram: torch.Tensor) -> torch.Tensor:
    """H·gram·H with H = I − 11ᵀ/n: the Gram of the row-centred vectors."""
    gram = gram.double()
    row = gram.mean(dim=1, keepdim=True)
    return gram - row - row.T + gram.mean()


def minibatch_means(grads: torch.Tensor, minibatch: int) -> torch.Tensor:
    m = grads.shape[0] // minibatch
    if m < 2:
        raise ValueError(f"need at least 2 minibatches of {minibatch}, "
                         f"have {grads.shape[0]} examples")
    return grads[:m * minibatch].reshape(m, minibatch, -1).mean(dim=1)


def gradient_covariance(model: nn.Module | None, loss_fn: LossFn | None,
                        inputs: torch.Tensor | None, targets: torch.Tensor | None,
                        unit: str = "example", minibatch: int = 128,
                        grads: torch.Tensor | None = None, *, rtol: float | None = None,
                        chunk_size: int | None = None,
                        gram: torch.Tensor | None = None) -> dict[str, float]:
    """Top eigenvalue, trace and smallest nonzero eigenvalue of K, plus the
    conditioning proxies trace/top and smallest/top, the numerical rank and
    the number of gradients n. `grads`: precomputed per-example gradients;
    `gram`: instead, their precomputed uncentred Gram GGᵀ (`gram_matrix`,
    unit="example" only). With either, `covariance_spectrum` says it shorter."""
    if grads is None and gram is None:
        grads = per_example_gradients(model, loss_fn, inputs, targets, chunk_size=chunk_size)
    return covariance_spectrum(grads, gram=gram, unit=unit, minibatch=minibatch, rtol=rtol)


def covariance_spectrum(grads: torch.Tensor | None = None, *, gram: torch.Tensor | None = None,
                        unit: str = "example", minibatch: int = 128,
                        rtol: float | None = None) -> dict[str, float]:
    """`gradient_covariance` of precomputed per-example gradients (n, p), or
    of their uncentred Gram GGᵀ (unit="example" only)."""
    if unit not in ("example", "minibatch"):
        raise ValueError(f"unit must be 'example' or 'minibatch', got {unit!r}")
    if gram is not None:
        if unit != "example":
            raise ValueError("gram= needs unit='example' (minibatch means need the gradients)")
        if grads is not None:
            raise ValueError("give grads= or gram=, not both")
        n = gram.shape[0]
        gram = center_gram(gram) / n
    else:
        if grads is None:
            raise ValueError("covariance_spectrum needs grads or gram")
        if unit == "minibatch":
            grads = minibatch_means(grads, minibatch)
        n = grads.shape[0]
        gram = centered_gram(grads) / n
    eig = torch.linalg.eigvalsh(gram).cpu()
    top = float(eig[-1])
    rtol = 1000 * n * torch.finfo(torch.float64).eps if rtol is None else rtol
    nonzero = eig[eig > rtol * top] if top > 0 else eig[:0]
    smallest = float(nonzero[0]) if len(nonzero) else float("nan")
    trace = float(torch.trace(gram))
    nan = float("nan")
    return {
        "top": top,
        "trace": trace,
        "smallest_nonzero": smallest,
        "trace_over_top": trace / top if top > 0 else nan,
        "smallest_over_top": smallest / top if top > 0 else nan,
        "rank": float(len(nonzero)),
        "n": float(n),
    }
