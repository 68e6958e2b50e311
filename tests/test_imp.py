"""The IMP level plan (`dynamics_core.imp`) on a tiny MLP: exact kept counts
per level, pruned weights and their momentum exactly zero through training
with momentum and weight decay, every level rewound to the step-k snapshot,
each ablation applied at the rewind point on the unablated chain's masks,
and a trial killed mid-level resumed bitwise equal to the uninterrupted one."""

import numpy as np
import pytest
import torch

from dynamics_core import pruning
from dynamics_core import train as train_module
from dynamics_core.config import PruningConfig, TrialConfig
from dynamics_core.hooks import Schedule, log_spaced_steps
from dynamics_core.imp import IMP, flat_masks, imp_plan, with_plan
from dynamics_core.measure import default_hooks
from dynamics_core.sink import MemorySink
from dynamics_core.train import RunEnv, reproducible
from test_levels import Killed, KillingSink
from test_train import secure

pytestmark = pytest.mark.usefixtures("single_thread")

SPE, TOTAL, REWIND = 4, 8, 2
SPAN = TOTAL + 1


def config(levels: int = 3, ablation: str = "none", rewind: int = REWIND) -> TrialConfig:
    return TrialConfig.model_validate({
        "data": {"train_size": 200, "test_size": 100},
        "model": {"width": 16},
        "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "train": {"epochs": 2, "batch_size": 50, "device": "cpu"},
        "probes": {"hessian": False, "gradcov": False, "stiffness": False, "timeline": True,
                   "probe_size": 16, "val_probe_size": 16, "schedule": {"kind": "log", "points": 4}},
        "pruning": {"levels": levels, "rewind_step": rewind, "ablation": ablation},
    })




def run(cfg, sink, cache, resume=None, env=None):
    plan = imp_plan(cfg)
    env = env or RunEnv(cache_dir=cache, checkpoint_steps=(REWIND,))
    return train_module.run(cfg, sink, env, hooks=with_plan(plan, default_hooks),
                            resume=resume, plan=plan)


def canon(records):
    return sorted((s, k, repr(v)) for s, k, v in reproducible(list(records)))


@pytest.fixture(scope="module")
def full(mnist1d_cache):
    sink = MemorySink()
    result = run(config(), sink, mnist1d_cache)
    assert result.status == "finished" and result.level == 3
    return sink


@pytest.fixture(scope="module")
def ablated(mnist1d_cache):
    out = {}
    for name in pruning.ABLATIONS:
        if name != "none":
            sink = MemorySink()
            assert run(config(2, name), sink, mnist1d_cache).status == "finished"
            out[name] = sink
    return out


# ------------------------------------------------------------------ plan
def test_plan_only_when_levels_are_asked_for():
    assert imp_plan(TrialConfig()) is None
    assert with_plan(None, default_hooks) is default_hooks
    assert imp_plan(config(3)).levels == 4
    assert imp_plan(config(3, "reinit")).levels == 7                # dense + 3 × (unablated, ablated)
    assert TrialConfig().pruning == PruningConfig()
    assert config(3).run_hash() != TrialConfig().run_hash()
    with pytest.raises(ValueError, match="needs levels"):
        PruningConfig(ablation="reinit")


def test_a_rewind_step_beyond_the_level_fails_loudly(mnist1d_cache):
    with pytest.raises(ValueError, match="never reached"):
        run(config(1, rewind=TOTAL + 5), MemorySink(), mnist1d_cache)


def test_kept_counts_are_exact_per_level(full):
    total = sum(m.numel() for m in full.checkpoints[-1][3]["plan"]["masks"].values())
    kept, expected = [v for _, v in full.series("imp/kept")], [float(total)]
    for _ in range(3):
        expected.append(expected[-1] - pruning.prune_count(int(expected[-1]), 0.2))
    assert kept == expected
    sparsity = [v for _, v in full.series("imp/sparsity")]
    assert sparsity == pytest.approx([1 - 0.8 ** L for L in range(4)], abs=2 / total)
    assert [s for s, _ in full.series("imp/sparsity")] == [0, SPAN + REWIND, 2 * SPAN + REWIND,
                                                            3 * SPAN + REWIND]
    for L in range(4):
        assert full.series(f"level/{L}/imp/sparsity") == [full.series("imp/sparsity")[L]]
        assert full.series(f"level/{L}/imp/level") == [(full.series("imp/sparsity")[L][0], float(L))]


