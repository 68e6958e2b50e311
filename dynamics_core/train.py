"""The training loop. Closed to edits: behaviour comes in through hooks.

`run(cfg, sink)` trains one frozen `TrialConfig` and reports to a `Sink`:
per-epoch loss/accuracy, scheduled hook metrics (the probes) at optimizer
`step`s, checkpoints at resumable points, and a final status. Divergence
(non-finite loss, or loss above `train.divergence_loss`) is data: status
`diverged` plus `diverged/step`, never an exception.

Determinism: the data order of epoch e is a permutation drawn from a
generator seeded by (seed, e); augmentation and noise deficits are seeded by
the step; the schedule is a pure function of the epoch. A checkpoint holds
model, optimizer, step, epoch, every global RNG and each hook's state, so
resuming from any checkpoint reproduces an uninterrupted run bit for bit.
"""
from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dynamics_core import models
from dynamics_core.config import TrialConfig
from dynamics_core.data import Dataset, DeficitView, load
from dynamics_core.hooks import Hook, StepContext, hook_state, load_hook_state, merge_metrics
from dynamics_core.measure import default_hooks
from dynamics_core.optim import apply_lr_momentum, lr_momentum, make_optimizer
from dynamics_core.sink import Sink

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class RunEnv:
    """Where and how a trial runs; nothing here changes what it computes."""

    device: str = "auto"                      # overrides train.device unless "auto"
    cache_dir: str = "runs/data"
    checkpoint_every_epochs: int = 1          # 0: only explicit checkpoint_steps
    checkpoint_steps: tuple[int, ...] = ()    # extra resumable points (rewind, deficit ends)
    stop_after_step: int | None = None        # end early, as a crash would (tests)
    distributed: bool = False                 # one DDP rank of an initialised process group


@dataclass
class RunResult:
    status: str                    # finished | diverged | stopped
    step: int
    epoch: int
    summary: dict[str, float] = field(default_factory=dict)


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


def run(cfg: TrialConfig, sink: Sink, env: RunEnv = RunEnv(),
        hooks: Sequence[Hook] | None = None, resume: dict[str, Any] | None = None) -> RunResult:
    device = resolve_device(env.device if env.device != "auto" else cfg.train.device)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    data = load(cfg.data, device, env.cache_dir)
    loss_fn = loss_function(data)
    model = models.build(cfg.model, data.input_shape, data.num_classes,
                         cfg.model.init_seed if cfg.model.init_seed is not None else cfg.seed).to(device)
    init_params = [p.detach().clone() for p in model.parameters()]
    net, rank, world = _maybe_ddp(model, device, env.distributed)
    opt = make_optimizer(cfg.optim, model.parameters())
    if hooks is None:
        hooks = default_hooks(cfg, data)
    deficit = DeficitView(cfg.data.deficit, data.x_train, data.num_classes, cfg.seed)

    spe = steps_per_epoch(data.n_train, cfg.train.batch_size)
    total = spe * cfg.train.epochs if cfg.train.max_steps is None else min(spe * cfg.train.epochs, cfg.train.max_steps)
    hook_steps = {h.name: h.schedule.resolve(total, spe) for h in hooks}
    ckpt_epochs = cfg.train.epochs if env.checkpoint_every_epochs == 0 else env.checkpoint_every_epochs
    ckpt_steps = set(env.checkpoint_steps) | {e * spe for e in boundary_epochs(cfg)}

    step, epoch = 0, 0
    summary: dict[str, float] | None = None
    stats = _EpochStats()
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    if resume is not None:
        step, epoch, stats = _restore(resume, cfg, model, opt, hooks, device)
    if _noise_is_off(cfg, epoch):
        _set_preact_noise(model, 0.0)

    def call_hooks(lr: float, mu: float) -> None:
        due = [h for h in hooks if step in hook_steps[h.name]] if rank == 0 else []
        if not due:
            return
        ctx = StepContext(step=step, epoch=epoch, model=model, loss_fn=loss_fn, data=data, lr=lr,
                          momentum=mu, batch_size=cfg.train.batch_size, init_params=init_params,
                          log_artifact=lambda name, value: sink.log_artifact(name, value, step))
        metrics: dict[str, float] = {}
        for hook in due:
            with _isolated(model, device):
                merge_metrics(metrics, hook(ctx), hook.name)
        if metrics:
            sink.log_metrics(metrics, step)

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if cfg.train.bf16 and device.type == "cuda" else contextlib.nullcontext())
    lr, mu = lr_momentum(cfg.optim, epoch, 0.0, cfg.train.epochs)
    if step == 0:
        call_hooks(lr, mu)

    while step < total:
        order = _epoch_order(data.n_train, cfg.seed, epoch, device)
        first = step - epoch * spe
        for b in range(first, spe):
            if step >= total:
                break
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
                sink.log_metrics({"diverged/step": float(step), "train/batch_loss": _finite_or_big(value)}, step)
                summary = {"diverged/step": float(step)}
                sink.finish("diverged", summary)
                return RunResult("diverged", step, epoch, summary)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            stats.add(value, _correct(out, y, data), len(y))
            epoch_done = (b == spe - 1) or step == total
            if cfg.train.log_every and step % cfg.train.log_every == 0:
                batch = {"train/batch_loss": value} if epoch_done else {"train/batch_loss": value, "lr": lr}
                sink.log_metrics(batch, step)   # at an epoch's end, lr comes with the epoch metrics
            if epoch_done:
                sink.log_metrics(_epoch_metrics(model, data, loss_fn, stats, epoch, lr), step)
                stats = _EpochStats()
                epoch += 1
                if _noise_is_off(cfg, epoch):
                    _set_preact_noise(model, 0.0)
            call_hooks(lr, mu)
            if step == total:   # before the last report, which a scheduler may answer with "stop"
                summary = _final_summary(model, data, loss_fn, step, world)
                sink.log_metrics(summary, step)
            due_ckpt = (epoch_done and epoch % ckpt_epochs == 0) or step in ckpt_steps or step == total
            if due_ckpt:
                sink.checkpoint(_state(cfg, step, epoch, model, opt, hooks, stats), step, epoch,
                                "epoch" if epoch_done else "step")
            if epoch_done:
                sink.epoch_end(epoch, step)
            if env.stop_after_step is not None and step >= env.stop_after_step:
                return RunResult("stopped", step, epoch)

    if summary is None:             # resumed from the final checkpoint
        summary = _final_summary(model, data, loss_fn, step, world)
        sink.log_metrics(summary, step)
    sink.finish("finished", summary)
    return RunResult("finished", step, epoch, summary)


