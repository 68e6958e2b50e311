"""The training loop: bitwise resume (epoch and mid-epoch checkpoints, a
simulated crash), probes and hooks never changing training, exact step
counts and probe schedules, divergence as data, hook key collisions."""
import contextlib
import io
import math
import random

import numpy as np
import pytest
import torch

from dynamics_core.config import TrialConfig
from dynamics_core.hooks import Schedule, log_spaced_steps
from dynamics_core import train as train_module
from dynamics_core.sink import MemorySink
from dynamics_core.measure import default_hooks
from dynamics_core.train import RunEnv, reproducible, steps_per_epoch

pytestmark = pytest.mark.usefixtures("single_thread")

PROBES_OFF = {k: False for k in ("hessian", "hessian_trace", "gradcov", "stiffness",
                                 "fisher", "frequency", "timeline")}
BASE = {
    "data": {"train_size": 400, "test_size": 200},
    "model": {"width": 16},
    "optim": {"lr": 0.05},
    "train": {"epochs": 3, "batch_size": 64, "device": "cpu"},
    "probes": {"probe_size": 32, "val_probe_size": 16, "schedule": {"points": 5}},
}
SPE = 7          # ceil(400 / 64): the last batch of an epoch holds 16 examples
TOTAL = 21


def trial(**over) -> TrialConfig:
    tree = {k: dict(v) for k, v in BASE.items()}
    for k, v in over.items():
        tree[k] = {**tree.get(k, {}), **v} if isinstance(v, dict) else v
    return TrialConfig.model_validate(tree)


def env(cache, **kw) -> RunEnv:
    return RunEnv(cache_dir=cache, **kw)


def run(cfg, sink, env, **kw):
    """A trial as the sweeps run it: the probes its config switches on,
    unless the test passes its own hooks."""
    kw.setdefault("hooks", default_hooks)
    return train_module.run(cfg, sink, env, **kw)


def secure(state: dict) -> dict:
    """A checkpoint through torch.save and torch.load(weights_only=True)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ------------------------------------------------------------------ helpers
def assert_same(a, b, path="state"):
    """Bitwise equality of nested checkpoint-like trees."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def final_state(sink: MemorySink) -> dict:
    step, _, _, state = sink.checkpoints[-1]
    return state


def canon(metrics) -> list:
    """Sorted (step, key, repr(value)): exact, and NaN equals NaN; wall-clock times dropped."""
    return sorted((s, k, repr(v)) for s, k, v in reproducible(list(metrics)))


def metrics_after(sink: MemorySink, step: int) -> list:
    return canon(m for m in sink.metrics if m[0] > step)


def checkpoint_at(sink: MemorySink, step: int) -> dict:
    (state,) = [st for s, _, _, st in sink.checkpoints if s == step]
    return state


def assert_resumes_bitwise(cfg, cache, full: MemorySink, at: int, **env_kw):
    """Resume from the checkpoint at step `at`: same end state, and exactly
    the metrics the uninterrupted run logged after `at`, none before."""
    resumed = MemorySink()
    result = run(cfg, resumed, env(cache, **env_kw), resume=secure(checkpoint_at(full, at)))
    assert result.status == "finished" and resumed.status == "finished"
    assert min(s for s, _, _ in resumed.metrics) > at          # never logs a step twice
    assert metrics_after(resumed, at) == metrics_after(full, at)
    assert canon(resumed.metrics) == metrics_after(full, at)
    assert reproducible(resumed.summary) == reproducible(full.summary)
    a, b = reproducible(final_state(full)), reproducible(final_state(resumed))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert_same(a["optimizer"], b["optimizer"], "optimizer")
    assert_same(a["hooks"], b["hooks"], "hooks")
    assert_same(a, b)                                          # rng, epoch stats, all of it
    assert [(s, e, r) for s, e, r, _ in resumed.checkpoints] == \
        [(s, e, r) for s, e, r, _ in full.checkpoints if s > at]
    assert repr([a_ for a_ in full.artifacts if a_[0] > at]) == repr(resumed.artifacts)
    return resumed


