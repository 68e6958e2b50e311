"""Which trial configs can train as one pack (`dynamics_core.packed`), without torch.

`MAY_DIFFER` names the fields in which a pack's members may differ; every
other field must match, and `pack_compatible` names the first that keeps
configs apart or that packs do not support. A spec is checked with these
before anything trains, so checking it needs no torch.

Members may differ in their length (`train.epochs`, `train.max_steps`: a
member that reaches its last step leaves the pack), their schedule, their
deficit and the kind of IMP ablation. The members of an IMP pack
(`pruning.levels` > 0) train their levels in step: they share every
`pruning` field but `ablation` and `ablation_seed`, whether they are paired
with an ablation at all, and their length.
"""
from __future__ import annotations

from typing import Sequence

from dynamics_core.config import TrialConfig

# The schedule fields members may differ in (noise_off_epoch belongs to model.preact_noise).
SCHEDULE = ("kind", "milestones", "factor", "gamma", "stage1_epochs", "lr2", "momentum2", "anneal_epoch",
            "warmup_epochs", "restart_epoch")
# Fields in which the members of a pack may differ; every other field must match.
MAY_DIFFER = frozenset({"seed", "model.init_seed", "optim.lr", "optim.momentum", "optim.weight_decay",
                        *(f"optim.schedule.{f}" for f in SCHEDULE), "train.epochs", "train.max_steps",
                        "data.deficit.kind", "data.deficit.start_epoch", "data.deficit.end_epoch",
                        "pruning.ablation", "pruning.ablation_seed"})
# ... but not in an IMP pack, whose members train their levels in step
LEVEL_SHARED = ("train.epochs", "train.max_steps")


def momentum_from(cfg: TrialConfig) -> int | None:
    """The epoch from which `cfg` trains with momentum (None: never)."""
    o = cfg.optim
    if o.momentum > 0:
        return 0
    if o.schedule.kind == "two_stage" and o.schedule.momentum2:
        return o.schedule.stage1_epochs
    return None


def pack_compatible(cfgs: Sequence[TrialConfig]) -> str | None:
    """None when `cfgs` can train as one pack, else one line naming the field."""
    if not cfgs:
        return "a pack needs at least one trial config"
    first = cfgs[0]
    if first.model.dropout > 0:     # its masks come from the global RNG, which members cannot share
        return "model.dropout: packed trials do not support it (train these trials alone)"
    flat = [{k: v for k, v in c.flat().items() if not k.startswith("probes.")} for c in cfgs]
    for path, value in flat[0].items():
        if path not in MAY_DIFFER and any(f[path] != value for f in flat[1:]):
            return f"{path}: packed trials must share it ({value!r} vs another value)"
    if first.pruning.levels > 0:
        for path in LEVEL_SHARED:
            if any(f[path] != flat[0][path] for f in flat[1:]):
                return f"{path}: the members of an IMP pack (pruning.levels) must share it"
        if len({c.pruning.ablation == "none" for c in cfgs}) > 1:
            return ("pruning.ablation: an IMP pack's members are all paired with an ablation "
                    "or none is (their levels differ)")
    starts = {momentum_from(c) for c in cfgs} - {None}
    if len(starts) > 1:    # one momentum buffer per parameter: it starts when the first member's does
        return ("optim.schedule.momentum2: a member that turns momentum on in stage 2 cannot share "
                "a pack with members that use it from another epoch")
    return None
