"""Packs for the science specs: members of different lengths and schedules,
with their own deficits, or training IMP levels are each the trial
`train.run` trains alone — bit for bit for the MLP on CPU (every metric,
level and imp metrics, mask artifacts, weights), to float32 rounding for
the 1-D CNN — a member that reaches its last step finishes and leaves while
the others go on, and a pack resumes from a mid-pack checkpoint bit for bit."""
import numpy as np
import pytest
import torch

from dynamics_core.imp import imp_plan, with_plan
from dynamics_core.measure import default_hooks
from dynamics_core.packed import run_packed
from dynamics_core.sink import MemorySink
from dynamics_core.train import RunEnv, reproducible, run
from test_packed import PROBES_OFF, PackMemory, assert_close_run, assert_same_run, trial

pytestmark = pytest.mark.usefixtures("single_thread")

SPE = 7             # ceil(400 / 64) steps per epoch


def solo(cfg, cache):
    """`sweeps.trial.train`'s call: the IMP plan (if any) and the default probes."""
    sink, plan = MemorySink(), imp_plan(cfg)
    res = run(cfg, sink, RunEnv(cache_dir=cache, checkpoint_every_epochs=0),
              hooks=with_plan(plan, default_hooks), plan=plan)
    return res, sink, sink.checkpoints[-1][3]["model"] if sink.checkpoints else {}


def packed(cfgs, cache, tmp_path=None, **env):
    sinks = [MemorySink() for _ in cfgs]
    mem = PackMemory(tmp_path) if tmp_path is not None else None
    out = run_packed(cfgs, sinks, RunEnv(cache_dir=cache, **env), pack_sink=mem)
    return out, sinks, mem


def assert_same_artifacts(a: MemorySink, b: MemorySink, bitwise=True):
    """Equal; masks from weights equal to float32 rounding: but for a rare tie."""
    assert [(s, n) for s, n, _ in a.artifacts] == [(s, n) for s, n, _ in b.artifacts]
    for (_, _, x), (_, _, y) in zip(a.artifacts, b.artifacts):
        if not isinstance(x, np.ndarray):
            assert x == y
        else:
            assert np.array_equal(x, y) if bitwise else (x != y).mean() <= 1e-3


def assert_solo(cfgs, out, sinks, cache, bitwise=True, tol=1e-5):
    for k, cfg in enumerate(cfgs):
        res, sink, weights = solo(cfg, cache)
        if bitwise:
            assert_same_run(sinks[k], sink)
        else:
            assert_close_run(sinks[k], sink, rel=tol)
        assert_same_artifacts(sinks[k], sink, bitwise)
        r = out.results[k]
        assert (r.status, r.step, r.epoch, r.level) == (res.status, res.step, res.epoch, res.level)
        member = out.pack.member_module(k).state_dict()
        for n, w in weights.items():
            if bitwise:
                assert torch.equal(member[n], w), n
            else:       # vmapped (grouped) convolutions round differently
                assert (member[n] - w).abs().max() <= tol * w.abs().max(), n


def assert_resumes(cfgs, cache, tmp_path, stop_after_step):
    """Stopped at `stop_after_step`, resumed from the last checkpoint before:
    every member's records are those of the uninterrupted pack."""
    (tmp_path / "whole").mkdir(), (tmp_path / "cut").mkdir()
    whole, full, _ = packed(cfgs, cache, tmp_path / "whole")
    _, before, mem = packed(cfgs, cache, tmp_path / "cut", stop_after_step=stop_after_step)
    step, _, _, state = mem.checkpoints[-1]
    after = [MemorySink() for _ in cfgs]
    resumed = run_packed(cfgs, after, RunEnv(cache_dir=cache), resume=state)
    for k in range(len(cfgs)):
        kept = [m for m in before[k].metrics if m[0] <= step]
        assert reproducible(kept + after[k].metrics) == reproducible(full[k].metrics)
        kept = [a for a in before[k].artifacts if a[0] <= step]
        assert [(s, n) for s, n, _ in kept + after[k].artifacts] == [(s, n) for s, n, _ in full[k].artifacts]
        end = after[k] if after[k].status else before[k]      # or it ended before the checkpoint
        assert (end.status, reproducible(end.summary)) == (full[k].status, reproducible(full[k].summary))
        a, b = resumed.pack.member_module(k).state_dict(), whole.pack.member_module(k).state_dict()
        assert all(torch.equal(a[n], b[n]) for n in a)
    return state


