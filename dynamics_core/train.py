"""The training loop. Closed to edits: behaviour comes in through hooks.

`run(cfg, sink, env, hooks)` trains one frozen `TrialConfig` and reports to a
`Sink`: per-epoch loss/accuracy, scheduled hook metrics at optimizer `step`s,
checkpoints at resumable points, and a final status. The caller passes the
hooks (a list, or a function (cfg, data) -> list such as
`dynamics_core.measure.default_hooks`, which builds the probes the config
switches on); the training hooks the config itself switches on
(`dynamics_core.knobs`) the loop adds, since what a run computes depends on
its config alone. Divergence (non-finite loss, or loss above
`train.divergence_loss`) is data: status `diverged` plus `diverged/step`,
never an exception.

Levels: with a `LevelPlan` (`dynamics_core.hooks`) a trial trains
`plan.levels` times in a row (train → prune → rewind → retrain …), one
resumable trial. Level L covers the global steps L·(T+1) … L·(T+1)+T, T the
steps of one level, so steps grow monotonically, no (metric, step) pair
repeats and a step's level is step // (T+1); hooks, schedules, data order,
augmentation and deficits see the step within the level (`ctx.level_step`),
the sink the global step. Epoch metrics then carry `train/level`, every
level's end logs `level/<L>/final/...`, and the last level's end also the
plain `final/...`. A checkpoint is taken at the end of every level and
right after the next level started.

Determinism: the data order of epoch e is a permutation drawn from a
generator seeded by (seed, e); augmentation and noise deficits are seeded by
the step; the schedule is a pure function of the epoch. A checkpoint holds
model, optimizer, level, step, epoch, every global RNG, each hook's and the
plan's state, so resuming from any checkpoint reproduces an uninterrupted run
bit for bit, except the wall-clock seconds `time/train_s` and `time/probe_s`
(at each epoch end; `final/time_train_s`, `final/time_probe_s` in the
summary), which a checkpoint carries on (`reproducible` drops them).
Checkpoints hold only tensors and plain Python values: they load with
`torch.load(..., weights_only=True)`. Process-wide torch settings a trial
makes (deterministic algorithms, thread count, cuDNN flags) are set per
trial and restored when `run` returns, so a reused worker starts clean.
"""
from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from dynamics_core import models
from dynamics_core.config import TrialConfig
from dynamics_core.data import Dataset, DeficitView, load
from dynamics_core.hooks import (Hook, LevelPlan, LevelStart, StepContext, changes_training,
                                 hook_state, load_hook_state, merge_metrics)
from dynamics_core.knobs import config_hooks
from dynamics_core.optim import apply_lr_momentum, lr_momentum, make_optimizer
from dynamics_core.sink import Sink

CHECKPOINT_VERSION = 2

HookSource = Union[Sequence[Hook], Callable[[TrialConfig, Dataset], Sequence[Hook]]]


@dataclass(frozen=True)
class RunEnv:
    """Where and how a trial runs; nothing here changes what it computes."""

    device: str = "auto"                      # overrides train.device unless "auto"
    cache_dir: str = "runs/data"
    checkpoint_every_epochs: int = 1          # 0: only explicit checkpoint_steps
    checkpoint_steps: tuple[int, ...] = ()    # extra resumable points (steps within a level)
    stop_after_step: int | None = None        # end early, as a crash would (tests; global step)
    distributed: bool = False                 # one DDP rank of an initialised process group


@dataclass
class RunResult:
    status: str                    # finished | diverged | stopped
    step: int                      # global step
    epoch: int
    summary: dict[str, float] = field(default_factory=dict)
    level: int = 0


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    return torch.device(requested)


def loss_function(data: Dataset):
    return torch.nn.MSELoss() if data.task == "regression" else torch.nn.CrossEntropyLoss()


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)


def run(cfg: TrialConfig, sink: Sink, env: RunEnv = RunEnv(), hooks: HookSource = (),
        resume: dict[str, Any] | None = None, plan: LevelPlan | None = None) -> RunResult:
    with trial_settings(cfg):
        return _run(cfg, sink, env, hooks, resume, plan)