# ------------------------------------------------------------------ helpers
def boundary_epochs(cfg: TrialConfig) -> set[int]:
    """Epochs where the training problem changes: always resumable points."""
    d, s = cfg.data.deficit, cfg.optim.schedule
    out = {d.start_epoch, d.end_epoch} if d.kind != "none" else set()
    if s.kind == "two_stage":
        out.add(s.stage1_epochs)
    if s.noise_off_epoch is not None:
        out.add(s.noise_off_epoch)
    return {e for e in out if 0 < e < cfg.train.epochs}


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
    if data.x_patch_only is not None:
        out["patch/acc"] = evaluate(model, data.x_patch_only, data.y_train, loss_fn, data.task)[1]
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


def _noise_is_off(cfg: TrialConfig, epoch: int) -> bool:
    off = cfg.optim.schedule.noise_off_epoch
    return off is not None and epoch >= off


def _set_preact_noise(model: torch.nn.Module, std: float) -> None:
    if hasattr(model, "set_preact_noise"):
        model.set_preact_noise(std)


# -------------------------------------------------------------- checkpoints
def _cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _state(cfg: TrialConfig, step: int, epoch: int, model, opt, hooks: Sequence[Hook],
           stats: _EpochStats) -> dict[str, Any]:
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return _cpu({
        "version": CHECKPOINT_VERSION, "run_hash": cfg.run_hash(), "seed": cfg.seed,
        "step": step, "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
        "rng": rng, "hooks": {h.name: hook_state(h) for h in hooks},
        "epoch_stats": [stats.loss_sum, stats.correct, stats.count],
    })


def _restore(state: dict[str, Any], cfg: TrialConfig, model, opt, hooks: Sequence[Hook],
             device: torch.device) -> tuple[int, int, _EpochStats]:
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint version {state.get('version')} != {CHECKPOINT_VERSION}")
    if state["run_hash"] != cfg.run_hash() or state["seed"] != cfg.seed:
        raise ValueError("checkpoint belongs to another trial config (run_hash/seed differ)")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    for h in hooks:
        load_hook_state(h, state["hooks"].get(h.name, {}))
    loss_sum, correct, count = state["epoch_stats"]
    return state["step"], state["epoch"], _EpochStats(loss_sum, correct, count)
