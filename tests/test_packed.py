"""Packed trials: each member trains as it would alone with `train.run` —
bit for bit for the MLP classifier on CPU, to float32 rounding for the 1-D
CNN and for regression (MSE) — gets
its own seed, learning rate and batch order wherever it sits in the pack,
diverges at its own step while the others go on, runs its own probes, logs
its own wall-clock seconds, resumes from the pack's checkpoint bit for bit,
and `pack_compatible` names the field that keeps configs apart. Solo weights
are read from the final checkpoint `train.run` hands its sink."""
import pytest
import torch

from dynamics_core.measure import default_hooks
from dynamics_core.config import TrialConfig
from dynamics_core.packed import pack_compatible, run_packed
from dynamics_core.sink import MemorySink
from dynamics_core.train import RunEnv, reproducible, run

pytestmark = pytest.mark.usefixtures("single_thread")

PROBES_OFF = {k: False for k in ("hessian", "hessian_trace", "gradcov", "stiffness",
                                 "fisher", "frequency", "timeline")}
TOTAL = 21          # 3 epochs of ceil(400 / 64) = 7 steps, the last batch holds 16


def trial(seed=0, lr=0.05, momentum=0.0, weight_decay=0.0, arch="mlp", probes=None, **over) -> TrialConfig:
    tree = {
        "data": {"train_size": 400, "test_size": 200},
        "model": {"name": arch, "width": 16},
        "optim": {"lr": lr, "momentum": momentum, "weight_decay": weight_decay},
        "train": {"epochs": 3, "batch_size": 64, "device": "cpu"},
        "probes": probes or PROBES_OFF,
        "seed": seed,
    }
    for k, v in over.items():
        tree[k] = {**tree.get(k, {}), **v}
    return TrialConfig.model_validate(tree)


MEMBERS = [dict(seed=0, lr=0.05), dict(seed=1, lr=0.1, momentum=0.9),
           dict(seed=2, lr=0.02, momentum=0.5, weight_decay=1e-3)]


def solo(cfg, cache):
    sink = MemorySink()
    res = run(cfg, sink, RunEnv(cache_dir=cache, checkpoint_every_epochs=0), hooks=default_hooks)
    weights = sink.checkpoints[-1][3]["model"] if sink.checkpoints else None
    return res, sink, weights


def packed(cfgs, cache):
    sinks = [MemorySink() for _ in cfgs]
    out = run_packed(cfgs, sinks, RunEnv(cache_dir=cache))
    return out, sinks


def assert_same_run(a: MemorySink, b: MemorySink):
    """Equal but for wall-clock seconds (a pack does not split its time per member)."""
    assert reproducible(a.metrics) == reproducible(b.metrics)
    assert (a.status, reproducible(a.summary), a.epochs) == (b.status, reproducible(b.summary), b.epochs)


def assert_close_run(a: MemorySink, b: MemorySink, rel=1e-6):
    am, bm = reproducible(a.metrics), reproducible(b.metrics)
    assert [(s, k) for s, k, _ in am] == [(s, k) for s, k, _ in bm]
    for (s, k, x), (_, _, y) in zip(am, bm):
        assert abs(x - y) <= rel * max(1.0, abs(y)), (s, k, x, y)
    assert (a.status, a.epochs) == (b.status, b.epochs)


# ---------------------------------------------------------------- equality
def test_mlp_members_are_bitwise_solo_runs(mnist1d_cache):
    cfgs = [trial(**m) for m in MEMBERS]
    out, sinks = packed(cfgs, mnist1d_cache)
    for k, cfg in enumerate(cfgs):
        res, sink, weights = solo(cfg, mnist1d_cache)
        assert_same_run(sinks[k], sink)
        assert (out.results[k].status, out.results[k].step, out.results[k].epoch) == (res.status, res.step, res.epoch)
        member = out.pack.member_module(k).state_dict()
        assert member.keys() == weights.keys()
        assert all(torch.equal(member[n], weights[n]) for n in weights)


