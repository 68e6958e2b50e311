"""timeline/{dist_init,grad_norm,sign_flips}; the weights themselves (snapshots)."""
from __future__ import annotations

import torch

from dynamics_core import probes as P
from dynamics_core.hooks import StepContext
from dynamics_core.measure.base import ProbeFamily
from dynamics_core.measure.registry import register_probe


class Timeline(ProbeFamily):
    """Distance from and sign flips against the initial weights; the norm of
    the mean gradient on the probe set, ‖Σᵢ gᵢ‖/n = √(1ᵀ GGᵀ 1)/n from the
    round's shared Gram (float64; G itself is not needed)."""

    flag = "timeline"

    def __call__(self, ctx: StepContext) -> dict[str, float]:
        params = [p.detach() for p in ctx.model.parameters()]
        gram = self.probes.at(ctx).gram
        return {"timeline/dist_init": float(P.distance_from_init(params, ctx.init_params)),
                "timeline/grad_norm": float(gram.sum().clamp(min=0).sqrt()) / len(gram),
                "timeline/sign_flips": float(P.sign_flip_fraction(params, ctx.init_params))}


class Snapshots(ProbeFamily):
    """Artifact `weights`: the flattened parameters, for trajectory PCA pictures."""

    flag = "snapshots"

    def __call__(self, ctx: StepContext) -> None:
        flat = torch.cat([p.detach().reshape(-1) for p in ctx.model.parameters()])
        ctx.log_artifact("weights", flat.float().cpu().numpy())


register_probe(Timeline.flag, Timeline)
register_probe(Snapshots.flag, Snapshots)
