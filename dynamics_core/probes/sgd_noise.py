"""SGD noise along the top Hessian direction: the s² of the stability criterion.

The break-even stability criterion (`breakeven.stability_breakeven`)

    (1 − ηλ_H¹)² + s²η²(N − S)/(S(N − 1)) ≥ 1

says that one SGD step does not shrink the mean-square distance to the
minimum along the top Hessian eigenvector e, exactly so in the model of Wu,
Ma & E (2018, "How SGD selects the global minima"): along e,
every example's loss is a parabola with a common minimiser ψ* and its own
curvature h_i = eᵀH_i e (H_i the Hessian of example i's loss),
L_i = ½h_i(ψ − ψ*)². One step multiplies ψ − ψ* by 1 − ηh_B, h_B the mean
curvature of the batch; its mean over examples is λ_H¹ = mean_i h_i and, for
S examples drawn without replacement from N, its variance is
s²(N − S)/(S(N − 1)), where

    s² = (1/n) Σ_i (h_i − mean h)²,

the variance of the per-example curvatures along e. That is the s² this
probe reports (`s2`), on the curvature batch (the examples λ_H¹ is measured
on). It is a curvature squared, like (λ_H¹)², so s²η² is a number and the
criterion is dimensionless. The per-example *gradient* variance along e,
Var_i(g_i·e) (`grad_var`), is s²(ψ − ψ*)² in that model (g_i·e = h_i(ψ − ψ*)):
it scales with the unknown distance to the minimum, so it is logged beside
s² but is not the criterion's term.

Both come from one forward-over-forward pass: with ℓ(θ) the vector of
per-example losses, the first directional derivative along e is g_i·e and
the second is h_i (`torch.func.jvp` nested), so neither per-example
gradients nor per-example Hessians are formed. BatchNorm uses running
statistics (per-example losses need eval mode).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jvp, vmap

from .modes import probe_mode
from .pergrad import LossFn


def directional_derivatives(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                            targets: torch.Tensor, vector: torch.Tensor, *,
                            bn_mode: str = "eval") -> tuple[torch.Tensor, torch.Tensor]:
    """(d1, d2), each (n,): per example i, d1_i = g_i·v and d2_i = vᵀH_i v, the
    first and second derivatives of `loss_fn(out_i[None], y_i[None])` along
    `vector` (flattened over the trainable parameters in model order)."""
    if bn_mode != "eval":
        raise ValueError("per-example curvatures need BatchNorm in eval mode (bn_mode='eval')")
    with probe_mode(model, bn_mode="eval"):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("model has no trainable parameters")
        total = sum(p.numel() for _, p in named)
        v = torch.as_tensor(vector).reshape(-1)
        if v.numel() != total:
            raise ValueError(f"vector has {v.numel()} entries, model has {total} parameters")
        params, tangent, i = {}, {}, 0
        for n, p in named:
            params[n] = p.detach()
            tangent[n] = v[i:i + p.numel()].to(p.dtype).to(p.device).view_as(p)
            i += p.numel()
        frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
        frozen.update({n: b.detach() for n, b in model.named_buffers()})

        def losses(ps):
            out = functional_call(model, (ps, frozen), (inputs,))
            return vmap(lambda o, y: loss_fn(o[None], y[None]))(out, targets)

        def slope(ps):
            return jvp(losses, (ps,), (tangent,))[1]

        d1, d2 = jvp(slope, (params,), (tangent,))
        return d1.detach(), d2.detach()


def sgd_noise(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, targets: torch.Tensor,
              vector: torch.Tensor, *, bn_mode: str = "eval") -> dict[str, float]:
    """Along the unit vector `vector` (the top Hessian eigenvector): `s2`, the
    variance of the per-example curvatures h_i (the criterion's s², module
    docstring); `curv_mean`, their mean (= vᵀHv, λ_H¹ for the eigenvector);
    `grad_var`, the variance of the per-example gradient components g_i·v.
    Variances with 1/n, as K's."""
    v = torch.as_tensor(vector).reshape(-1).double()
    v = v / v.norm()
    d1, d2 = directional_derivatives(model, loss_fn, inputs, targets, v, bn_mode=bn_mode)
    d1, d2 = d1.double(), d2.double()
    return {"s2": float(d2.var(unbiased=False)), "curv_mean": float(d2.mean()),
            "grad_var": float(d1.var(unbiased=False))}
