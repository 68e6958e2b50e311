"""hessian/top, hessian/n_hvp, hessian/lr_x_top (Lanczos); hessian/trace (Hutchinson)."""
from __future__ import annotations

from typing import Any

import torch

from dynamics_core import probes as P
from dynamics_core.hooks import StepContext
from dynamics_core.measure.base import ProbeFamily
from dynamics_core.measure.registry import register_probe
from dynamics_core.measure.summary import Peak


TOP_VECTOR = "hessian/top_vector"   # ctx.cache key: this step's top eigenvector


class HessianTop(ProbeFamily):
    """λ_H¹ on the curvature batch, warm-started from the previous round's vector."""

    flag = "hessian"

    def __init__(self, cfg, probes):
        super().__init__(cfg, probes)
        self.v0: torch.Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"v0": self.v0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.v0 = state.get("v0")

    def __call__(self, ctx: StepContext) -> dict[str, float]:
        ps = self.probes
        res = P.hessian_top_eigen(ctx.model, ctx.loss_fn, ps.xh, ps.yh, tol=self.cfg.hessian_tol,
                                  v0=self.v0, bn_mode=self.cfg.bn_mode)
        self.v0 = res.vector
        ctx.cache[TOP_VECTOR] = res.vector      # for the probes along e_H¹ (sgd_noise)
        return {"hessian/top": res.value, "hessian/n_hvp": float(res.n_hvp),
                "hessian/lr_x_top": ctx.lr * res.value}


class HessianTrace(ProbeFamily):
    """Hutchinson's Tr H with a generator seeded by (probe_seed, step)."""

    flag = "hessian_trace"

    def __call__(self, ctx: StepContext) -> dict[str, float]:
        ps, cfg = self.probes, self.cfg
        g = torch.Generator().manual_seed(cfg.probe_seed * 1_000_003 + ctx.step)
        return {"hessian/trace": P.hessian_trace(ctx.model, ctx.loss_fn, ps.xh, ps.yh, bn_mode=cfg.bn_mode,
                                                 samples=cfg.hutchinson_samples, generator=g)}


register_probe(HessianTop.flag, HessianTop, summaries=[Peak("hessian/top")],
               columns={"hessian/top": "λ_H¹"})
register_probe(HessianTrace.flag, HessianTrace)
