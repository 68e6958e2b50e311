"""Trace of the Fisher information, Tr F = E_x E_{y∼p(·|x)} ‖∇_θ log p(y|x)‖².

Labels are sampled from the model's own softmax (not the data labels) with
the probe's generator, and the squared norms are of per-example gradients,
never of a batch gradient. `exact=True` enumerates the classes instead:
Tr F = (1/n) Σ_x Σ_y p(y|x) ‖∇ log p(y|x)‖² (C gradient passes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .modes import make_generator, probe_mode
from .pergrad import per_example_gradients


def _nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)  # −log p(y|x) for one example


def sample_labels(model: nn.Module, inputs: torch.Tensor, samples: int = 1,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, samples) labels drawn from softmax(model(x)) in eval mode."""
    g = make_generator(generator)
    with probe_mode(model), torch.no_grad():
        probs = torch.softmax(model(inputs).double(), dim=1)
    labels = torch.multinomial(probs.to(g.device), samples, replacement=True, generator=g)
    return labels.to(inputs.device)


def fisher_trace(model: nn.Module, inputs: torch.Tensor, samples: int = 1,
                 generator: torch.Generator | None = None, *, exact: bool = False,
                 grads: torch.Tensor | None = None,
                 chunk_size: int | None = None) -> float:
    """Monte-Carlo (or `exact`) Fisher trace averaged over examples and
    samples. `grads`: precomputed per-example gradients of −log p(ŷ|x) at
    model-sampled labels ŷ (e.g. from `sample_labels`); then Tr F is the mean
    squared row norm."""
    if grads is not None:
        return float(grads.double().pow(2).sum(dim=1).mean())
    if exact:
        with probe_mode(model), torch.no_grad():
            probs = torch.softmax(model(inputs).double(), dim=1)
        total = torch.zeros(len(inputs), dtype=torch.float64, device=probs.device)
        for c in range(probs.shape[1]):
            y = torch.full((len(inputs),), c, dtype=torch.long, device=inputs.device)
            g = per_example_gradients(model, _nll, inputs, y, chunk_size=chunk_size)
            total += probs[:, c] * g.double().pow(2).sum(dim=1).to(probs.device)
        return float(total.mean())
    labels = sample_labels(model, inputs, samples, generator)
    sq = []
    for s in range(samples):
        g = per_example_gradients(model, _nll, inputs, labels[:, s], chunk_size=chunk_size)
        sq.append(g.double().pow(2).sum(dim=1))
    return float(torch.cat(sq).mean())