# ------------------------------------------------------------ bitwise resume
RESUME_CASES = {
    # momentum SGD, dropout and preact noise (global RNG), label permutation
    # deficit, the default probes (hessian warm start lives in the hook state)
    "mlp_momentum_dropout_noise_labelperm": dict(
        model={"width": 16, "dropout": 0.2, "preact_noise": 0.1},
        optim={"lr": 0.05, "momentum": 0.9},
        data={"deficit": {"kind": "label_permutation", "start_epoch": 1, "end_epoch": 2}}),
    # Adam state, the noise deficit (seeded by the step) across the checkpoints
    "mlp_adam_noise_deficit": dict(
        optim={"name": "adam", "lr": 0.01},
        data={"deficit": {"kind": "noise", "start_epoch": 0, "end_epoch": 2}},
        probes={"hessian": True, "gradcov": False, "stiffness": False, "timeline": True}),
    # BatchNorm running statistics, nesterov momentum, dropout
    "cnn1d_batchnorm": dict(
        model={"name": "cnn1d", "width": 4, "batchnorm": True, "dropout": 0.1},
        optim={"lr": 0.05, "momentum": 0.9, "nesterov": True},
        probes={"hessian": True, "gradcov": True, "stiffness": False, "timeline": True}),
}


@pytest.fixture(scope="module")
def resume_runs(mnist1d_cache):
    """Uninterrupted runs with an extra mid-epoch checkpoint at step 10."""
    out = {}
    for name, over in RESUME_CASES.items():
        cfg = trial(**over)
        sink = MemorySink()
        result = run(cfg, sink, env(mnist1d_cache, checkpoint_steps=(10,)))
        assert result.status == "finished"
        out[name] = (cfg, sink)
    return out


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
@pytest.mark.parametrize("at", [SPE, 10], ids=["epoch_boundary", "mid_epoch"])
def test_resume_is_bitwise(resume_runs, mnist1d_cache, case, at):
    cfg, full = resume_runs[case]
    assert 10 % SPE != 0
    assert [(s, e, r) for s, e, r, _ in full.checkpoints] == \
        [(7, 1, "epoch"), (10, 1, "step"), (14, 2, "epoch"), (21, 3, "epoch")]
    resumed = assert_resumes_bitwise(cfg, mnist1d_cache, full, at, checkpoint_steps=(10,))
    # probe metrics after the checkpoint are among those compared
    probe_steps = {s for s, k, _ in resumed.metrics if k == "hessian/top"}
    assert probe_steps == {10, 21} if at == SPE else probe_steps == {21}


def test_resume_run_continues_a_partial_epoch_statistic(resume_runs):
    # the checkpoint at step 10 carries the loss sum of steps 8-10 of epoch 1
    _, full = resume_runs["mlp_momentum_dropout_noise_labelperm"]
    state = checkpoint_at(full, 10)
    assert state["step"] == 10 and state["epoch"] == 1
    assert state["epoch_stats"][2] == 3 * 64
    assert checkpoint_at(full, 7)["epoch_stats"] == [0.0, 0.0, 0]
    assert state["hooks"]["probes.hessian"]["v0"] is not None  # the Lanczos warm start


def test_checkpoint_of_another_config_is_refused(resume_runs, mnist1d_cache):
    cfg, full = resume_runs["mlp_momentum_dropout_noise_labelperm"]
    state = checkpoint_at(full, SPE)
    with pytest.raises(ValueError, match="another trial config"):
        run(cfg.model_copy(update={"seed": 1}), MemorySink(), env(mnist1d_cache), resume=state)
    other = TrialConfig.model_validate({**cfg.model_dump(), "optim": {**cfg.optim.model_dump(), "lr": 0.04}})
    with pytest.raises(ValueError, match="another trial config"):
        run(other, MemorySink(), env(mnist1d_cache), resume=state)


