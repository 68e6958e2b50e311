"""Gradient covariance in the mini-batch unit: K of M mini-batch mean gradients.

The break-even paper measured K on the gradients of mini-batches of a fixed
size (128), so its λ_K¹ is on the scale of one batch-128 gradient, not of one
example's. Here a fixed set of M·S examples is cut into M consecutive
mini-batches of S; g_j is the gradient of the mean loss over batch j (one
ordinary backward per batch, the model in probe mode), and

    K_mb = (1/M) Σ_j (g_j − ḡ)(g_j − ḡ)ᵀ,   ḡ = (1/M) Σ_j g_j.

Its nonzero spectrum is that of the M×M centred Gram divided by M
(`covariance_spectrum`), so the p×p matrix is never formed. K_mb has rank at
most M − 1; its trace is (M−1)/M times the usual unbiased estimate of the
mini-batch gradient variance. For batches drawn without replacement from a
population of per-example covariance K, E[K_mb] ≈ K·(N_p − S)/(S(N_p − 1))
(N_p the population size): about K/S, which is how the two units relate.
"""
from __future__ import annotations

import torch
from torch import nn

from .covariance import covariance_spectrum
from .modes import flatten, probe_mode, trainable
from .pergrad import LossFn


def minibatch_gradients(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                        targets: torch.Tensor, batch_size: int, *,
                        bn_mode: str = "eval") -> torch.Tensor:
    """(M, p): the gradient of `loss_fn` (a mean over examples) on each of the
    M = len(inputs) // batch_size consecutive mini-batches; a remainder is
    dropped. `.grad` is never written."""
    m = inputs.shape[0] // batch_size
    if m < 2:
        raise ValueError(f"need at least 2 mini-batches of {batch_size}, have {inputs.shape[0]} examples")
    with probe_mode(model, bn_mode=bn_mode):
        params = trainable(model)
        if not params:
            raise ValueError("model has no trainable parameters")
        rows = []
        for j in range(m):
            sl = slice(j * batch_size, (j + 1) * batch_size)
            loss = loss_fn(model(inputs[sl]), targets[sl])
            rows.append(flatten(torch.autograd.grad(loss, params)).detach())
        return torch.stack(rows)


def minibatch_covariance(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                         targets: torch.Tensor, batch_size: int = 128, *,
                         bn_mode: str = "eval", rtol: float | None = None) -> dict[str, float]:
    """Spectrum of K_mb (module docstring): top, trace, smallest_nonzero,
    trace_over_top, smallest_over_top, rank and n (= M, the number of batches)."""
    grads = minibatch_gradients(model, loss_fn, inputs, targets, batch_size, bn_mode=bn_mode)
    return covariance_spectrum(grads, rtol=rtol)
