"""fisher/trace: Tr F with labels sampled from the model (classification only)."""
from __future__ import annotations

import torch

from dynamics_core import probes as P
from dynamics_core.hooks import StepContext
from dynamics_core.measure.base import ProbeFamily
from dynamics_core.measure.registry import register_probe


class Fisher(ProbeFamily):
    flag = "fisher"

    def __call__(self, ctx: StepContext) -> dict[str, float]:
        ps, cfg = self.probes, self.cfg
        if not ps.classification:
            return {}
        g = torch.Generator().manual_seed(cfg.probe_seed * 7_368_787 + ctx.step)
        return {"fisher/trace": P.fisher_trace(ctx.model, ps.x, samples=cfg.fisher_samples, generator=g)}


register_probe(Fisher.flag, Fisher)