def test_cnn1d_members_match_solo_runs_to_float32_rounding(mnist1d_cache):
    cfgs = [trial(arch="cnn1d", **m) for m in MEMBERS]
    out, sinks = packed(cfgs, mnist1d_cache)
    for k, cfg in enumerate(cfgs):
        _, sink, weights = solo(cfg, mnist1d_cache)
        assert_close_run(sinks[k], sink)
        member = out.pack.member_module(k).state_dict()
        for n, w in weights.items():   # vmapped (grouped) convolutions round differently
            assert (member[n] - w).abs().max() <= 1e-5 * w.abs().max(), n


@pytest.mark.parametrize("dataset", ["mnist1d", "sine1d"])
def test_batch_logging_max_steps_and_schedules_match_solo(mnist1d_cache, dataset):
    over = dict(data={"dataset": dataset, "train_size": 200},
                train={"log_every": 2, "max_steps": 11},
                optim={"schedule": {"kind": "step", "warmup_epochs": 0.5}})
    cfgs = [trial(seed=0, lr=0.01, **over), trial(seed=1, lr=0.05, momentum=0.9, **over)]
    out, sinks = packed(cfgs, mnist1d_cache)
    for k, cfg in enumerate(cfgs):
        res, sink, _ = solo(cfg, mnist1d_cache)
        assert any(key == "train/batch_loss" for _, key, _ in sink.metrics)
        if dataset == "mnist1d":
            assert_same_run(sinks[k], sink)
        else:   # the vmapped MSE gradient rounds differently from the solo kernel
            assert_close_run(sinks[k], sink)
        assert (out.results[k].step, out.results[k].epoch) == (res.step, res.epoch) == (11, 3)


def test_each_member_is_its_own_trial_wherever_it_sits(mnist1d_cache):
    cfgs = [trial(**m) for m in MEMBERS]
    _, sinks = packed(cfgs, mnist1d_cache)
    _, swapped = packed(cfgs[::-1], mnist1d_cache)
    for a, b in zip(sinks, swapped[::-1]):
        assert_same_run(a, b)
    # different seeds and learning rates really give different trials
    assert sinks[0].summary["final/train_loss"] != sinks[1].summary["final/train_loss"]
    assert [v for _, v in sinks[1].series("lr")] == [0.1] * 3
    _, one = packed([cfgs[1]], mnist1d_cache)
    assert_same_run(one[0], sinks[1])


# --------------------------------------------------------------- divergence
def test_a_diverging_member_stops_at_its_step_and_the_others_finish_as_alone(mnist1d_cache):
    cfgs = [trial(seed=0, lr=0.05), trial(seed=3, lr=50.0), trial(seed=1, lr=0.1, momentum=0.9)]
    out, sinks = packed(cfgs, mnist1d_cache)
    res, sink, _ = solo(cfgs[1], mnist1d_cache)
    assert res.status == out.results[1].status == sinks[1].status == "diverged"
    assert out.results[1].step == res.step < TOTAL
    assert_same_run(sinks[1], sink)
    for k in (0, 2):
        _, alone, _ = solo(cfgs[k], mnist1d_cache)
        assert_same_run(sinks[k], alone)
        assert out.results[k].status == "finished"
    assert set(out.pack.member_module(1).state_dict()) == set(out.pack.member_module(0).state_dict())


def test_a_pack_whose_every_member_diverges_ends_with_their_records(mnist1d_cache):
    cfgs = [trial(seed=3, lr=50.0)]
    out, sinks = packed(cfgs, mnist1d_cache)
    _, sink, _ = solo(cfgs[0], mnist1d_cache)
    assert out.results[0].status == "diverged"
    assert_same_run(sinks[0], sink)