def test_mask_artifacts_per_level(full):
    arts = {name: (step, value) for step, name, value in full.artifacts if name.startswith("masks/")}
    assert sorted(arts) == ["masks/layout", *(f"masks/level_{L}" for L in range(4))]
    layout = arts["masks/layout"][1]
    size = sum(int(np.prod(s)) for s in layout["shapes"])
    for L in range(4):
        step, flat = arts[f"masks/level_{L}"]
        assert flat.dtype == np.uint8 and flat.size == size
        assert step == (0 if L == 0 else L * SPAN + REWIND)
        assert int(flat.sum()) == full.series("imp/kept")[L][1]
    final = full.checkpoints[-1][3]["hooks"]["imp"]["masks"]
    assert np.array_equal(flat_masks(final), arts["masks/level_3"][1])


def test_pruned_weights_and_momentum_stay_exactly_zero(full):
    checked = 0
    for step, _, _, state in full.checkpoints:
        masks = state["plan"]["masks"]
        by_name = dict(zip(state["model"], range(len(state["model"]))))
        for name, keep in masks.items():
            assert torch.all(state["model"][name][~keep] == 0), (step, name)
            buf = state["optimizer"]["state"].get(by_name[name], {}).get("momentum_buffer")
            if buf is not None:
                assert torch.all(buf[~keep] == 0), (step, name)
        checked += step // SPAN >= 1
    assert checked >= 6


def test_pruned_weights_are_zero_at_every_step(mnist1d_cache):
    """A probe hook sees the model after every optimizer step (and each level's start)."""
    cfg, seen = config(2), []
    plan = imp_plan(cfg)

    class Watch:
        name, schedule = "watch", Schedule(kind="every", every=1)

        def __call__(self, ctx):
            params = {n: p.detach() for n, p in ctx.model.named_parameters()}
            worst = max(float(params[n][~m].abs().max()) if (~m).any() else 0.0
                        for n, m in plan.masks.items())
            seen.append((ctx.level, worst))

    hooks = [plan, Watch()]
    assert train_module.run(cfg, MemorySink(), RunEnv(cache_dir=mnist1d_cache), hooks=hooks,
                            plan=plan).status == "finished"
    assert len(seen) == (TOTAL + 1) + 2 * (TOTAL + 1 - REWIND)
    assert all(v == 0.0 for level, v in seen if level >= 1)


def test_every_level_rewinds_to_the_step_k_snapshot(full):
    (k_state,) = [st for s, _, _, st in full.checkpoints if s == REWIND]
    snapshot = full.checkpoints[-1][3]["plan"]["snapshot"]
    assert snapshot.keys() == k_state["model"].keys()
    for name in snapshot:                                        # the snapshot is step k of level 0
        assert torch.equal(snapshot[name], k_state["model"][name]), name
    starts = [(s, st) for s, _, r, st in full.checkpoints if r == "level"]
    assert [s for s, _ in starts] == [L * SPAN + REWIND for L in (1, 2, 3)]
    for s, st in starts:                                         # fresh optimizer, survivors at step k
        assert st["optimizer"]["state"] == {} and st["step"] == REWIND
        masks = st["plan"]["masks"]
        for name, value in st["model"].items():
            expected = snapshot[name] * masks[name] if name in masks else snapshot[name]
            assert torch.equal(value, expected), (s, name)


def test_timeline_is_logged_on_log_spaced_steps_of_level_0(full):
    steps = [s for s, _ in full.series("timeline/sign_flips") if s < SPAN]
    assert steps == log_spaced_steps(TOTAL, 4) and [s for s, _ in full.series("probe/acc") if s < SPAN] == steps
    dist = dict(full.series("timeline/dist_init"))
    assert dist[0] == 0.0 < dist[1] < dist[8]