def test_simulated_crash_then_resume(resume_runs, mnist1d_cache):
    cfg, full = resume_runs["mlp_momentum_dropout_noise_labelperm"]
    crashed = MemorySink()
    result = run(cfg, crashed, env(mnist1d_cache, stop_after_step=12))
    assert result.status == "stopped" and result.step == 12 and result.epoch == 1
    assert crashed.status is None                              # finish() never called
    assert [s for s, *_ in crashed.checkpoints] == [SPE]       # the last resumable point
    # until the crash it was the same run
    assert canon(crashed.metrics) == canon(m for m in full.metrics if m[0] <= 12)
    at = crashed.checkpoints[-1][0]
    resumed = MemorySink()
    assert run(cfg, resumed, env(mnist1d_cache), resume=secure(crashed.checkpoints[-1][3])).status == "finished"
    # stitched together: exactly the uninterrupted run (the re-done steps 8-12
    # replace what the crashed run logged after its checkpoint)
    stitched = canon([m for m in crashed.metrics if m[0] <= at] + resumed.metrics)
    assert stitched == canon(full.metrics)
    assert_same(reproducible(final_state(full)), reproducible(final_state(resumed)))


# ------------------------------------------------- probes never change training
ALL_PROBES = {"hessian": True, "hessian_trace": True, "gradcov": True, "stiffness": True,
              "fisher": True, "frequency": True, "timeline": True, "hutchinson_samples": 2,
              "probe_size": 32, "val_probe_size": 16, "schedule": {"points": 5}}


def test_probes_never_change_training(mnist1d_cache):
    over = dict(model={"width": 16, "dropout": 0.3, "preact_noise": 0.1}, optim={"lr": 0.05, "momentum": 0.9})
    with_probes, without = trial(**over, probes=ALL_PROBES), trial(**over, probes=PROBES_OFF)
    sinks, rngs = {}, {}
    for name, cfg in (("on", with_probes), ("off", without)):
        sinks[name] = MemorySink()
        assert run(cfg, sinks[name], env(mnist1d_cache)).status == "finished"
        rngs[name] = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    on, off = sinks["on"], sinks["off"]
    keys_on = {k for _, k, _ in on.metrics}
    for key in ("hessian/top", "hessian/trace", "gradcov/top", "stiffness/train_train/sign",
                "fisher/trace", "freq/delta_k0", "timeline/dist_init"):
        assert key in keys_on, key
    assert not {k for _, k, _ in off.metrics} & {"hessian/top", "probe/loss"}
    assert_same(final_state(on)["model"], final_state(off)["model"])
    assert_same(final_state(on)["optimizer"], final_state(off)["optimizer"])
    assert_same(final_state(on)["rng"], final_state(off)["rng"])
    train_keys = {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "train/epoch"}
    assert [m for m in on.metrics if m[1] in train_keys] == [m for m in off.metrics if m[1] in train_keys]
    assert reproducible(on.summary) == reproducible(off.summary)
    # and the global RNGs end where training alone left them
    assert torch.equal(rngs["on"][0], rngs["off"][0])
    assert np.array_equal(rngs["on"][1], rngs["off"][1]) and rngs["on"][2] == rngs["off"][2]


class RngHog:
    """A badly behaved hook: draws from every global RNG and flips modes."""

    name = "hog"

    def __init__(self):
        self.schedule = Schedule(kind="every", every=1)
        self.calls = 0

    def __call__(self, ctx):
        self.calls += 1
        torch.rand(100)
        np.random.rand(10)
        random.random()
        ctx.model.eval()
        return {"hog/value": float(torch.rand(()))}