def _run(cfg: TrialConfig, sink: Sink, env: RunEnv, hooks: HookSource,
         resume: dict[str, Any] | None, plan: LevelPlan | None) -> RunResult:
    device = resolve_device(env.device if env.device != "auto" else cfg.train.device)
    data = load(cfg.data, device, env.cache_dir)
    loss_fn = loss_function(data)
    model = models.build(cfg.model, data.input_shape, data.num_classes,
                         cfg.model.init_seed if cfg.model.init_seed is not None else cfg.seed).to(device)
    init_params = [p.detach().clone() for p in model.parameters()]
    net, rank, world = _maybe_ddp(model, device, env.distributed)
    opt = make_optimizer(cfg.optim, model.parameters())
    deficit = DeficitView(cfg.data.deficit, data.x_train, data.num_classes, cfg.seed)

    spe = steps_per_epoch(data.n_train, cfg.train.batch_size)
    total = spe * cfg.train.epochs if cfg.train.max_steps is None else min(spe * cfg.train.epochs, cfg.train.max_steps)
    hooks = [*config_hooks(cfg, spe), *(hooks(cfg, data) if callable(hooks) else hooks)]
    _check_names(hooks)
    trainers = [h for h in hooks if changes_training(h)]
    watchers = [h for h in hooks if not changes_training(h)]
    hook_steps = {h.name: h.schedule.resolve(total, spe) for h in hooks}
    ckpt_epochs = cfg.train.epochs if env.checkpoint_every_epochs == 0 else env.checkpoint_every_epochs
    ckpt_steps = set(env.checkpoint_steps) | {e * spe for e in cfg.boundary_epochs()}
    levels = plan.levels if plan is not None else 1

    level, step, epoch = 0, 0, 0
    summary: dict[str, float] | None = None
    finals: dict[str, float] = {}           # level/<L>/final/... of the levels done
    stats = _EpochStats()
    clock = _Clock()
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    if resume is not None:
        level, step, epoch, stats, finals = _restore(resume, cfg, model, opt, hooks, plan)
        clock = _Clock(*resume.get("time", (0.0, 0.0)))

    def gstep() -> int:
        return level * (total + 1) + step

    def context(lr: float, mu: float, epoch_now: int) -> StepContext:
        at = gstep()
        return StepContext(step=at, epoch=epoch_now, model=model, loss_fn=loss_fn, data=data, lr=lr,
                           momentum=mu, batch_size=cfg.train.batch_size, init_params=init_params,
                           log_artifact=lambda name, value: sink.log_artifact(name, value, at),
                           level=level, level_step=step, optimizer=opt)

    def call_trainers(ctx: StepContext) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for hook in trainers:
            if step in hook_steps[hook.name]:
                with torch.no_grad():
                    merge_metrics(metrics, hook(ctx), hook.name)
        return metrics

    def call_watchers(ctx: StepContext, metrics: dict[str, float], times: bool = False) -> None:
        due = [h for h in watchers if step in hook_steps[h.name]] if rank == 0 else []
        t0 = _synced_clock(device) if due else 0.0
        for hook in due:
            with _isolated(model, device):
                merge_metrics(metrics, hook(ctx), hook.name)
        if due:
            clock.probe_s += _synced_clock(device) - t0
        if times:
            metrics.update(clock.metrics())
        if metrics:
            sink.log_metrics(metrics, gstep())

    def start_training(lr: float, mu: float) -> None:
        ctx = context(lr, mu, epoch)
        for hook in trainers:
            if hasattr(hook, "start"):
                with torch.no_grad():
                    hook.start(ctx)

    def start_level() -> None:
        """A level begins: the plan sets weights/masks and where to start,
        then every hook due at that step runs, as at step 0 of a plain run."""
        nonlocal step, epoch, stats
        start = LevelStart()
        if plan is not None:
            with torch.no_grad():
                plan.on_level_start(level, model, opt, start)
        if not 0 <= start.start_step < total:
            raise ValueError(f"level {level} start_step {start.start_step} is not in [0, {total})")
        step, epoch, stats = start.start_step, start.start_step // spe, _EpochStats()
        lr, mu = lr_momentum(cfg.optim, epoch, (step - epoch * spe) / spe, cfg.train.epochs)
        start_training(lr, mu)
        ctx = context(lr, mu, epoch)
        metrics = dict(start.metrics)
        merge_metrics(metrics, call_trainers(ctx), "trainers")
        call_watchers(ctx, metrics)

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if cfg.train.bf16 and device.type == "cuda" else contextlib.nullcontext())
    if resume is None:
        start_level()
    else:
        start_training(*lr_momentum(cfg.optim, epoch, (step - epoch * spe) / spe, cfg.train.epochs))

    while True:
        while step < total:
            order = _epoch_order(data.n_train, cfg.seed, epoch, device)
            first = step - epoch * spe
            for b in range(first, spe):
                if step >= total:
                    break
                t0 = time.perf_counter()
                lr, mu = lr_momentum(cfg.optim, epoch, b / spe, cfg.train.epochs)
                apply_lr_momentum(opt, lr, mu)
                idx = order[b * cfg.train.batch_size:(b + 1) * cfg.train.batch_size][rank::world]
                x, y = deficit.apply(data.x_train[idx], data.y_train[idx], idx, epoch, step)
                if cfg.data.augment and x.ndim == 4:
                    x = _augment(x, cfg.seed, step)
                net.train()
                with autocast:
                    out = net(x)
                    loss = loss_fn(out.float(), y)
                value = _mean_over_ranks(loss.detach(), world)
                if not math.isfinite(value) or value > cfg.train.divergence_loss:
                    at = gstep()
                    sink.log_metrics({"diverged/step": float(at), "train/batch_loss": _finite_or_big(value)}, at)
                    summary = {"diverged/step": float(at)}
                    sink.finish("diverged", summary)
                    return RunResult("diverged", at, epoch, summary, level)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                stats.add(value, _correct(out, y, data), len(y))
                epoch_done = (b == spe - 1) or step == total
                ctx = context(lr, mu, epoch + 1 if epoch_done else epoch)
                changed = call_trainers(ctx)
                clock.train_s += time.perf_counter() - t0
                if cfg.train.log_every and step % cfg.train.log_every == 0:
                    batch = {"train/batch_loss": value} if epoch_done else {"train/batch_loss": value, "lr": lr}
                    sink.log_metrics(batch, gstep())   # at an epoch's end, lr comes with the epoch metrics
                if epoch_done:
                    metrics = _epoch_metrics(model, data, loss_fn, stats, epoch, lr)
                    if plan is not None:
                        metrics["train/level"] = float(level)
                    sink.log_metrics(metrics, gstep())
                    stats = _EpochStats()
                    epoch += 1
                call_watchers(ctx, changed, times=epoch_done)
                if step == total:   # before the last report, which a scheduler may answer with "stop"
                    summary = {**_final_summary(model, data, loss_fn, step, world), **clock.final()}
                    if plan is not None:
                        finals.update({f"level/{level}/{k}": v for k, v in summary.items()})
                        logged = {f"level/{level}/{k}": v for k, v in summary.items()}
                        sink.log_metrics(logged if level + 1 < levels else {**summary, **logged}, gstep())
                    else:
                        sink.log_metrics(summary, gstep())
                due_ckpt = (epoch_done and epoch % ckpt_epochs == 0) or step in ckpt_steps or step == total
                if due_ckpt:
                    sink.checkpoint(_state(cfg, level, step, epoch, model, opt, hooks, plan, stats, finals, clock),
                                    gstep(), epoch, "epoch" if epoch_done else "step")
                if epoch_done:
                    sink.epoch_end(epoch, gstep())
                if env.stop_after_step is not None and gstep() >= env.stop_after_step:
                    return RunResult("stopped", gstep(), epoch, level=level)
        if level + 1 >= levels:
            break
        level += 1
        start_level()
        sink.checkpoint(_state(cfg, level, step, epoch, model, opt, hooks, plan, stats, finals, clock),
                        gstep(), epoch, "level")

    if summary is None:             # resumed from the final checkpoint
        summary = {**_final_summary(model, data, loss_fn, step, world), **clock.final()}
        sink.log_metrics(summary, gstep())
    summary = {**summary, **finals}
    sink.finish("finished", summary)
    return RunResult("finished", gstep(), epoch, summary, level)