# ------------------------------------------------------- lengths, schedules
LENGTHS = [dict(seed=0, lr=0.05, train={"epochs": 2, "log_every": 3}),
           dict(seed=1, lr=0.1, momentum=0.9, train={"epochs": 4, "log_every": 3},
                optim={"schedule": {"kind": "step", "milestones": [0.5], "factor": 0.5}}),
           dict(seed=2, lr=0.05, momentum=0.5, train={"epochs": 3, "max_steps": 11, "log_every": 3},
                optim={"schedule": {"kind": "exponential", "gamma": 0.9, "warmup_epochs": 0.5}}),
           dict(seed=3, lr=0.05, train={"epochs": 4, "log_every": 3},
                optim={"schedule": {"kind": "two_stage", "stage1_epochs": 1, "lr2": 0.02, "anneal_epoch": 3}})]


def test_members_of_their_own_length_and_schedule_finish_as_alone_and_leave(mnist1d_cache, tmp_path):
    cfgs = [trial(**m) for m in LENGTHS]
    out, sinks, mem = packed(cfgs, mnist1d_cache, tmp_path)
    assert_solo(cfgs, out, sinks, mnist1d_cache)
    assert [r.step for r in out.results] == [2 * SPE, 4 * SPE, 11, 4 * SPE]
    # every member's end and boundary epochs (stage 1, the anneal) are resumable points
    assert [(s, len(state["alive"])) for s, _, _, state in mem.checkpoints] == \
        [(7, 4), (11, 3), (14, 2), (21, 2), (28, 0)]
    assert mem.epochs == [(1, 7), (2, 14), (3, 21), (4, 28)]      # the pack's epochs, members leaving


def test_a_pack_of_lengths_resumes_after_a_member_left(mnist1d_cache, tmp_path):
    state = assert_resumes([trial(**m) for m in LENGTHS], mnist1d_cache, tmp_path, stop_after_step=17)
    assert state["step"] == 14 and state["alive"] == [1, 3]


# ----------------------------------------------------------------- deficits
def deficit(kind, start, end):
    return {"deficit": {"kind": kind, "start_epoch": start, "end_epoch": end}}


DEFICITS = [dict(seed=0, data=deficit("blur", 0, 2), train={"epochs": 3}),
            dict(seed=1, lr=0.1, momentum=0.9, data=deficit("vflip", 1, 3), train={"epochs": 4}),
            dict(seed=2, data=deficit("label_permutation", 0, 1), train={"epochs": 3}),
            dict(seed=3, momentum=0.9, weight_decay=1e-3, data=deficit("noise", 1, 2), train={"epochs": 2}),
            dict(seed=4, train={"epochs": 4}, optim={"schedule": {"kind": "exponential", "gamma": 0.97}})]


def test_members_with_their_own_deficits_are_solo_runs(mnist1d_cache):
    """With the critical-periods probe: Tr F at every epoch end."""
    fisher = {**PROBES_OFF, "fisher": True, "fisher_samples": 2, "probe_size": 32, "schedule": {"kind": "epoch"}}
    cfgs = [trial(probes=fisher, **m) for m in DEFICITS]
    out, sinks, _ = packed(cfgs, mnist1d_cache)
    assert_solo(cfgs, out, sinks, mnist1d_cache)
    assert len(sinks[1].series("fisher/trace")) == 4 + 1


def test_cnn1d_members_with_deficits_match_solo_runs_to_float32_rounding(mnist1d_cache):
    """The critical-periods arms in small: blur windows, a control, two lengths."""
    cfgs = [trial(arch="cnn1d", momentum=0.9, weight_decay=1e-3, optim={"schedule": {"kind": "exponential"}}, **m)
            for m in (dict(seed=0, data=deficit("blur", 0, 2), train={"epochs": 3}),
                      dict(seed=1, data=deficit("blur", 1, 3), train={"epochs": 4}),
                      dict(seed=2, data=deficit("noise", 0, 2), train={"epochs": 4}),
                      dict(seed=3, train={"epochs": 3}))]
    out, sinks, _ = packed(cfgs, mnist1d_cache)
    assert_solo(cfgs, out, sinks, mnist1d_cache, bitwise=False)