# ------------------------------------------------------------------- probes
def test_members_run_their_own_probes_as_solo_runs_do(mnist1d_cache):
    probes = {**PROBES_OFF, "hessian": True, "timeline": True, "probe_size": 32,
              "val_probe_size": 16, "schedule": {"kind": "log", "points": 3}}
    cfgs = [trial(seed=0, lr=0.05, probes=probes), trial(seed=1, lr=0.1, probes=probes)]
    _, sinks = packed(cfgs, mnist1d_cache)
    for k, cfg in enumerate(cfgs):
        _, sink, _ = solo(cfg, mnist1d_cache)
        assert any(key == "hessian/top" for _, key, _ in sink.metrics)
        assert_same_run(sinks[k], sink)


@pytest.mark.parametrize("arch, over", [("mlp", {}), ("cnn1d", {"model": {"batchnorm": True}})])
def test_loss_and_timeline_probes_run_batched_over_the_members_due(mnist1d_cache, monkeypatch, arch, over):
    """One call per family and step over the members whose round is due (the
    shorter member has its own steps), no unstacked copy of a member, and each
    member's numbers its solo run's: bit for bit for the MLP, to float32
    rounding for the 1-D CNN with BatchNorm (its eval-mode gradient)."""
    from dynamics_core.hooks import log_spaced_steps
    from dynamics_core.measure.loss import LossProbe
    from dynamics_core.measure.timeline import Timeline
    from dynamics_core.packed import Pack

    probes = {**PROBES_OFF, "timeline": True, "probe_size": 32, "val_probe_size": 16,
              "schedule": {"kind": "log", "points": 3}}
    cfgs = [trial(seed=0, lr=0.05, arch=arch, probes=probes, **over),
            trial(seed=1, lr=0.1, arch=arch, probes=probes, train={"epochs": 2}, **over),
            trial(seed=2, lr=0.02, momentum=0.9, arch=arch, probes=probes, **over)]
    calls, copies = [], []
    for family in (LossProbe, Timeline):
        def spy(hooks, stack, batched=family.batched, name=family.__name__):
            calls.append((name, len(hooks)))
            return batched(hooks, stack)
        monkeypatch.setattr(family, "batched", staticmethod(spy))
    member_module = Pack.member_module
    monkeypatch.setattr(Pack, "member_module", lambda pack, i: copies.append(i) or member_module(pack, i))
    out, sinks = packed(cfgs, mnist1d_cache)
    assert [r.status for r in out.results] == ["finished"] * 3 and not copies
    due = [set(log_spaced_steps(t, 3)) for t in (TOTAL, 14, TOTAL)]
    assert calls == [(name, sum(s in d for d in due)) for s in sorted(set.union(*due))
                     for name in ("LossProbe", "Timeline")]
    for k, cfg in enumerate(cfgs):
        _, sink, _ = solo(cfg, mnist1d_cache)
        assert any(key == "timeline/grad_norm" for _, key, _ in sink.metrics)
        (assert_same_run if arch == "mlp" else assert_close_run)(sinks[k], sink)


# ----------------------------------------------------------- compatibility
@pytest.mark.parametrize("other, field", [
    (trial(seed=1, train={"batch_size": 32}), "train.batch_size"),
    (trial(seed=1, model={"width": 32}), "model.width"),
    (trial(seed=1, data={"data_seed": 1}), "data.data_seed"),
    (trial(seed=1, optim={"nesterov": True}, momentum=0.9), "optim.nesterov"),
    (trial(seed=1, data={"patch": {"fraction": 0.5}}), "data.patch.fraction"),
])
def test_pack_compatible_names_the_field_that_differs(other, field):
    why = pack_compatible([trial(), other])
    assert why is not None and why.startswith(field + ":")


@pytest.mark.parametrize("over, field", [
    ({"model": {"dropout": 0.1}}, "model.dropout"),
])
def test_pack_compatible_refuses_what_packs_do_not_support(over, field):
    why = pack_compatible([trial(**over), trial(seed=1, **over)])
    assert why is not None and why.startswith(field + ":")


