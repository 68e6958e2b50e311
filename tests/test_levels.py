"""Training hooks and multi-level trials: a mask kept by a training hook, and
a toy 3-level plan (zero a fraction of the weights, rewind to the step-k
weights, retrain) killed mid-level and resumed from its checkpoint, bitwise
equal to the uninterrupted trial with every level's metrics present once."""

import pytest
import torch

from dynamics_core import train as train_module
from dynamics_core.config import TrialConfig
from dynamics_core.hooks import LevelStart, Schedule
from dynamics_core.measure import default_hooks
from dynamics_core.sink import MemorySink
from dynamics_core.train import RunEnv, reproducible
from test_train import secure      # a checkpoint through torch.save / load(weights_only=True)

pytestmark = pytest.mark.usefixtures("single_thread")

CFG = TrialConfig.model_validate({
    "data": {"train_size": 200, "test_size": 100},
    "model": {"width": 16, "dropout": 0.2},
    "optim": {"lr": 0.05, "momentum": 0.9},
    "train": {"epochs": 2, "batch_size": 50, "device": "cpu"},
    "probes": {"hessian": False, "gradcov": False, "stiffness": True, "timeline": True, "snapshots": True,
               "probe_size": 16, "val_probe_size": 16, "schedule": {"kind": "every", "every": 3}},
})
SPE, TOTAL, LEVELS, REWIND = 4, 8, 3, 2



def weights(model) -> list[torch.nn.Parameter]:
    return [p for name, p in model.named_parameters() if name.endswith("weight")]


class PruneRewind:
    """The toy plan: level L zeroes the smallest-magnitude fraction 1 − 0.7^L
    of the weights (global), rewinds to the weights of step REWIND of level 0,
    resets the optimizer and retrains from step REWIND; its training hook
    saves the rewind weights and keeps the mask after every step."""

    name = "prune_rewind"
    changes_training = True
    levels = LEVELS

    def __init__(self):
        self.schedule = Schedule(kind="every", every=1)
        self.rewind: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []

    def state_dict(self):
        return {"rewind": self.rewind, "masks": self.masks}

    def load_state_dict(self, state):
        self.rewind, self.masks = list(state["rewind"]), list(state["masks"])

    def on_level_start(self, level, model, optimizer, start: LevelStart):
        if level == 0:
            return
        ws = weights(model)
        flat = torch.cat([w.detach().abs().reshape(-1) for w in ws])
        cut = flat.kthvalue(max(1, int((1 - 0.7 ** level) * flat.numel()))).values
        self.masks = [(w.detach().abs() > cut).float() for w in ws]
        for p, saved in zip(model.parameters(), self.rewind):
            p.copy_(saved)
        for w, m in zip(ws, self.masks):
            w.mul_(m)
        optimizer.state.clear()
        start.start_step = REWIND
        start.metrics["prune/sparsity"] = float(sum((m == 0).sum() for m in self.masks) / flat.numel())

    def __call__(self, ctx):
        if ctx.level == 0 and ctx.level_step == REWIND:
            self.rewind = [p.detach().clone() for p in ctx.model.parameters()]
        for w, m in zip(weights(ctx.model), self.masks):
            w.mul_(m)


class Killed(Exception):
    pass


