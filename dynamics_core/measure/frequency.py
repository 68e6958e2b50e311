"""freq/delta_k{i}: Δ_F at the i-th tracked peak of the label spectrum;
freq/k{i}: that peak's frequency (fixed per trial, logged each round);
freq/bin: the grid's bin 1/L, so that the analysis can check how many bins
apart the tracked peaks are (`probes.frequency_min_sep` asks the probe for at
least that many: the choice of peaks has to be made here, where the whole
label spectrum is, not from the few Δ_F series the probe logs);
freq/e_low_w{j}, freq/e_high_w{j}: the filter variant at the j-th kernel width.

`probes.frequency_centring: mean`: peaks and Δ_F from labels and outputs each less
its mean over the probe set. Uncentred, a constant c has F[c](k) = c·φ(k),
φ the empirical characteristic function of the projections, which is far
from 0 at low k when they are not evenly spread: on MNIST-1D ‖F[y](k)‖ at
the first bin above 0 is 0.189 uncentred and 0.038 centred, and a network
that outputs only the class priors already has Δ_F ≈ 0.2 there at step 0.
Centred, Δ_F(k) at step 0 is ≈ 1 at every k, and a relative threshold
compares like with like. The filter variant is unchanged by it.

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
        self.freqs = P.label_peaks(self._centre(probes.label_repr(probes.y)), self.z,
                                  num=cfg.frequencies, min_sep=cfg.frequency_min_sep)
        self.bin = P.grid_step(self.z)
        self.widths = np.asarray(cfg.frequency_widths, dtype=np.float64) * nearest_neighbour_scale(probes.x)

    def _centre(self, values: torch.Tensor) -> torch.Tensor | np.ndarray:
        """`values` (label_repr or outputs) less their mean over the probe set when
        `frequency_centring` is "mean"; else as they are."""
        if self.cfg.frequency_centring == "none":
            return values
        v = values.detach().cpu().double().numpy().reshape(len(values), -1)
        return v - v.mean(axis=0)

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
        errs = P.frequency_errors(self._centre(outputs), self._centre(labels), self.z, self.freqs)
        out = {f"freq/delta_k{i}": float(e) for i, e in enumerate(errs)}
        out.update({f"freq/k{i}": float(k) for i, k in enumerate(self.freqs)})
        out["freq/bin"] = self.bin
        if len(self.widths):
            lh = P.low_high_errors(outputs, labels, None, self.widths, filters=self.filters)
            for j, (lo, hi) in enumerate(zip(lh["e_low"], lh["e_high"])):
                out[f"freq/e_low_w{j}"], out[f"freq/e_high_w{j}"] = float(lo), float(hi)
        return out


register_probe(Frequency.flag, Frequency)