IMP = {"levels": 1, "rewind_step": 2}


@pytest.mark.parametrize("other, field", [
    (trial(seed=1, pruning={**IMP, "rewind_step": 3}), "pruning.rewind_step"),
    (trial(seed=1, pruning={**IMP, "levels": 2}), "pruning.levels"),
    (trial(seed=1, pruning={**IMP, "rate": 0.5}), "pruning.rate"),
    (trial(seed=1, pruning={**IMP, "exclude": ["fc.weight"]}), "pruning.exclude"),
    (trial(seed=1, pruning=IMP, train={"epochs": 4}), "train.epochs"),
    (trial(seed=1, pruning=IMP, train={"max_steps": 11}), "train.max_steps"),
    (trial(seed=1, pruning={**IMP, "ablation": "shuffle_layer"}), "pruning.ablation"),
])
def test_an_imp_pack_trains_its_levels_in_step(other, field):
    why = pack_compatible([trial(pruning=IMP), other])
    assert why is not None and why.startswith(field + ":")


def test_pack_compatible_accepts_seed_lr_momentum_weight_decay_and_probes():
    cfgs = [trial(**m) for m in MEMBERS] + [trial(seed=9, probes={**PROBES_OFF, "hessian": True})]
    assert pack_compatible(cfgs) is None
    late = trial(seed=5, optim={"schedule": {"kind": "two_stage", "stage1_epochs": 1, "momentum2": 0.9}})
    early = trial(seed=6, momentum=0.9, optim={"schedule": {"kind": "two_stage", "stage1_epochs": 1}})
    later = trial(seed=7, optim={"schedule": {"kind": "two_stage", "stage1_epochs": 2, "momentum2": 0.9}})
    assert pack_compatible([late, early]).startswith("optim.schedule.momentum2:")
    assert pack_compatible([late, later]).startswith("optim.schedule.momentum2:")
    assert pack_compatible([late, trial(seed=8)]) is None


def test_pack_compatible_accepts_lengths_schedules_deficits_and_ablations():
    blur = {"deficit": {"kind": "blur", "start_epoch": 0, "end_epoch": 2}}
    assert pack_compatible([trial(), trial(seed=1, train={"epochs": 5, "max_steps": 30}),
                            trial(seed=2, optim={"schedule": {"kind": "step", "milestones": [0.3]}}),
                            trial(seed=3, data=blur), trial(seed=4, momentum=0.9, data={"deficit": {
                                "kind": "noise", "start_epoch": 1, "end_epoch": 3}})]) is None
    paired = {**IMP, "ablation": "shuffle_layer"}
    assert pack_compatible([trial(pruning=paired), trial(seed=1, lr=0.1, pruning={
        **paired, "ablation": "reinit", "ablation_seed": 3})]) is None


def test_run_packed_refuses_incompatible_configs(mnist1d_cache):
    with pytest.raises(ValueError, match="train.batch_size"):
        packed([trial(), trial(seed=1, train={"batch_size": 32})], mnist1d_cache)


# ------------------------------------------------------ checkpoints, resume
class PackMemory:
    """A PackSink that keeps every checkpoint, saved and loaded as a trial's are."""

    def __init__(self, tmp_path):
        self.tmp_path, self.checkpoints, self.epochs = tmp_path, [], []

    def checkpoint(self, state, step, epoch, reason):
        path = self.tmp_path / f"pack_{step}.pt"
        torch.save(state, path)
        self.checkpoints.append((step, epoch, reason, torch.load(path, weights_only=True)))

    def epoch_end(self, epoch, step):
        self.epochs.append((epoch, step))