def test_a_hook_drawing_random_numbers_does_not_change_training(mnist1d_cache, monkeypatch):
    cfg = trial(model={"width": 16, "dropout": 0.3, "preact_noise": 0.1}, optim={"lr": 0.05, "momentum": 0.9})
    quiet, noisy = MemorySink(), MemorySink()
    run(cfg, quiet, env(mnist1d_cache), hooks=[])
    hog = RngHog()
    run(cfg, noisy, env(mnist1d_cache), hooks=[hog])
    assert hog.calls == TOTAL + 1
    assert [s for s, _ in noisy.series("hog/value")] == list(range(TOTAL + 1))
    assert_same(final_state(quiet)["model"], final_state(noisy)["model"])
    assert_same(final_state(quiet)["rng"], final_state(noisy)["rng"])
    # the control: without the loop's isolation the same hook does change
    # training (so the equalities above are not vacuous)
    monkeypatch.setattr(train_module, "_isolated", lambda model, device: contextlib.nullcontext())
    leaky = MemorySink()
    run(cfg, leaky, env(mnist1d_cache), hooks=[RngHog()])
    assert not torch.equal(final_state(leaky)["model"]["out.weight"], final_state(quiet)["model"]["out.weight"])


def test_metric_key_collision_between_hooks_is_an_error(mnist1d_cache):
    class Fixed:
        schedule = Schedule(kind="steps", steps=(0,))

        def __init__(self, name, key):
            self.name, self.key = name, key

        def __call__(self, ctx):
            return {self.key: 1.0}

    cfg = trial(probes=PROBES_OFF)
    with pytest.raises(ValueError, match="probe/loss"):
        run(cfg, MemorySink(), env(mnist1d_cache), hooks=[Fixed("a", "probe/loss"), Fixed("b", "probe/loss")])
    sink = MemorySink()
    run(cfg, sink, env(mnist1d_cache), hooks=[Fixed("a", "a/x"), Fixed("b", "b/x")])
    assert sorted(m for m in sink.metrics if m[1] in ("a/x", "b/x")) == [(0, "a/x", 1.0), (0, "b/x", 1.0)]


# ------------------------------------------------------------ step counts
def keyed(sink):
    return [(s, k) for s, k, _ in sink.metrics]


@pytest.mark.parametrize("train, spe, total", [
    ({"epochs": 3, "batch_size": 64}, 7, 21),
    ({"epochs": 2, "batch_size": 100}, 4, 8),
    ({"epochs": 3, "batch_size": 64, "max_steps": 10}, 7, 10),
    ({"epochs": 2, "batch_size": 400}, 1, 2),
    ({"epochs": 1, "batch_size": 1000}, 1, 1),
])
def test_exact_step_counts(mnist1d_cache, train, spe, total):
    cfg = trial(train={**BASE["train"], **train}, probes=PROBES_OFF)
    assert steps_per_epoch(400, cfg.train.batch_size) == spe
    sink = MemorySink()
    result = run(cfg, sink, env(mnist1d_cache))
    assert result.status == "finished" and result.step == total
    assert sink.summary["final/steps"] == total
    ends = [min(e * spe, total) for e in range(1, cfg.train.epochs + 1) if (e - 1) * spe < total]
    assert [s for s, _ in sink.series("train/loss")] == ends          # once per epoch, at its last step
    assert [v for _, v in sink.series("train/epoch")] == [float(e) for e in range(1, len(ends) + 1)]
    assert sink.epochs == [(e + 1, s) for e, s in enumerate(ends)]
    assert result.epoch == len(ends)
    assert len(keyed(sink)) == len(set(keyed(sink)))                  # no key twice at a step
    assert {s for s, _ in keyed(sink)} == set(ends)


def test_train_loss_is_the_mean_over_the_epochs_examples(mnist1d_cache):
    # log_every=1 gives every batch loss; the epoch's train/loss weights them by batch size
    cfg = trial(train={**BASE["train"], "log_every": 1}, probes=PROBES_OFF)
    sink = MemorySink()
    run(cfg, sink, env(mnist1d_cache))
    batch = dict(sink.series("train/batch_loss"))
    assert sorted(batch) == list(range(1, TOTAL + 1))
    sizes = [64] * 6 + [16]
    for e, (step, loss) in enumerate(sink.series("train/loss")):
        losses = [batch[e * SPE + b + 1] for b in range(SPE)]
        assert step == (e + 1) * SPE
        assert loss == pytest.approx(sum(l * n for l, n in zip(losses, sizes)) / 400, rel=1e-6)


