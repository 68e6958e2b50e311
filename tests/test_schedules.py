"""Learning-rate / momentum schedules (pure functions of the epoch) and the
loop applying them: param groups really change, preact noise switches off."""
import pytest
import torch

from dynamics_core.config import OptimConfig, TrialConfig
from dynamics_core.hooks import Schedule
from dynamics_core.optim import apply_lr_momentum, lr_momentum, make_optimizer
from dynamics_core.sink import MemorySink
from dynamics_core.train import RunEnv, run

pytestmark = pytest.mark.usefixtures("single_thread")


def optim(**kw) -> OptimConfig:
    return OptimConfig.model_validate(kw)


def lrs(cfg: OptimConfig, epochs: int, frac: float = 0.0):
    return [lr_momentum(cfg, e, frac, epochs) for e in range(epochs)]


# ---------------------------------------------------------- pure schedules
def test_constant():
    c = optim(lr=0.05, momentum=0.9)
    for e in range(10):
        for frac in (0.0, 0.3, 0.99):
            assert lr_momentum(c, e, frac, 10) == (0.05, 0.9)


def test_step_three_stage_at_half_and_three_quarters():
    c = optim(lr=0.1, momentum=0.5, schedule={"kind": "step", "milestones": [0.5, 0.75], "factor": 0.1})
    got = lrs(c, 8)
    expected = [0.1] * 4 + [0.1 * 0.1] * 2 + [0.1 * 0.1 ** 2] * 2
    assert [lr for lr, _ in got] == pytest.approx(expected, rel=1e-12)
    assert [mu for _, mu in got] == [0.5] * 8
    # the drop is at the epoch boundary, not inside the epoch
    assert lr_momentum(c, 3, 0.999, 8)[0] == 0.1
    assert lr_momentum(c, 4, 0.0, 8)[0] == pytest.approx(0.01, rel=1e-12)
    # 100 epochs: drops at 50 and 75 exactly
    got = [lr for lr, _ in lrs(c, 100)]
    assert got[49] == 0.1 and got[50] == pytest.approx(0.01) and got[74] == pytest.approx(0.01)
    assert got[75] == pytest.approx(0.001)


def test_exponential():
    c = optim(lr=0.2, schedule={"kind": "exponential", "gamma": 0.97})
    got = [lr for lr, _ in lrs(c, 12)]
    assert got == pytest.approx([0.2 * 0.97 ** e for e in range(12)], rel=1e-12)
    assert got[0] == 0.2
    assert lr_momentum(c, 3, 0.5, 12)[0] == got[3]      # constant within an epoch


def test_exponential_restart_starts_the_decay_over():
    """restart_epoch (the end of a deficit): lr x gamma^(epoch - restart) from there on;
    before it, and without it, the plain exponential decay to the last bit."""
    c = optim(lr=0.05, schedule={"kind": "exponential", "gamma": 0.97, "restart_epoch": 3})
    got = [lr for lr, _ in lrs(c, 7)]
    assert got == [0.05, 0.05 * 0.97, 0.05 * 0.97 ** 2, 0.05, 0.05 * 0.97, 0.05 * 0.97 ** 2,
                   0.05 * 0.97 ** 3]
    plain = optim(lr=0.05, schedule={"kind": "exponential", "gamma": 0.97})
    assert got[:3] == [lr for lr, _ in lrs(plain, 3)]
    assert lr_momentum(c, 4, 0.7, 7)[0] == got[4]                   # constant within an epoch
    assert c.schedule.boundary_epochs() == {3}                       # a resumable point
    with pytest.raises(ValueError, match="needs kind: exponential"):
        optim(schedule={"kind": "constant", "restart_epoch": 3})


def test_restart_epoch_unset_keeps_run_hashes():
    """A new field with a default: configs that do not set it hash as before (the
    golden hashes are in test_config); one that sets it is another trial."""
    cfg = TrialConfig.model_validate({"optim": {"schedule": {"kind": "exponential"}}})
    restarted = TrialConfig.model_validate(
        {"optim": {"schedule": {"kind": "exponential", "restart_epoch": 5}}})
    assert restarted.run_hash() != cfg.run_hash()
    assert cfg.run_hash() == TrialConfig.model_validate(
        {"optim": {"schedule": {"kind": "exponential", "restart_epoch": None}}}).run_hash()


def test_two_stage_switches_lr_and_momentum():
    c = optim(lr=0.4, momentum=0.0,
              schedule={"kind": "two_stage", "stage1_epochs": 3, "lr2": 0.04, "momentum2": 0.9})
    assert lrs(c, 6) == [(0.4, 0.0)] * 3 + [(0.04, 0.9)] * 3
    # lr2 / momentum2 unset: keep the first stage's value
    c = optim(lr=0.4, momentum=0.5, schedule={"kind": "two_stage", "stage1_epochs": 2, "lr2": 0.1})
    assert lrs(c, 4) == [(0.4, 0.5)] * 2 + [(0.1, 0.5)] * 2