def test_a_pack_resumes_from_its_checkpoint_bit_for_bit(mnist1d_cache, tmp_path):
    """Stopped after epoch 1 (a member already diverged, momentum buffers and
    the Lanczos warm start in the state), resumed from that checkpoint: every
    member's records are the uninterrupted ones; the diverged member is not
    reported to again. The last checkpoint is taken after every member
    finished: resuming from it reports nothing and gives the results."""
    probes = {**PROBES_OFF, "hessian": True, "probe_size": 32, "schedule": {"kind": "log", "points": 4}}
    cfgs = [trial(seed=0, lr=0.05, momentum=0.9, probes=probes), trial(seed=3, lr=50.0),
            trial(seed=1, lr=0.1, momentum=0.5, weight_decay=1e-3)]
    whole, whole_sinks, whole_pack = *packed(cfgs, mnist1d_cache), PackMemory(tmp_path)
    full = [MemorySink() for _ in cfgs]
    run_packed(cfgs, full, RunEnv(cache_dir=mnist1d_cache), pack_sink=whole_pack)
    assert [(s, e) for s, e, _, _ in whole_pack.checkpoints] == [(7, 1), (14, 2), (21, 3)]
    assert whole_pack.epochs == [(1, 7), (2, 14), (3, 21)]
    for a, b in zip(full, whole_sinks):       # checkpoints change nothing
        assert_same_run(a, b)
    assert whole.results[1].status == "diverged" and whole.results[1].step < 7

    before, mem = [MemorySink() for _ in cfgs], PackMemory(tmp_path / "a")
    (tmp_path / "a").mkdir()
    stopped = run_packed(cfgs, before, RunEnv(cache_dir=mnist1d_cache, stop_after_step=7), pack_sink=mem)
    assert [r.status for r in stopped.results] == ["stopped", "diverged", "stopped"]
    state = mem.checkpoints[-1][3]
    assert state["step"] == 7 and state["alive"] == [0, 2] and state["hooks"][0]["probes.hessian"]["v0"] is not None
    after = [MemorySink() for _ in cfgs]
    resumed = run_packed(cfgs, after, RunEnv(cache_dir=mnist1d_cache), resume=state)
    assert [(r.status, r.step) for r in resumed.results] == [(r.status, r.step) for r in whole.results]
    assert after[1].metrics == [] and after[1].status is None
    for k in (0, 2):
        assert reproducible(before[k].metrics + after[k].metrics) == reproducible(full[k].metrics)
        assert (after[k].status, reproducible(after[k].summary)) == (full[k].status, reproducible(full[k].summary))
        assert before[k].epochs + after[k].epochs == full[k].epochs
        a, b = resumed.pack.member_module(k).state_dict(), whole.pack.member_module(k).state_dict()
        assert all(torch.equal(a[n], b[n]) for n in a)
    clock = [v for s, key, v in after[0].metrics if key == "time/train_s"]
    assert clock[0] >= state["time"][0][0] > 0           # the clock goes on from the checkpoint

    last = [MemorySink() for _ in cfgs]
    ended = run_packed(cfgs, last, RunEnv(cache_dir=mnist1d_cache), resume=whole_pack.checkpoints[-1][3])
    assert all(s.metrics == [] and s.status is None for s in last)      # every member had finished
    assert [(r.status, r.step, reproducible(r.summary)) for r in ended.results] == \
        [(r.status, r.step, reproducible(r.summary)) for r in whole.results]
    with pytest.raises(ValueError, match="another pack"):
        run_packed(cfgs[::-1], [MemorySink() for _ in cfgs], RunEnv(cache_dir=mnist1d_cache), resume=state)


def test_members_log_their_wall_clock_like_solo_runs(mnist1d_cache):
    cfgs = [trial(**m) for m in MEMBERS]
    _, sinks = packed(cfgs, mnist1d_cache)
    _, alone, _ = solo(cfgs[0], mnist1d_cache)
    keys = lambda s: [(step, k) for step, k, _ in s.metrics if k.startswith("time/")]
    assert keys(sinks[0]) == keys(alone) and len(keys(alone)) == 2 * 3
    assert sinks[0].summary["final/time_train_s"] > 0 and sinks[0].summary["final/time_probe_s"] == 0