@contextlib.contextmanager
def trial_settings(cfg: TrialConfig):
    """The process-wide torch settings of one trial, restored afterwards."""
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.get_num_threads(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        torch.use_deterministic_algorithms(cfg.train.deterministic, warn_only=True)
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.set_num_threads(saved[2])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[3], saved[4]


# ------------------------------------------------------------------ helpers
def _check_names(hooks: Sequence[Hook]) -> None:
    """Hook names key the hook states in a checkpoint: one hook per name."""
    names = [h.name for h in hooks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"hook names must be unique, repeated: {twice}")


def _maybe_ddp(model: torch.nn.Module, device: torch.device, distributed: bool):
    """(module to train through, rank, world size). Each rank trains on its
    share batch[rank::world]; DDP averages the gradients."""
    if not distributed:
        return model, 0, 1
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids), dist.get_rank(), dist.get_world_size()


def _mean_over_ranks(loss: torch.Tensor, world: int) -> float:
    """The batch loss every rank agrees on (so all ranks see a divergence)."""
    if world > 1:
        import torch.distributed as dist
        loss = loss.clone()
        dist.all_reduce(loss)
        loss /= world
    return loss.item()


@dataclass
class _EpochStats:
    loss_sum: float = 0.0
    correct: float = 0.0
    count: int = 0

    def add(self, loss: float, correct: float, n: int) -> None:
        self.loss_sum += loss * n
        self.correct += correct
        self.count += n


