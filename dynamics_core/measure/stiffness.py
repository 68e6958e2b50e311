"""stiffness/{train_train,train_val,val_val}/{sign,cos,sign_within,sign_between,cos_within,cos_between}.

Classification only. Class matrices go out as artifacts `stiffness_<pair>`.
"""
from __future__ import annotations

import numpy as np

from dynamics_core import probes as P
from dynamics_core.hooks import StepContext
from dynamics_core.measure.base import ProbeFamily
from dynamics_core.measure.registry import register_probe

KEYS = ("sign", "cos", "sign_within", "sign_between", "cos_within", "cos_between")


class Stiffness(ProbeFamily):
    flag = "stiffness"

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
            ctx.log_artifact(f"stiffness_{pair}", {"class_sign": np.asarray(s["class_sign"]).tolist(),
                                                   "class_cos": np.asarray(s["class_cos"]).tolist()})
        return out


register_probe(Stiffness.flag, Stiffness)