def test_cnn1d_members_with_a_restarted_decay_match_solo_runs(mnist1d_cache):
    """The critical-periods schedule arms in one pack: the exponential decay, a
    constant rate, and the decay restarted where each member's deficit ends."""
    exp = {"kind": "exponential", "gamma": 0.5}
    cfgs = [trial(arch="cnn1d", momentum=0.9, weight_decay=1e-3, **m)
            for m in (dict(seed=0, data=deficit("blur", 0, 2), train={"epochs": 4},
                           optim={"schedule": {**exp, "restart_epoch": 2}}),
                      dict(seed=0, data=deficit("blur", 1, 2), train={"epochs": 3},
                           optim={"schedule": {**exp, "restart_epoch": 2}}),
                      dict(seed=0, data=deficit("blur", 0, 2), train={"epochs": 4},
                           optim={"schedule": exp}),
                      dict(seed=0, data=deficit("blur", 0, 2), train={"epochs": 4}))]
    out, sinks, _ = packed(cfgs, mnist1d_cache)
    assert_solo(cfgs, out, sinks, mnist1d_cache, bitwise=False)
    # each member's own rate at each epoch end: restarted at 2, decaying, constant
    assert [[v for _, v in s.series("lr")] for s in sinks] == [
        pytest.approx([0.05, 0.025, 0.05, 0.025]), pytest.approx([0.05, 0.025, 0.05]),
        pytest.approx([0.05, 0.025, 0.0125, 0.00625]), pytest.approx([0.05] * 4)]


@pytest.mark.parametrize("stop_after_step, alive", [(12, [0, 1, 2, 3, 4]), (17, [0, 1, 2, 4])])
def test_a_deficit_pack_resumes_bit_for_bit(mnist1d_cache, tmp_path, stop_after_step, alive):
    """From inside the noise window (its draws seeded by the step), and after a member left."""
    state = assert_resumes([trial(**m) for m in DEFICITS], mnist1d_cache, tmp_path, stop_after_step)
    assert state["alive"] == alive


# --------------------------------------------------------------- IMP levels
TIMELINE = {**PROBES_OFF, "timeline": True, "probe_size": 16, "val_probe_size": 16,
            "schedule": {"kind": "log", "points": 4}}


def imp(seed, lr, ablation="none", momentum=0.9, arch="mlp"):
    return trial(seed=seed, lr=lr, momentum=momentum, weight_decay=5e-4, arch=arch, probes=TIMELINE,
                 train={"epochs": 2}, pruning={"levels": 2, "rewind_step": 3, "ablation": ablation})


def test_imp_members_are_solo_runs_level_by_level(mnist1d_cache, tmp_path):
    cfgs = [imp(0, 0.05), imp(1, 0.1), imp(2, 0.02, momentum=0.0), imp(3, 50.0)]
    out, sinks, mem = packed(cfgs, mnist1d_cache, tmp_path)
    assert_solo(cfgs, out, sinks, mnist1d_cache)
    assert [r.status for r in out.results] == ["finished"] * 3 + ["diverged"]
    assert any(k == "level/2/imp/sparsity" for _, k, _ in sinks[0].metrics)
    assert any(k == "level/1/final/val_acc" for k in sinks[0].summary)
    assert [(s, r) for s, _, r, _ in mem.checkpoints] == [
        (7, "epoch"), (14, "epoch"), (15 + 3, "level"), (15 + 7, "epoch"), (15 + 14, "epoch"),
        (30 + 3, "level"), (30 + 7, "epoch"), (30 + 14, "epoch")]


def test_paired_ablation_members_are_solo_runs(mnist1d_cache):
    cfgs = [imp(0, 0.05, "shuffle_layer"), imp(1, 0.1, "reinit"), imp(2, 0.05, "kept_magnitudes_random_signs")]
    out, sinks, _ = packed(cfgs, mnist1d_cache)
    assert_solo(cfgs, out, sinks, mnist1d_cache)
    assert out.results[0].level == 4


def test_cnn1d_imp_members_match_solo_runs_to_float32_rounding(mnist1d_cache):
    cfgs = [imp(0, 0.05, arch="cnn1d"), imp(1, 0.1, arch="cnn1d")]
    out, sinks, _ = packed(cfgs, mnist1d_cache)
    assert_solo(cfgs, out, sinks, mnist1d_cache, bitwise=False)


@pytest.mark.parametrize("stop_after_step", [15 + 5, 2 * 15 + 3])   # mid level 1; as level 2 started
def test_an_imp_pack_resumes_bit_for_bit(mnist1d_cache, tmp_path, stop_after_step):
    cfgs = [imp(0, 0.05, "shuffle_network"), imp(1, 0.1, "random_magnitudes_kept_signs")]
    state = assert_resumes(cfgs, mnist1d_cache, tmp_path, stop_after_step)
    assert state["plans"][0]["snapshot"] and state["level"] >= 1