def test_two_stage_final_anneal_scales_the_second_stage_only():
    c = optim(lr=1.0, momentum=0.0, schedule={"kind": "two_stage", "stage1_epochs": 2, "lr2": 0.03,
                                             "momentum2": 0.9, "anneal_epoch": 4, "factor": 0.1})
    got = lrs(c, 6)
    assert [lr for lr, _ in got] == pytest.approx([1.0, 1.0, 0.03, 0.03, 0.003, 0.003], rel=1e-12)
    assert [mu for _, mu in got] == [0.0, 0.0, 0.9, 0.9, 0.9, 0.9]
    assert c.schedule.boundary_epochs() == {2, 4}         # both changes are resumable points
    # an anneal epoch inside stage 1 anneals stage 2 from its first epoch, never stage 1
    early = optim(lr=1.0, schedule={"kind": "two_stage", "stage1_epochs": 3, "lr2": 0.1,
                                    "anneal_epoch": 1, "factor": 0.5})
    assert [lr for lr, _ in lrs(early, 5)] == pytest.approx([1.0, 1.0, 1.0, 0.05, 0.05], rel=1e-12)


def test_warmup_ramps_linearly_from_zero():
    c = optim(lr=0.1, schedule={"warmup_epochs": 2.0})
    assert lr_momentum(c, 0, 0.0, 10)[0] == 0.0
    assert lr_momentum(c, 0, 0.5, 10)[0] == pytest.approx(0.025)
    assert lr_momentum(c, 1, 0.0, 10)[0] == pytest.approx(0.05)
    assert lr_momentum(c, 1, 0.5, 10)[0] == pytest.approx(0.075)
    assert lr_momentum(c, 2, 0.0, 10)[0] == 0.1
    assert lr_momentum(c, 7, 0.3, 10)[0] == 0.1
    # in front of another schedule
    c = optim(lr=0.1, schedule={"kind": "exponential", "gamma": 0.5, "warmup_epochs": 2.0})
    assert lr_momentum(c, 1, 0.0, 10)[0] == pytest.approx(0.1 * 0.5 * 0.5)
    assert lr_momentum(c, 3, 0.0, 10)[0] == pytest.approx(0.1 * 0.5 ** 3)


def test_apply_lr_momentum_changes_what_sgd_does():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = make_optimizer(optim(lr=1.0, momentum=0.0), [p])
    for mu, lr in ((0.0, 1.0), (0.9, 0.5), (0.9, 0.5)):
        apply_lr_momentum(opt, lr, mu)
        assert opt.param_groups[0]["lr"] == lr and opt.param_groups[0]["momentum"] == mu
        p.grad = torch.ones(3)
        opt.step()
    # step 1 (mu=0): plain SGD, no buffer; step 2: the first buffer is g = 1;
    # step 3: buf = 0.9 * 1 + 1 = 1.9. So p = -1 * 1 - 0.5 * 1 - 0.5 * 1.9
    assert torch.allclose(p.detach(), torch.full((3,), -1.0 - 0.5 - 0.95))
    assert torch.allclose(opt.state[p]["momentum_buffer"], torch.full((3,), 1.9))


def test_apply_lr_momentum_adam_and_nesterov():
    p = torch.nn.Parameter(torch.zeros(2))
    adam = make_optimizer(optim(name="adam", lr=0.1), [p])
    apply_lr_momentum(adam, 0.01, 0.9)
    assert adam.param_groups[0]["lr"] == 0.01 and "momentum" not in adam.param_groups[0]
    nest = make_optimizer(optim(lr=0.1, momentum=0.9, nesterov=True), [p])
    apply_lr_momentum(nest, 0.01, 0.0)      # nesterov needs momentum > 0: left alone
    assert nest.param_groups[0]["momentum"] == 0.9 and nest.param_groups[0]["lr"] == 0.01


# ------------------------------------------------------------- in the loop
BASE = {"data": {"train_size": 200, "test_size": 100}, "model": {"width": 16},
        "train": {"epochs": 4, "batch_size": 50, "device": "cpu"},
        "probes": {k: False for k in ("hessian", "gradcov", "stiffness", "timeline")}}
SPE = 4   # 200 / 50


def trial(**over) -> TrialConfig:
    tree = {k: dict(v) for k, v in BASE.items()}
    for k, v in over.items():
        tree[k] = {**tree.get(k, {}), **v}
    return TrialConfig.model_validate(tree)


class Recorder:
    """Records what the loop hands a hook at every step."""

    name = "recorder"

    def __init__(self):
        self.schedule = Schedule(kind="every", every=1)
        self.seen = []

    def __call__(self, ctx):
        self.seen.append((ctx.step, ctx.epoch, ctx.lr, ctx.momentum, ctx.model.preact_noise))
        return None


