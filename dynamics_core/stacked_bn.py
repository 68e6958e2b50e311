"""BatchNorm for vmapped members that rounds as each member's solo BatchNorm.

Under `vmap`, a BatchNorm with batched weights is decomposed (normalise,
then ·weight + bias) and its weight and bias gradients are summed by other
kernels than the solo run's `native_batch_norm_backward`, so they differ in
the last bits. Here the solo kernels run instead — `native_batch_norm`
(training: batch statistics, updating the running statistics in place;
eval: the running statistics) and `native_batch_norm_backward` (training,
and eval for a probe's gradient of the loss, `packed.MemberStack`):

- inputs with spatial dims, (N, C, L…) per member: the member axis is
  folded into the channels, one (N, K·C, L…) call; a channel's reductions
  run over its own contiguous N×L… elements whatever its index, so each
  member's numbers are its solo run's;
- (N, C) inputs: member by member, K calls (the CPU kernels vectorize
  across the channels there, so a folded channel would round by its
  position in the vector: measured, input gradients differ unless C is a
  multiple of 8).

Each member's output, gradients and running statistics are its solo
BatchNorm's bit for bit on CPU (tests/test_packed_kinds.py).

`vmappable(model)` points every BatchNorm module of `model` (a Pack's
functional template) at these kernels; state-dict names stay the same.
"""
from __future__ import annotations

import types

import torch
from torch import nn
from torch.autograd import Function

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


def vmappable(model: nn.Module) -> nn.Module:
    """`model` with every BatchNorm's forward running these kernels (in place)."""
    for m in model.modules():
        if isinstance(m, _BN_TYPES):
            if m.momentum is None or not m.affine or not m.track_running_stats:
                raise ValueError("packed BatchNorm needs affine, running statistics and a momentum")
            m.forward = types.MethodType(_forward, m)
    return model


def _forward(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if bn.training:
        bn.num_batches_tracked.add_(1)      # as nn.BatchNorm does; the momentum is fixed
    return _BatchNorm.apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.training,
                            bn.momentum, bn.eps)[0]


def _members_first(t: torch.Tensor, dim: int | None, k: int) -> torch.Tensor:
    return t.expand(k, *t.shape) if dim is None else t.movedim(dim, 0)


def _channels(t: torch.Tensor, dim: int | None) -> torch.Tensor:
    """A member's-own (K, C) tensor, members first: a view, so that the kernel
    updates the stacked running statistics in place."""
    if dim is None:
        raise ValueError("packed BatchNorm needs each member's own weights and running statistics")
    return t.movedim(dim, 0)


def _members(kernel, k: int, inputs: list[torch.Tensor], channels: list[torch.Tensor | None], *rest):
    """`kernel` over K members: `inputs` (K, N, C, …), `channels` (K, C) or
    None, then `rest`. Returns its outputs members first and their vmap dims."""
    if inputs[0].ndim == 3:   # (N, C) per member: the kernel vectorizes across the channels there
        outs = [kernel(*(t[i].contiguous() for t in inputs), *(c if c is None else c[i] for c in channels), *rest)
                for i in range(k)]
        return tuple(torch.stack(o) for o in zip(*outs)), (0,) * len(outs[0])
    n, spatial = inputs[0].shape[1], inputs[0].shape[3:]
    outs = kernel(*(t.movedim(0, 1).reshape(n, -1, *spatial).contiguous() for t in inputs),
                  *(c if c is None else c.view(-1) for c in channels), *rest)
    folded, dims = [], []
    for o in outs:
        if o.ndim > 1:                 # (N, K·C, …) -> (N, K, C, …)
            folded.append(o.view(n, k, -1, *spatial)), dims.append(1)
        elif o.numel() > 0:            # (K·C,) -> (K, C)
            folded.append(o.view(k, -1)), dims.append(0)
        else:                          # eval mode's empty batch statistics
            folded.append(o), dims.append(None)
    return tuple(folded), tuple(dims)


class _BatchNorm(Function):
    @staticmethod
    def forward(x, weight, bias, running_mean, running_var, training, momentum, eps):
        return torch.ops.aten.native_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, running_mean, running_var, training, _, eps = inputs
        _, mean, invstd = output
        # training: the batch statistics; eval (a probe's gradient): the running ones, unchanged by the forward
        ctx.save_for_backward(x, weight, *((mean, invstd) if training else (running_mean, running_var)))
        ctx.training, ctx.eps = training, eps
        ctx.mark_non_differentiable(mean, invstd)

    @staticmethod
    def backward(ctx, grad_out, _mean, _invstd):
        grads = _BatchNormBackward.apply(grad_out, *ctx.saved_tensors, ctx.training, ctx.eps)
        return *grads, None, None, None, None, None

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, running_mean, running_var, training, momentum, eps):
        k = info.batch_size
        dx, dw, db, dm, dv = in_dims[:5]
        return _members(torch.ops.aten.native_batch_norm, k, [_members_first(x, dx, k)],
                        [_channels(weight, dw), _channels(bias, db), _channels(running_mean, dm),
                         _channels(running_var, dv)], training, momentum, eps)


class _BatchNormBackward(Function):
    """The solo backward, itself not differentiable (a step needs no second
    derivatives): training mode from the batch statistics `a`, `b` = mean,
    invstd (the running statistics play no part); eval mode, as a probe's
    gradient of a member's loss takes it, from the running statistics `a`,
    `b` = running mean, running variance."""

    @staticmethod
    def forward(grad_out, x, weight, a, b, training, eps):
        return torch.ops.aten.native_batch_norm_backward(grad_out, x, weight, *_statistics(a, b, training), training,
                                                         eps, [True, True, True])

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def vmap(info, in_dims, grad_out, x, weight, a, b, training, eps):
        k = info.batch_size
        dg, dx, dw, da, db = in_dims[:5]
        return _members(torch.ops.aten.native_batch_norm_backward, k,
                        [_members_first(grad_out, dg, k), _members_first(x, dx, k)],
                        [_channels(weight, dw), *_statistics(_channels(a, da), _channels(b, db), training)],
                        training, eps, [True, True, True])


def _statistics(a, b, training: bool) -> tuple:
    """`native_batch_norm_backward`'s running mean, running variance, saved mean, saved invstd."""
    return (None, None, a, b) if training else (a, b, None, None)
