"""stiffness/{train_train,train_val,val_val}/{sign,cos,sign_within,sign_between,cos_within,cos_between},
stiffness/train_train/xi.

Classification only, all from the round's joint Gram (no extra gradients).
Artifacts per probe step (float64 arrays, stored as `.npy`):

- `stiffness_<pair>` (pair train_train, train_val, val_val): shape (2, C, C),
  [class sign matrix, class cos matrix]; C(a, b) is NaN where no pair exists.
- `stiffness_distance`: shape (3, bins), rows [bin centres, mean sign, mean
  cos] of the within-class train–train pairs (ordered, i ≠ j) binned by input
  distance 1 − cos(x₁, x₂): `probes.stiffness_bins` equal-width bins over the
  observed within-class distances (the probe inputs are fixed, so the bins
  and the distances are computed once per trial). An empty bin is NaN.

`stiffness/train_train/xi` is the critical length ξ: where the binned
within-class sign stiffness first crosses `probes.stiffness_xi_level` (0 by
default, the paper's ξ), linearly interpolated between the centres of the
last bin above it and the first at or below it (the first centre when the
first bin is already at or below it). Where it never crosses, ξ
is undefined and the step logs no `xi` (rather than NaN: NaN ≠ NaN, so a
resumed trial's history would no longer equal the uninterrupted one; readers
take the last logged ξ, or none); `stiffness_distance` still shows the curve.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np

from dynamics_core import probes as P
from dynamics_core.hooks import StepContext
from dynamics_core.measure.base import ProbeFamily
from dynamics_core.measure.registry import register_probe
from dynamics_core.probes.stiffness import input_distances, stiffness_by_distance

KEYS = ("sign", "cos", "sign_within", "sign_between", "cos_within", "cos_between")
DISTANCE_ARTIFACT = "stiffness_distance"


class Stiffness(ProbeFamily):
    flag = "stiffness"

    @cached_property
    def distances(self) -> np.ndarray:
        """1 − cos(x₁, x₂) of the fixed train probe inputs, n×n (once per trial)."""
        return input_distances(self.probes.x.detach().cpu())

    def __call__(self, ctx: StepContext) -> dict[str, float]:
        ps = self.probes
        if not ps.classification:
            return {}
        r = ps.at(ctx)
        c = ps.num_classes
        n, joint = len(ps.y), r.joint_gram          # Gram of [train; val]: one product for all pairs
        pairs = {
            "train_train": P.stiffness_from(ps.y, c, gram=joint[:n, :n]),
            "train_val": P.stiffness_from(ps.y, c, gram=joint, other_targets=ps.yv),
            "val_val": P.stiffness_from(ps.yv, c, gram=joint[n:, n:]),
        }
        out = {}
        for pair, s in pairs.items():
            for key in KEYS:
                out[f"stiffness/{pair}/{key}"] = float(s[key])
            ctx.log_artifact(f"stiffness_{pair}",
                             np.stack([s["class_sign"], s["class_cos"]]).astype(np.float64))
        by = stiffness_by_distance(gram=joint[:n, :n], distances=self.distances, targets=ps.y,
                                   bins=self.cfg.stiffness_bins, level=self.cfg.stiffness_xi_level)
        if np.isfinite(by["xi"]):
            out["stiffness/train_train/xi"] = float(by["xi"])
        ctx.log_artifact(DISTANCE_ARTIFACT, np.stack([by["centers"], by["sign"], by["cos"]]))
        return out


register_probe(Stiffness.flag, Stiffness)
