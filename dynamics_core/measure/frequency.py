"""freq/delta_k{i}: Δ_F at the i-th tracked peak of the label spectrum."""
from __future__ import annotations

import torch

from dynamics_core import probes as P
from dynamics_core.hooks import StepContext
from dynamics_core.measure.base import ProbeFamily
from dynamics_core.measure.registry import register_probe


class Frequency(ProbeFamily):
    """Outputs (softmax for classification) against labels along the training
    data's first principal component, at the label spectrum's peaks."""

    flag = "frequency"

    def __init__(self, cfg, probes):
        super().__init__(cfg, probes)
        p1, _ = P.pc1_projection(probes.data.x_train.cpu())
        self.z = probes.x.reshape(len(probes.x), -1).cpu().double().numpy() @ p1
        self.freqs = P.label_peaks(probes.label_repr(probes.y), self.z, num=cfg.frequencies)

    def __call__(self, ctx: StepContext) -> dict[str, float]:
        ps = self.probes
        with P.probe_mode(ctx.model, bn_mode=self.cfg.bn_mode), torch.no_grad():
            outputs = ctx.model(ps.x).float()
        if ps.classification:
            outputs = outputs.softmax(1)
        errs = P.frequency_errors(outputs, ps.label_repr(ps.y), self.z, self.freqs)
        return {f"freq/delta_k{i}": float(e) for i, e in enumerate(errs)}


register_probe(Frequency.flag, Frequency)
