"""Which trial configs can train as one pack (`dynamics_core.packed`), without torch.

`MAY_DIFFER` names the fields in which a pack's members may differ; every
other field must match, and `pack_compatible` names the first that keeps
configs apart or that packs do not support. A spec is checked with these
before anything trains, so checking it needs no torch.
"""
from __future__ import annotations

from typing import Sequence

from dynamics_core.config import TrialConfig

# Fields in which the members of a pack may differ; every other field must match.
MAY_DIFFER = frozenset({"seed", "model.init_seed", "optim.lr", "optim.momentum", "optim.weight_decay",
                        "optim.schedule.lr2", "optim.schedule.momentum2"})


def pack_compatible(cfgs: Sequence[TrialConfig]) -> str | None:
    """None when `cfgs` can train as one pack, else one line naming the field."""
    if not cfgs:
        return "a pack needs at least one trial config"
    first = cfgs[0]
    refusals = {
        "model.dropout": first.model.dropout > 0,
        "data.deficit": first.data.deficit.kind != "none",
        "data.augment": first.data.augment,
        "train.bf16": first.train.bf16,
        "pruning.levels": first.pruning.levels > 0,
    }
    for path, refused in refusals.items():
        if refused:
            return f"{path}: packed trials do not support it (train these trials alone)"
    flat = [{k: v for k, v in c.flat().items() if not k.startswith("probes.")} for c in cfgs]
    for path, value in flat[0].items():
        if path not in MAY_DIFFER and any(f[path] != value for f in flat[1:]):
            return f"{path}: packed trials must share it ({value!r} vs another value)"
    late = any(c.optim.momentum == 0 and c.optim.schedule.momentum2 for c in cfgs)
    if late and any(c.optim.momentum > 0 for c in cfgs):   # its buffer would start before its stage 2
        return ("optim.schedule.momentum2: a member that turns momentum on in stage 2 cannot share "
                "a pack with members that use it from the start")
    return None
