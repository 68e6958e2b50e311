"""timeline/{dist_init,grad_norm,sign_flips}; the weights themselves (snapshots)."""
from __future__ import annotations

from typing import Sequence

import torch

from dynamics_core import probes as P
from dynamics_core.hooks import StackedMembers, StepContext
from dynamics_core.measure.base import ProbeFamily
from dynamics_core.measure.registry import register_probe


class Timeline(ProbeFamily):
    """Distance from and sign flips against the initial weights; the norm of
    the gradient of the mean loss on the probe set, ‖Σᵢ gᵢ‖/n (one backward
    pass in eval mode, float32; the norm in float64)."""

    flag = "timeline"

    def __call__(self, ctx: StepContext) -> dict[str, float]:
        params = [p.detach() for p in ctx.model.parameters()]
        ps = self.probes
        return _values(params, ctx.init_params, P.gradient_norm(ctx.model, ctx.loss_fn, ps.x, ps.y))

    def batch_key(self) -> tuple:
        return self._probe_set_key()

    @staticmethod
    def batched(hooks: Sequence["Timeline"], stack: StackedMembers) -> list[dict[str, float]]:
        """One vmapped backward pass of the probe set through every member."""
        ps = hooks[0].probes
        grads = stack.mean_gradients(ps.x, ps.y)
        return [_values([p[r] for p in stack.params.values()], init, P.gradient_norm([g[r] for g in grads.values()]))
                for r, init in enumerate(stack.init_params)]


def _values(params: list[torch.Tensor], init_params: list[torch.Tensor], grad_norm: float) -> dict[str, float]:
    return {"timeline/dist_init": float(P.distance_from_init(params, init_params)),
            "timeline/grad_norm": float(grad_norm),
            "timeline/sign_flips": float(P.sign_flip_fraction(params, init_params))}


class Snapshots(ProbeFamily):
    """Artifact `weights`: the flattened parameters, for trajectory PCA pictures."""

    flag = "snapshots"

    def __call__(self, ctx: StepContext) -> None:
        flat = torch.cat([p.detach().reshape(-1) for p in ctx.model.parameters()])
        ctx.log_artifact("weights", flat.float().cpu().numpy())


register_probe(Timeline.flag, Timeline)
register_probe(Snapshots.flag, Snapshots)