def is_wall_clock(key: str) -> bool:
    """Metric keys holding wall-clock seconds (`time/*`, `[level/L/]final/time_*`)."""
    return key.startswith("time/") or key.rpartition("/")[2].startswith("time_")


def reproducible(obj):
    """`obj` without its wall-clock parts, to compare runs bit for bit: a list
    of (step, key, value) metrics, a metrics dict, or a checkpoint state."""
    if isinstance(obj, dict):
        return {k: v for k, v in obj.items() if k != "time" and not is_wall_clock(k)}
    return [m for m in obj if not is_wall_clock(m[1])]


def _synced_clock(device: torch.device) -> float:
    """perf_counter after the device's queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@dataclass
class _Clock:
    """Cumulative wall seconds of this trial: `train_s` around the optimizer
    steps (batch, forward, backward, step, training hooks), `probe_s` around
    the probe-hook calls (on CUDA, synchronised around them). Epoch
    evaluation, checkpoints and logging are in neither. Environment, not result: in checkpoints (a resumed trial
    continues the count) but never in a hash."""

    train_s: float = 0.0
    probe_s: float = 0.0

    def metrics(self) -> dict[str, float]:
        return {"time/train_s": self.train_s, "time/probe_s": self.probe_s}

    def final(self) -> dict[str, float]:
        return {"final/time_train_s": self.train_s, "final/time_probe_s": self.probe_s}


def _epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


def _augment(x: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """Random 4-pixel-padded crop and horizontal flip, seeded by the step."""
    g = torch.Generator().manual_seed(seed * 7_368_787 + step)
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=g).tolist()
    dy = torch.randint(0, 9, (n,), generator=g).tolist()
    flip = torch.rand(n, generator=g).tolist()
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    return torch.where(torch.tensor(flip, device=x.device).view(n, 1, 1, 1) < 0.5, out.flip(-1), out)


def _correct(out: torch.Tensor, y: torch.Tensor, data: Dataset) -> float:
    if data.task == "regression":
        return 0.0
    return float((out.argmax(1) == y).sum().item())


def _finite_or_big(value: float) -> float:
    return value if math.isfinite(value) else float("inf")


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn,
             task: str, chunk: int = 1024) -> tuple[float, float]:
    """Mean loss and accuracy in eval mode; restores the model's modes."""
    modes = [m.training for m in model.modules()]
    model.eval()
    loss_sum, correct = 0.0, 0.0
    for i in range(0, len(y), chunk):
        out = model(x[i:i + chunk]).float()
        loss_sum += loss_fn(out, y[i:i + chunk]).item() * len(out)
        if task != "regression":
            correct += (out.argmax(1) == y[i:i + chunk]).sum().item()
    for m, mode in zip(model.modules(), modes):
        m.training = mode
    return loss_sum / len(y), correct / len(y)