class KillingSink(MemorySink):
    """Dies (as a preempted worker would) when asked to log at step `at`."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def log_metrics(self, metrics, step):
        if step >= self.at:
            raise Killed(step)
        super().log_metrics(metrics, step)


def run(sink, cache, resume=None):
    plan = PruneRewind()
    hooks = lambda cfg, data: [plan, *default_hooks(cfg, data)]
    return train_module.run(CFG, sink, RunEnv(cache_dir=cache), hooks=hooks, resume=resume, plan=plan)


def canon(records):
    return sorted((s, k, repr(v)) for s, k, v in reproducible(list(records)))


@pytest.fixture(scope="module")
def full(mnist1d_cache):
    sink = MemorySink()
    result = run(sink, mnist1d_cache)
    assert result.status == "finished" and result.level == LEVELS - 1
    return sink


def test_levels_are_kept_apart_and_each_once(full):
    span = TOTAL + 1
    assert [(s, r) for s, _, r, _ in full.checkpoints] == [
        (4, "epoch"), (8, "epoch"),                                  # level 0: steps 0..8
        (span + REWIND, "level"), (span + 4, "epoch"), (span + 8, "epoch"),
        (2 * span + REWIND, "level"), (2 * span + 4, "epoch"), (2 * span + 8, "epoch")]
    keyed = [(s, k) for s, k, _ in full.metrics]
    assert len(keyed) == len(set(keyed))                             # no (key, step) twice
    assert [(s, v) for s, v in full.series("train/level")] == \
        [(4, 0.0), (8, 0.0), (span + 4, 1.0), (span + 8, 1.0), (2 * span + 4, 2.0), (2 * span + 8, 2.0)]
    for level in range(LEVELS):
        (at, _), = full.series(f"level/{level}/final/val_acc")
        assert at == level * span + TOTAL and at // span == level
        assert full.summary[f"level/{level}/final/val_acc"] == full.series(f"level/{level}/final/val_acc")[0][1]
    assert full.series("final/val_acc") == [(2 * span + TOTAL, full.summary["final/val_acc"])]
    # probes run in every level on the level's own schedule (every 3 steps;
    # the retrained levels start at the rewind step 2)
    assert [s for s, _ in full.series("probe/loss")] == \
        [0, 3, 6, span + 3, span + 6, 2 * span + 3, 2 * span + 6]
    sparsity = [v for _, v in full.series("prune/sparsity")]
    assert len(sparsity) == 2 and 0.25 < sparsity[0] < sparsity[1] < 0.6


def test_the_plan_prunes_and_rewinds(full):
    final = full.checkpoints[-1][3]
    masks = final["hooks"]["prune_rewind"]["masks"]
    names = [n for n in final["model"] if n.endswith("weight")]
    assert len(masks) == len(names)
    for name, m in zip(names, masks):          # pruned weights stay zero through retraining
        assert torch.all(final["model"][name][m == 0] == 0), name
    # level 1 starts from the step-REWIND weights of level 0, masked, with a fresh optimizer
    (start,) = [st for s, _, r, st in full.checkpoints if r == "level" and s == TOTAL + 1 + REWIND]
    assert start["level"] == 1 and start["step"] == REWIND and start["optimizer"]["state"] == {}
    rewind = dict(zip(start["model"], start["hooks"]["prune_rewind"]["rewind"]))
    masks = dict(zip(names, start["hooks"]["prune_rewind"]["masks"]))
    pruned = sum(int((m == 0).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert pruned == pytest.approx(0.3, abs=0.01)
    for name, value in start["model"].items():
        expected = rewind[name] * masks[name] if name in masks else rewind[name]
        assert torch.equal(value, expected), name
    assert not torch.equal(start["model"]["out.weight"], final["model"]["out.weight"])


@pytest.mark.parametrize("kill_at", [TOTAL + 1 + 3, TOTAL + 1 + REWIND, 2 * (TOTAL + 1) + 6],
                         ids=["mid_level_1", "level_1_start", "mid_level_2"])
def test_killed_mid_level_resumes_bitwise(full, mnist1d_cache, kill_at):
    crashed = KillingSink(kill_at)
    with pytest.raises(Killed):
        run(crashed, mnist1d_cache)
    at, _, _, state = crashed.checkpoints[-1]
    assert at < kill_at
    resumed = MemorySink()
    assert run(resumed, mnist1d_cache, resume=secure(state)).status == "finished"
    stitched = [m for m in crashed.metrics if m[0] <= at] + resumed.metrics
    assert canon(stitched) == canon(full.metrics)                   # every level's metrics, once
    keyed = [(s, k) for s, k, _ in stitched]
    assert len(keyed) == len(set(keyed))
    assert repr([a for a in crashed.artifacts if a[0] <= at] + resumed.artifacts) == repr(full.artifacts)
    assert reproducible(resumed.summary) == reproducible(full.summary)
    a, b = full.checkpoints[-1][3], resumed.checkpoints[-1][3]
    assert a.keys() == b.keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert all(torch.equal(x, y) for x, y in zip(a["hooks"]["prune_rewind"]["masks"],
                                                  b["hooks"]["prune_rewind"]["masks"]))
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert [(s, r) for s, _, r, _ in resumed.checkpoints] == [(s, r) for s, _, r, _ in full.checkpoints if s > at]


# ------------------------------------------- the pruning functions, hosted
class IMP:
    """IMP with rewinding built from `dynamics_core.pruning` as a level plan
    and training hook: the shape a pruning trial takes in this loop."""

    name = "imp"
    changes_training = True
    levels = LEVELS

    def __init__(self, rate: float = 0.2):
        from dynamics_core import pruning
        self.P, self.rate = pruning, rate
        self.schedule = Schedule(kind="every", every=1)
        self.masks: dict = {}
        self.snapshot: dict = {}

    def state_dict(self):
        return {"masks": self.P.masks_to_state(self.masks), "snapshot": self.snapshot}

    def load_state_dict(self, state):
        self.masks, self.snapshot = self.P.masks_from_state(state["masks"]), dict(state["snapshot"])

    def on_level_start(self, level, model, optimizer, start):
        if level == 0:
            self.masks = self.P.initial_masks(model)
            return
        self.masks = self.P.global_magnitude_prune(model, self.masks, self.rate)
        self.P.rewind(model, self.masks, self.snapshot)
        optimizer.state.clear()
        start.start_step = REWIND
        start.metrics["prune/sparsity"] = self.P.sparsity(self.masks)

    def __call__(self, ctx):
        if ctx.level == 0 and ctx.level_step == REWIND:
            self.snapshot = self.P.clone_state(ctx.model)
        self.P.MaskEnforcer(ctx.model, self.masks)(ctx.optimizer)


def run_imp(sink, cache, resume=None):
    plan = IMP()
    return train_module.run(CFG, sink, RunEnv(cache_dir=cache), hooks=[plan], resume=resume, plan=plan)


def test_imp_from_the_pruning_functions_runs_and_resumes_bitwise(mnist1d_cache):
    full = MemorySink()
    assert run_imp(full, mnist1d_cache).status == "finished"
    sparsity = [v for _, v in full.series("prune/sparsity")]
    assert sparsity == [pytest.approx(0.2, abs=1e-3), pytest.approx(0.36, abs=1e-3)]
    final = full.checkpoints[-1][3]
    masks = final["hooks"]["imp"]["masks"]
    for name, keep in masks.items():
        assert torch.all(final["model"][name][~keep] == 0), name
    crashed = KillingSink(2 * (TOTAL + 1) + 5)
    with pytest.raises(Killed):
        run_imp(crashed, mnist1d_cache)
    at, _, _, state = crashed.checkpoints[-1]
    resumed = MemorySink()
    run_imp(resumed, mnist1d_cache, resume=secure(state))
    assert canon([m for m in crashed.metrics if m[0] <= at] + resumed.metrics) == canon(full.metrics)
    again = resumed.checkpoints[-1][3]
    assert all(torch.equal(final["model"][k], again["model"][k]) for k in final["model"])
