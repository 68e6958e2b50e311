"""freq/delta_k{i}: Δ_F at the i-th tracked peak of the label spectrum;
freq/k{i}: that peak's frequency (fixed per trial, logged each round);
freq/e_low_w{j}, freq/e_high_w{j}: the filter variant at the j-th kernel width.

Filter variant (`probes.low_high_errors`): the probe inputs are smoothed with
a Gaussian kernel in input space of standard deviation
δ_j = `probes.frequency_widths[j]` × s, s the median distance from a probe
input to its nearest other probe input. Nearest-neighbour units because the
useful widths depend on the input dimension: on MNIST-1D (40-d) the kernel
goes from (almost) no smoothing at 0.5·s (median effective neighbours ≈ 9)
to (almost) the mean at 1·s (≈ 196 of 256), while on sine1d (1-d, 201 points)
the label energy in the high part is 0.4 %, 17 % and 45 % at 0.5, 4 and 8·s;
the default (0.5, 1, 2, 4, 8) spans both. A multiple of the spread of the
projections z would be no smoothing at all on MNIST-1D (its std, 2.9, is
below the nearest-neighbour distance, 4.7), making the high part zero.
The kernels depend only on the fixed probe inputs: built once per trial, each
round costs one n×n product per width. An empty `frequency_widths` turns the
filter variant off.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from dynamics_core import probes as P
from dynamics_core.hooks import StepContext
from dynamics_core.measure.base import ProbeFamily
from dynamics_core.measure.registry import register_probe
from dynamics_core.probes.frequency import gaussian_filters, nearest_neighbour_scale


class Frequency(ProbeFamily):
    """Outputs (softmax for classification) against labels along the training
    data's first principal component, at the label spectrum's peaks; and
    their Gaussian-smoothed (low) and remaining (high) parts in input space."""

    flag = "frequency"

    def __init__(self, cfg, probes):
        super().__init__(cfg, probes)
        p1, _ = P.pc1_projection(probes.data.x_train.cpu())
        self.z = probes.x.reshape(len(probes.x), -1).cpu().double().numpy() @ p1
        self.freqs = P.label_peaks(probes.label_repr(probes.y), self.z, num=cfg.frequencies)
        self.widths = np.asarray(cfg.frequency_widths, dtype=np.float64) * nearest_neighbour_scale(probes.x)

    @cached_property
    def filters(self) -> np.ndarray:
        """The smoothing matrices of the fixed probe inputs, one per width (W, n, n)."""
        return gaussian_filters(self.probes.x.detach().cpu(), self.widths)

    def __call__(self, ctx: StepContext) -> dict[str, float]:
        ps = self.probes
        with P.probe_mode(ctx.model, bn_mode=self.cfg.bn_mode), torch.no_grad():
            outputs = ctx.model(ps.x).float()
        if ps.classification:
            outputs = outputs.softmax(1)
        labels = ps.label_repr(ps.y)
        errs = P.frequency_errors(outputs, labels, self.z, self.freqs)
        out = {f"freq/delta_k{i}": float(e) for i, e in enumerate(errs)}
        out.update({f"freq/k{i}": float(k) for i, k in enumerate(self.freqs)})
        if len(self.widths):
            lh = P.low_high_errors(outputs, labels, None, self.widths, filters=self.filters)
            for j, (lo, hi) in enumerate(zip(lh["e_low"], lh["e_high"])):
                out[f"freq/e_low_w{j}"], out[f"freq/e_high_w{j}"] = float(lo), float(hi)
        return out


register_probe(Frequency.flag, Frequency)