def _epoch_metrics(model, data: Dataset, loss_fn, stats: _EpochStats, epoch: int, lr: float) -> dict[str, float]:
    val_loss, val_acc = evaluate(model, data.x_test, data.y_test, loss_fn, data.task)
    out = {"train/loss": stats.loss_sum / stats.count, "train/epoch": float(epoch + 1), "lr": lr,
           "val/loss": val_loss, "val/acc": val_acc}
    if data.task != "regression":
        out["train/acc"] = stats.correct / stats.count
    return out


def _final_summary(model, data: Dataset, loss_fn, step: int, world: int) -> dict[str, float]:
    train_loss, train_acc = evaluate(model, data.x_train, data.y_train, loss_fn, data.task)
    val_loss, val_acc = evaluate(model, data.x_test, data.y_test, loss_fn, data.task)
    return {"final/train_loss": train_loss, "final/train_acc": train_acc,
            "final/val_loss": val_loss, "final/val_acc": val_acc, "final/steps": float(step),
            "final/world_size": float(world)}


@contextlib.contextmanager
def _isolated(model: torch.nn.Module, device: torch.device):
    """Hooks run with every RNG and every module mode restored afterwards."""
    modes = [m.training for m in model.modules()]
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        yield
    random.setstate(py_state)
    np.random.set_state(np_state)
    for m, mode in zip(model.modules(), modes):
        m.training = mode


# -------------------------------------------------------------- checkpoints
def _cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _state(cfg: TrialConfig, level: int, step: int, epoch: int, model, opt, hooks: Sequence[Hook],
           plan: LevelPlan | None, stats: _EpochStats, finals: dict[str, float],
           clock: _Clock) -> dict[str, Any]:
    return _cpu({
        "version": CHECKPOINT_VERSION, "run_hash": cfg.run_hash(), "seed": cfg.seed,
        "level": level, "step": step, "epoch": epoch, "model": model.state_dict(),
        "optimizer": opt.state_dict(), "rng": rng_state(), "hooks": {h.name: hook_state(h) for h in hooks},
        "plan": hook_state(plan) if plan is not None else {}, "level_finals": dict(finals),
        "epoch_stats": [stats.loss_sum, stats.correct, stats.count],
        "time": [clock.train_s, clock.probe_s],
    })


def _restore(state: dict[str, Any], cfg: TrialConfig, model, opt, hooks: Sequence[Hook],
             plan: LevelPlan | None) -> tuple[int, int, int, _EpochStats, dict[str, float]]:
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint version {state.get('version')} != {CHECKPOINT_VERSION}")
    if state["run_hash"] != cfg.run_hash() or state["seed"] != cfg.seed:
        raise ValueError("checkpoint belongs to another trial config (run_hash/seed differ)")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    for h in hooks:
        load_hook_state(h, state["hooks"].get(h.name, {}))
    if plan is not None:
        load_hook_state(plan, state["plan"])
    loss_sum, correct, count = state["epoch_stats"]
    return (state["level"], state["step"], state["epoch"], _EpochStats(loss_sum, correct, count),
            dict(state["level_finals"]))


def rng_state() -> dict[str, Any]:
    """Every global RNG as tensors and plain values (weights_only-loadable)."""
    version, keys, gauss = random.getstate()
    kind, mt, pos, has_gauss, cached = np.random.get_state()
    out = {"torch": torch.get_rng_state(),
           "python": {"version": version, "state": torch.tensor(keys, dtype=torch.int64), "gauss": gauss},
           "numpy": {"kind": kind, "state": torch.from_numpy(mt.astype(np.int64)), "pos": int(pos),
                     "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    py = rng["python"]
    random.setstate((py["version"], tuple(int(k) for k in py["state"].tolist()), py["gauss"]))
    npy = rng["numpy"]
    np.random.set_state((npy["kind"], npy["state"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