def test_loop_logs_the_scheduled_lr_per_epoch(mnist1d_cache):
    cfg = trial(optim={"lr": 0.1, "schedule": {"kind": "step", "milestones": [0.5, 0.75]}})
    sink = MemorySink()
    run(cfg, sink, RunEnv(cache_dir=mnist1d_cache), hooks=[])
    assert sink.series("lr") == [(4, 0.1), (8, 0.1), (12, pytest.approx(0.01)), (16, pytest.approx(0.001))]


def test_two_stage_changes_the_sgd_param_group_in_training(mnist1d_cache):
    cfg = trial(optim={"lr": 0.2, "momentum": 0.0,
                       "schedule": {"kind": "two_stage", "stage1_epochs": 2, "lr2": 0.02, "momentum2": 0.9}})
    sink, rec = MemorySink(), Recorder()
    run(cfg, sink, RunEnv(cache_dir=mnist1d_cache), hooks=[rec])
    groups = {step: state["optimizer"]["param_groups"][0] for step, _, _, state in sink.checkpoints}
    assert sorted(groups) == [4, 8, 12, 16]          # every epoch; stage1_epochs is a resumable point
    assert [(groups[s]["lr"], groups[s]["momentum"]) for s in (4, 8)] == [(0.2, 0.0)] * 2
    assert [(groups[s]["lr"], groups[s]["momentum"]) for s in (12, 16)] == [(0.02, 0.9)] * 2
    # momentum buffers exist only once momentum is on
    assert sink.checkpoints[1][3]["optimizer"]["state"] == {}
    assert len(sink.checkpoints[2][3]["optimizer"]["state"]) > 0
    # hooks see the lr/momentum of the step just taken
    by_step = {s: (lr, mu) for s, _, lr, mu, _ in rec.seen}
    assert by_step[8] == (0.2, 0.0) and by_step[9] == (0.02, 0.9)


def test_warmup_in_the_loop_per_step(mnist1d_cache):
    cfg = trial(optim={"lr": 0.1, "schedule": {"warmup_epochs": 2.0}}, train={"epochs": 3, "log_every": 1})
    sink = MemorySink()
    run(cfg, sink, RunEnv(cache_dir=mnist1d_cache), hooks=[])
    batch_lr = {}
    for s, k, v in sink.metrics:
        if k == "lr":
            batch_lr.setdefault(s, v)
    # the lr logged at step s is the one used for the update s-1 -> s
    assert sorted(batch_lr) == list(range(1, 13))
    for s, v in batch_lr.items():
        assert v == pytest.approx(0.1 * min(1.0, ((s - 1) / SPE) / 2.0), abs=1e-15), s


def test_noise_off_epoch_switches_preact_noise_off(mnist1d_cache):
    cfg = trial(model={"width": 16, "preact_noise": 0.1},
                optim={"lr": 0.05, "schedule": {"noise_off_epoch": 2}})
    sink, rec = MemorySink(), Recorder()
    run(cfg, sink, RunEnv(cache_dir=mnist1d_cache), hooks=[rec])
    assert [s for s, *_ in rec.seen] == list(range(0, 17))
    for step, epoch, _, _, noise in rec.seen:
        assert noise == (0.0 if epoch >= 2 else 0.1), (step, epoch)
    assert {e for _, e, *_ in rec.seen} == {0, 1, 2, 3, 4}

    # resuming after the switch keeps the noise off from the first step on
    state = next(st for s, _, _, st in sink.checkpoints if s == 2 * SPE)
    rec2 = Recorder()
    sink2 = MemorySink()
    run(cfg, sink2, RunEnv(cache_dir=mnist1d_cache), hooks=[rec2], resume=state)
    assert rec2.seen[0][0] == 2 * SPE + 1
    assert all(noise == 0.0 for *_, noise in rec2.seen)
    assert all(torch.equal(a, b) for a, b in zip(sink.checkpoints[-1][3]["model"].values(),
                                                  sink2.checkpoints[-1][3]["model"].values()))


def test_noise_off_changes_training(mnist1d_cache):
    # the switch matters: with noise kept on, the last epochs train differently
    on = trial(model={"width": 16, "preact_noise": 0.1}, optim={"lr": 0.05})
    off = trial(model={"width": 16, "preact_noise": 0.1}, optim={"lr": 0.05, "schedule": {"noise_off_epoch": 2}})
    s_on, s_off = MemorySink(), MemorySink()
    run(on, s_on, RunEnv(cache_dir=mnist1d_cache), hooks=[])
    run(off, s_off, RunEnv(cache_dir=mnist1d_cache), hooks=[])
    assert s_on.series("train/loss")[:2] == s_off.series("train/loss")[:2]
    assert s_on.series("train/loss")[2:] != s_off.series("train/loss")[2:]