# ------------------------------------------- the science kinds with the others
def test_imp_members_with_adam_batchnorm_or_noise_are_solo_runs(mnist1d_cache, tmp_path):
    """A level starts Adam afresh (moments and step count) and the masks zero
    its moments, as `MaskEnforcer` zeroes every state tensor shaped like a
    weight; BatchNorm's running statistics rewind with the snapshot."""
    adam = [trial(seed=s, lr=lr, weight_decay=5e-4, optim={"name": "adam"}, probes=TIMELINE,
                  train={"epochs": 2}, pruning={"levels": 2, "rewind_step": 3}) for s, lr in ((0, 1e-3), (1, 3e-3))]
    out, sinks, _ = packed(adam, mnist1d_cache)
    assert_solo(adam, out, sinks, mnist1d_cache)
    state = assert_resumes(adam, mnist1d_cache, tmp_path, stop_after_step=15 + 5)
    assert state["level"] == 1 and state["optimizer"]["steps"] == [0, 0]   # right after level 1 started: fresh
    kinds = [imp(0, 0.05), imp(1, 0.1)]
    for over in ({"batchnorm": True}, {"preact_noise": 0.1}):
        cfgs = [c.model_copy(update={"model": c.model.model_copy(update=over)}) for c in kinds]
        out, sinks, _ = packed(cfgs, mnist1d_cache)
        assert_solo(cfgs, out, sinks, mnist1d_cache)


def test_bf16_members_on_cpu_are_their_solo_runs(mnist1d_cache):
    """bf16 autocast is CUDA-only in both loops: on CPU a bf16 pack is a float32 pack."""
    cfgs = [trial(seed=s, lr=lr, train={"epochs": 2, "bf16": True}, data=deficit("blur", 0, 1))
            for s, lr in ((0, 0.05), (1, 0.1))]
    out, sinks, _ = packed(cfgs, mnist1d_cache)
    assert_solo(cfgs, out, sinks, mnist1d_cache)


def images(monkeypatch, shape, n_train=192, n_test=64):
    """A small synthetic image set in place of the data a trial loads (no CIFAR offline)."""
    from dynamics_core import packed as packed_module, train as train_module
    from dynamics_core.data import Dataset

    g = torch.Generator().manual_seed(0)
    data = Dataset(torch.randn(n_train, *shape, generator=g), torch.randint(0, 10, (n_train,), generator=g),
                   torch.randn(n_test, *shape, generator=g), torch.randint(0, 10, (n_test,), generator=g), 10, shape)
    for module in (packed_module, train_module):
        monkeypatch.setattr(module, "load", lambda cfg, device, cache_dir: data)


def test_augmented_image_members_are_their_solo_runs(monkeypatch):
    """Random crops and flips (images only): each member's own, seeded by its seed and the step."""
    images(monkeypatch, (1, 8, 8))
    cfgs = [trial(seed=s, lr=lr, momentum=0.9, train={"epochs": 2}, data={"augment": True, **deficit("vflip", 0, 1)})
            for s, lr in ((0, 0.05), (1, 0.1), (2, 0.02))]
    out, sinks, _ = packed(cfgs, "unused")
    assert_solo(cfgs, out, sinks, "unused")


@pytest.mark.parametrize("model, tol", [({"name": "simple_cnn", "width": 8}, 1e-4), ({"name": "allcnn", "width": 8}, 1e-4),
                                        ({"name": "resnet20", "width": 4}, 1e-3)])
def test_the_cluster_specs_image_models_pack(monkeypatch, model, tol):
    """The models of the -cluster specs (CIFAR-10 shaped input, augmented, one
    member with a blur window) match their solo runs to float32 rounding. It
    grows with depth and steps (ResNet-20 at η 0.05: from 1e-7 at step 3 about
    ×10 a step), so the net is small, η small and `tol` is per depth."""
    images(monkeypatch, (3, 32, 32), n_train=96, n_test=32)
    over = dict(momentum=0.9, weight_decay=5e-4, model=model, train={"epochs": 2, "batch_size": 32})
    cfgs = [trial(seed=0, lr=0.005, data={"augment": True, **deficit("blur", 0, 1)}, **over),
            trial(seed=1, lr=0.002, data={"augment": True}, **over)]
    out, sinks, _ = packed(cfgs, "unused")
    for k, cfg in enumerate(cfgs):
        _, sink, weights = solo(cfg, "unused")
        ours, theirs = reproducible(sinks[k].metrics), reproducible(sink.metrics)
        assert [(s, key) for s, key, _ in ours] == [(s, key) for s, key, _ in theirs]
        for (_, key, a), (_, _, b) in zip(ours, theirs):
            # an accuracy may differ by an example whose logits nearly tie
            assert abs(a - b) <= (1 / 32 if key.endswith("acc") else tol * max(1.0, abs(b))), key
        # BatchNorm biases stay near 0 (sums that nearly cancel): measured against the largest weight
        member = out.pack.member_module(k).state_dict()
        scale = max(float(w.abs().max()) for w in weights.values() if w.is_floating_point())
        assert all((member[n] - w).abs().max() <= tol * scale for n, w in weights.items())
