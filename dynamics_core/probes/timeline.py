"""Cheap timeline statistics (Frankle, Schwab, Morcos 2020): distance from
initialisation, gradient norm, fraction of sign flips.

Parameters may be given as a module (all its parameters, model order), a
name→tensor dict (matched by the module's parameter names when paired with
a module, else its values in order) or a list of tensors.
"""
from __future__ import annotations

import torch
from torch import nn

from .modes import flatten, probe_mode, trainable


def _tensors(x, names: list[str] | None = None) -> list[torch.Tensor]:
    if isinstance(x, nn.Module):
        return [p.detach() for p in x.parameters()]
    if isinstance(x, dict):
        return [x[n].detach() for n in names] if names is not None else [
            t.detach() for t in x.values()]
    if isinstance(x, torch.Tensor):
        return [x.detach()]
    return [t.detach() for t in x]


def _pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    names = [n for n, _ in a.named_parameters()] if isinstance(a, nn.Module) else None
    ta, tb = _tensors(a), _tensors(b, names if isinstance(b, dict) else None)
    if len(ta) != len(tb) or any(x.shape != y.shape for x, y in zip(ta, tb)):
        raise ValueError("parameter lists differ in length or shapes")
    return flatten(ta).double(), flatten([t.to(ta[0].device) for t in tb]).double()


def distance_from_init(model, init_params, relative: bool = False) -> float:
    """‖θ − θ₀‖₂ over all parameters (divided by ‖θ₀‖₂ when `relative`)."""
    a, b = _pair(model, init_params)
    d = float((a - b).norm())
    return d / float(b.norm()) if relative else d


def sign_flip_fraction(params, reference_params) -> float:
    """Fraction of entries whose sign (−1, 0, +1) differs from the reference."""
    a, b = _pair(params, reference_params)
    return float((torch.sign(a) != torch.sign(b)).double().mean())


def gradient_norm(model_or_grad, loss_fn=None, inputs=None, targets=None, *,
                  bn_mode: str = "eval") -> float:
    """‖∇L‖₂. Given a gradient (tensor or list of tensors), its norm; given a
    model, loss_fn and a batch, the norm of the batch-loss gradient w.r.t. the
    trainable parameters via `torch.autograd.grad` (no `.grad` written)."""
    if not isinstance(model_or_grad, nn.Module):
        return float(flatten(_tensors(model_or_grad)).double().norm())
    model = model_or_grad
    with probe_mode(model, bn_mode=bn_mode):
        loss = loss_fn(model(inputs), targets)
        grads = torch.autograd.grad(loss, trainable(model))
    return float(flatten(grads).double().norm())