@pytest.mark.parametrize("epochs, points", [(2, 5), (3, 5), (2, 12), (1, 3)])
def test_probe_steps_are_log_spaced(mnist1d_cache, epochs, points):
    cfg = trial(train={**BASE["train"], "epochs": epochs},
                probes={**PROBES_OFF, "hessian": True, "probe_size": 16,
                        "schedule": {"kind": "log", "points": points}})
    sink = MemorySink()
    run(cfg, sink, env(mnist1d_cache))
    total = epochs * SPE
    expected = Schedule(kind="log", points=points).resolve(total, SPE)
    logged = [s for s, _ in sink.series("hessian/top")]
    assert logged == sorted(expected) == log_spaced_steps(total, points)
    assert len(logged) == len(set(logged))
    assert logged[0] == 0 and logged[-1] == total
    assert len(logged) >= min(points, 5)          # several points, even for a short run
    assert all(math.isfinite(v) for _, v in sink.series("hessian/top"))


def test_probe_schedule_every_and_steps_in_the_loop(mnist1d_cache):
    for sched, expected in (({"kind": "every", "every": 5}, [0, 5, 10, 15, 20]),
                            ({"kind": "steps", "steps": [0, 3, 7, 50]}, [0, 3, 7]),
                            ({"kind": "epoch"}, [0, 7, 14, 21])):
        cfg = trial(probes={**PROBES_OFF, "timeline": True, "probe_size": 16, "schedule": sched})
        sink = MemorySink()
        run(cfg, sink, env(mnist1d_cache))
        assert [s for s, _ in sink.series("timeline/dist_init")] == expected, sched
    assert sink.series("timeline/dist_init")[0] == (0, 0.0)           # step 0: before any update


@pytest.mark.parametrize("sched, total, spe, expected", [
    (Schedule(kind="every", every=5), 21, 7, {0, 5, 10, 15, 20}),
    (Schedule(kind="every", every=1), 3, 1, {0, 1, 2, 3}),
    (Schedule(kind="steps", steps=(3, 50, -1, 21)), 21, 7, {3, 21}),
    (Schedule(kind="epoch"), 21, 7, {0, 7, 14, 21}),
    (Schedule(kind="epoch"), 10, 7, {0, 7, 10}),
    (Schedule(kind="log", points=5), 14, 7, {0, 1, 2, 4, 7, 14}),
    (Schedule(kind="log", points=1), 14, 7, {0, 1, 14}),
    (Schedule(kind="log", points=12), 1, 1, {0, 1}),
    (Schedule(kind="log", points=12), 0, 1, {0}),
])
def test_schedule_resolve(sched, total, spe, expected):
    assert sched.resolve(total, spe) == frozenset(expected)


def test_log_spaced_steps_dense_early():
    steps = log_spaced_steps(10_000, 12)
    assert steps[0] == 0 and steps[1] == 1 and steps[-1] == 10_000
    assert len(steps) == 13
    gaps = np.diff(steps[1:])
    assert (np.diff(gaps) >= 0).all()                                  # gaps only grow
    assert len(log_spaced_steps(14, 5)) == 6                             # a 2-epoch run: several points


# -------------------------------------------------------------- divergence
def test_huge_lr_diverges_as_data(mnist1d_cache):
    cfg = trial(optim={"lr": 1e4})
    sink = MemorySink()
    result = run(cfg, sink, env(mnist1d_cache))
    assert result.status == "diverged" and sink.status == "diverged"
    ((step, value),) = sink.series("diverged/step")
    assert value == step == result.step and 0 < step < TOTAL
    assert sink.summary == {"diverged/step": float(step)}
    (bad,) = sink.series("train/batch_loss")
    assert bad[0] == step and (not math.isfinite(bad[1]) or bad[1] > cfg.train.divergence_loss)
    assert all(s <= step for s, _, _ in sink.metrics)
    assert all(s < step or r == "step" for s, _, r, _ in sink.checkpoints)
    assert "final/train_loss" not in {k for _, k, _ in sink.metrics}


