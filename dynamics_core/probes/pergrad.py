"""Per-example gradients with `torch.func`: vmap(grad(loss of one example)).

The loss of example i is `loss_fn(model(x_i[None]), y_i[None])`; the model is
called through `functional_call` with its buffers and frozen parameters, so
nothing on the module changes. Rows are flattened over the trainable
parameters in `model.parameters()` order. BatchNorm must use running
statistics under vmap, so only `bn_mode="eval"` is accepted.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from .modes import probe_mode

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def per_example_gradients(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                          targets: torch.Tensor, *, chunk_size: int | None = None,
                          bn_mode: str = "eval") -> torch.Tensor:
    """(n, p) tensor of per-example gradients, parameters' dtype and device.
    `chunk_size` bounds how many examples vmap processes at once (memory)."""
    if bn_mode != "eval":
        raise ValueError("per-example gradients need BatchNorm in eval mode (bn_mode='eval')")
    with probe_mode(model, bn_mode="eval"):
        named = [(n, p) for n, p in model.named_parameters()]
        params = {n: p.detach() for n, p in named if p.requires_grad}
        if not params:
            raise ValueError("model has no trainable parameters")
        rest = {n: p.detach() for n, p in named if not p.requires_grad}
        rest.update({n: b.detach() for n, b in model.named_buffers()})

        def loss_one(params, x, y):
            out = functional_call(model, (params, rest), (x.unsqueeze(0),))
            return loss_fn(out, y.unsqueeze(0))

        per = vmap(grad(loss_one), in_dims=(None, 0, 0), chunk_size=chunk_size)(
            params, inputs, targets)
        n = inputs.shape[0]
        return torch.cat([per[name].reshape(n, -1) for name in params], dim=1)