# ------------------------------------------------------------ ablations
@pytest.mark.parametrize("name", [a for a in pruning.ABLATIONS if a != "none"])
def test_each_ablation_acts_on_the_unablated_chains_masks(full, ablated, name):
    sink = ablated[name]
    assert [v for _, v in sink.series("imp/level")] == [0, 1, 1, 2, 2]
    assert [v for _, v in sink.series("imp/ablated")] == [0, 0, 1, 0, 1]
    # the unablated levels are the chain of the plain trial, bit for bit
    for loop_level, imp_level in ((0, 0), (1, 1), (3, 2)):
        assert sink.summary[f"level/{loop_level}/final/val_loss"] == \
            full.summary[f"level/{imp_level}/final/val_loss"]
    starts = {s // SPAN: st for s, _, r, st in sink.checkpoints if r == "level"}
    snapshot = starts[1]["plan"]["snapshot"]
    for ablated_level in (2, 4):
        before, st = starts[ablated_level - 1], starts[ablated_level]
        masks = st["plan"]["masks"]
        assert all(torch.equal(masks[n], before["plan"]["masks"][n]) for n in masks)
        for n, keep in masks.items():
            w = st["model"][n]
            assert torch.all(w[~keep] == 0)
            assert not torch.equal(w[keep], snapshot[n][keep]), (name, n)   # the ablation acted
            if name == "random_magnitudes_kept_signs":
                assert torch.equal(torch.sign(w[keep]), torch.sign(snapshot[n][keep]))
            if name == "kept_magnitudes_random_signs":
                assert torch.equal(w[keep].abs(), snapshot[n][keep].abs())
            if name == "shuffle_layer":
                assert torch.equal(w[keep].sort().values, snapshot[n][keep].sort().values)
        for n, value in st["model"].items():                     # biases keep their rewound values
            if n not in masks:
                assert torch.equal(value, snapshot[n]), n
        if name == "shuffle_network":
            assert torch.equal(torch.cat([st["model"][n][k] for n, k in masks.items()]).sort().values,
                               torch.cat([snapshot[n][k] for n, k in masks.items()]).sort().values)
    final = sink.checkpoints[-1][3]
    for n, keep in final["plan"]["masks"].items():
        assert torch.all(final["model"][n][~keep] == 0)


# --------------------------------------------------------------- resume
@pytest.mark.parametrize("kill_at", [SPAN + 5, 2 * SPAN + REWIND, 3 * SPAN + 6],
                         ids=["mid_level_1", "level_2_start", "mid_level_3"])
def test_killed_mid_level_resumes_bitwise(full, mnist1d_cache, kill_at):
    _resumes_bitwise(config(), full, mnist1d_cache, kill_at)


def test_killed_mid_ablated_level_resumes_bitwise(ablated, mnist1d_cache):
    _resumes_bitwise(config(2, "shuffle_network"), ablated["shuffle_network"], mnist1d_cache,
                     4 * SPAN + 5)


def _resumes_bitwise(cfg, full, cache, kill_at):
    crashed = KillingSink(kill_at)
    with pytest.raises(Killed):
        run(cfg, crashed, cache)
    at, _, _, state = crashed.checkpoints[-1]
    assert at < kill_at
    resumed = MemorySink()
    assert run(cfg, resumed, cache, resume=secure(state)).status == "finished"
    stitched = [m for m in crashed.metrics if m[0] <= at] + resumed.metrics
    assert canon(stitched) == canon(full.metrics)                   # every level's metrics, once
    keyed = [(s, k) for s, k, _ in stitched]
    assert len(keyed) == len(set(keyed))
    arts = [a for a in crashed.artifacts if a[0] <= at] + resumed.artifacts
    assert [(s, n) for s, n, _ in arts] == [(s, n) for s, n, _ in full.artifacts]
    assert all(np.array_equal(np.asarray(a[2]), np.asarray(b[2])) if not isinstance(a[2], dict)
               else a[2] == b[2] for a, b in zip(arts, full.artifacts))
    assert reproducible(resumed.summary) == reproducible(full.summary)
    a, b = full.checkpoints[-1][3], resumed.checkpoints[-1][3]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["plan"]["masks"]:
        assert torch.equal(a["plan"]["masks"][key], b["plan"]["masks"][key]), key