def test_divergence_loss_bound(mnist1d_cache):
    # the first batch loss (about ln 10) is already above the bound
    cfg = trial(train={**BASE["train"], "divergence_loss": 1.0}, probes=PROBES_OFF)
    sink = MemorySink()
    result = run(cfg, sink, env(mnist1d_cache))
    assert result.status == "diverged" and result.step == 0 and sink.status == "diverged"
    assert sink.series("diverged/step") == [(0, 0.0)]
    assert sink.series("train/batch_loss")[0][1] == pytest.approx(math.log(10), rel=0.1)
    assert sink.checkpoints == [] and sink.epochs == []
    # a bound above the loss never triggers
    ok = trial(train={**BASE["train"], "divergence_loss": 10.0}, probes=PROBES_OFF)
    assert run(ok, MemorySink(), env(mnist1d_cache)).status == "finished"


# ------------------------------------------------------------- determinism
def test_same_config_same_run_and_seed_matters(mnist1d_cache):
    cfg = trial(model={"width": 16, "dropout": 0.3}, probes=PROBES_OFF)
    a, b, c = MemorySink(), MemorySink(), MemorySink()
    run(cfg, a, env(mnist1d_cache))
    torch.rand(5)                       # global RNG state before a run does not matter
    run(cfg, b, env(mnist1d_cache))
    run(cfg.model_copy(update={"seed": 1}), c, env(mnist1d_cache))
    assert reproducible(a.metrics) == reproducible(b.metrics)
    assert_same(reproducible(final_state(a)), reproducible(final_state(b)))
    assert a.series("train/loss") != c.series("train/loss")


def test_checkpoint_every_epochs(mnist1d_cache):
    cfg = trial(train={**BASE["train"], "epochs": 4}, probes=PROBES_OFF,
                data={"deficit": {"kind": "vflip", "start_epoch": 1, "end_epoch": 3}})
    sink = MemorySink()
    run(cfg, sink, env(mnist1d_cache, checkpoint_every_epochs=0, checkpoint_steps=(5,)))
    # explicit step, the deficit's window edges (problem changes there) and the end
    assert [(s, e, r) for s, e, r, _ in sink.checkpoints] == \
        [(5, 0, "step"), (7, 1, "epoch"), (21, 3, "epoch"), (28, 4, "epoch")]
    sink = MemorySink()
    run(cfg, sink, env(mnist1d_cache, checkpoint_every_epochs=2))
    assert [s for s, *_ in sink.checkpoints] == [7, 14, 21, 28]


# ------------------------------------------------------------- small parts
def test_augment_is_seeded_by_the_step_and_crops_the_padded_image():
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    before = torch.get_rng_state()
    a, b, c = train_module._augment(x, 0, 5), train_module._augment(x, 0, 5), train_module._augment(x, 0, 6)
    assert torch.equal(before, torch.get_rng_state())
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        crops = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(a[i], crop) or torch.equal(a[i], crop.flip(-1)) for crop in crops), i


def test_evaluate_restores_modes_and_uses_eval_mode():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.9), torch.nn.Linear(8, 3))
    model.train()
    model[1].eval()
    model[2].train()
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    loss, acc = train_module.evaluate(model, x, y, torch.nn.CrossEntropyLoss(), "classification", chunk=7)
    assert [m.training for m in model.modules()] == [True, True, False, True]
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(out, y)), rel=1e-5)
    assert acc == pytest.approx(float((out.argmax(1) == y).float().mean()))


def test_snapshots_record_the_weights_at_each_probe_step(mnist1d_cache):
    cfg = trial(probes={**BASE["probes"], **PROBES_OFF, "snapshots": True})
    sink = MemorySink()
    run(cfg, sink, env(mnist1d_cache))
    snaps = {step: value for step, name, value in sink.artifacts if name == "weights"}
    assert sorted(snaps) == log_spaced_steps(TOTAL, 5)
    final = torch.cat([t.reshape(-1) for t in final_state(sink)["model"].values()])
    assert np.array_equal(snaps[TOTAL], final.numpy())
    assert not np.array_equal(snaps[0], snaps[TOTAL])
