"""probe/loss, probe/acc, probe/delta_loss: every probe round starts here."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from dynamics_core import probes as P
from dynamics_core.hooks import StackedMembers, StepContext
from dynamics_core.measure.base import ProbeFamily


class LossProbe(ProbeFamily):
    """Mean loss (and accuracy) on the probe set; ΔL since the previous round."""

    flag = "loss"

    def __init__(self, cfg, probes):
        super().__init__(cfg, probes)
        self.prev_loss: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"prev_loss": self.prev_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prev_loss = state.get("prev_loss")

    def __call__(self, ctx: StepContext) -> dict[str, float]:
        with P.probe_mode(ctx.model, bn_mode=self.cfg.bn_mode), torch.no_grad():
            return self._record(ctx.loss_fn, ctx.model(self.probes.x).float())

    def batch_key(self) -> tuple | None:
        """Batched over a pack's members unless BatchNorm is to use the probe
        set's batch statistics (`bn_mode: train`; the stack runs in eval mode)."""
        return self._probe_set_key() if self.cfg.bn_mode == "eval" else None

    @staticmethod
    def batched(hooks: Sequence["LossProbe"], stack: StackedMembers) -> list[dict[str, float]]:
        """One forward of the probe set through every member."""
        with torch.no_grad():
            logits = stack.logits(hooks[0].probes.x)
        return [h._record(stack.loss_fn, logits[r]) for r, h in enumerate(hooks)]

    def _record(self, loss_fn, logits: torch.Tensor) -> dict[str, float]:
        ps = self.probes
        loss = float(loss_fn(logits, ps.y))
        out = {"probe/loss": loss}
        if ps.classification:
            out["probe/acc"] = float((logits.argmax(1) == ps.y).float().mean())
        if self.prev_loss is not None:
            out["probe/delta_loss"] = loss - self.prev_loss
        self.prev_loss = loss
        return out
