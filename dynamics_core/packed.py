"""Packed trials: K small models of one architecture trained at once.

A training-dynamics study is hundreds of small trials, and a small model's
kernels are so small that a solo run spends much of its time dispatching
them. `run_packed(cfgs, sinks)` trains K trial configs of one architecture
and batch size (what they may differ in: `pack_rules.MAY_DIFFER` — seed,
learning rate, momentum, weight decay, schedule, length, deficit, IMP
ablation) as one stacked model: the members' parameters are stacked
(`torch.func.stack_module_state`) and one `vmap` over `grad` of the
functional model computes every member's gradient in one pass.

Each member is still its own trial, exactly as `dynamics_core.train.run`
would train it alone: its own init (from its seed), its own batch order
(`_epoch_order` of its seed and the epoch), its own schedule and deficit
(its own `DeficitView`, applied to its batch as the solo loop applies it),
and its own sink, which receives the same metrics at the same steps —
`train/loss`, `train/acc`, `val/loss`, `val/acc`, `lr`, `train/epoch` at
epoch ends, `train/batch_loss` every `train.log_every` steps, `final/*`,
scheduled hook metrics, `diverged/step` — then `finish(status, summary)`.
A member leaves the stack at its own last step (having finished as alone)
or at the step it diverges (its last weights are kept for
`member_module`); the others go on undisturbed.

IMP levels (`pruning.levels`, `dynamics_core.imp`): the members of an IMP
pack share the level length and count, so they train each level in step,
with the solo loop's level semantics (global step L·(T+1) + step,
`train/level`, `level/<L>/final/...`, `imp/*` at each level start). Each
member has its own `IMP` plan: at a level start it runs on the member's
unstacked module, whose weights are written back into the stack; the
optimizer state is fresh; after every step the stacked masks (K, *shape)
zero the pruned weights and their momentum, as `MaskEnforcer` does; the
plan's hook runs on an unstacked copy where it does more than that (the
snapshot at the rewind step, the mask artifacts).

Equality with solo training: the update is the solo optimizer's arithmetic
(see `stacked_sgd`, `stacked_adam`) and the batch losses are computed
member by member as the solo loop computes them; the forward and backward
are vmapped kernels — batched GEMMs for linear layers, one grouped
convolution for conv layers, a decomposed MSE — which need not round like
the solo kernels. On CPU an MLP classifier's members are bit for bit its
solo runs (weights, every metric, the divergence step); conv members and
regression (MSE) members agree to float32 rounding at each step, and like
any rounding difference it grows where training is chaotic (large learning
rates). BatchNorm trains on each member's batch statistics and updates its
own running statistics (stacked buffers, updated in place); evaluation uses
the running statistics, as `train.evaluate` does in eval mode; both run the
solo BatchNorm kernels over all members (`stacked_bn`), so the MLP is bit
for bit with BatchNorm too. Pre-activation noise: a solo run draws it from
the global RNG, seeded with its seed, and draws nothing else from it (probes
run in eval mode under `fork_rng`); each member draws the same numbers from
its own generator, seeded alike, in the solo's order and shapes, outside
vmap, and its vmapped forward adds them (`PreactNoise.draw`), until
`optim.schedule.noise_off_epoch` as `knobs.NoiseSwitch` switches it off.
`train.bf16` on CUDA runs the forward under bfloat16 autocast, as the solo
loop does (on CPU both ignore it). The tests check these
(tests/test_packed.py, tests/test_packed_kinds.py,
tests/test_packed_science.py). CUDA is unmeasured.

Augmentation (`data.augment`, images): each member's random crop and flip,
seeded by its seed and the step, as the solo loop draws them.

Not supported (`pack_compatible` names the field): dropout, DDP; members of different batch size, architecture, data set, data patch,
Adam betas or IMP level structure.
Probes run at each member's own scheduled steps, so they cannot change
training: per member on an unstacked copy (`member_module`), or, for probe
families that batch (`ProbeFamily.batch_key`: the loss probe and the
timeline), as one call over the members due at the step (`MemberStack`: one
vmapped forward, or one vmapped gradient of each member's mean loss). Their
numbers are the solo probe's as the training's are: bit for bit for an MLP
on CPU, to float32 rounding for conv members.

Checkpoints: given a `pack_sink`, the pack hands it one checkpoint for all
members at the epoch ends `env.checkpoint_every_epochs` names (0: only the
last), at every member's boundary epochs, at the step any member's level
ends (after a member that finished left) and right after a level started —
the level, the stacked weights, buffers and optimizer state (SGD's
momentum buffers, Adam's moments and step counts) and noise generators of
the members still training, the last weights and results of those that
ended, each member's hook and IMP plan states, level summaries, epoch statistics and clock.
`run_packed(..., resume=state)` goes on from it bit for bit (but for the
wall-clock seconds); a member that ended before the checkpoint is not
trained or reported to again.

Wall-clock seconds per member, as `train.run` logs them (`time/train_s`,
`time/probe_s` at epoch ends, `final/time_*` in the summary): `probe_s` is
the member's own probe time (of a batched probe call, its even share);
`train_s` is its share of the pack's training
time, each step's seconds split evenly over the members trained in it, so
the members' `train_s` add up to the pack's.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from typing import Any, NamedTuple, Protocol, Sequence

import torch
from torch.func import functional_call, grad, stack_module_state, vmap

from dynamics_core import models
from dynamics_core.config import TrialConfig
from dynamics_core.data import Dataset, DeficitView, load
from dynamics_core.hooks import (Hook, LevelStart, StepContext, changes_training, hook_state, load_hook_state,
                                 merge_metrics)
from dynamics_core.imp import IMP, imp_plan
from dynamics_core.measure import default_hooks
from dynamics_core.models._layers import PreactNoise
from dynamics_core.optim import lr_momentum, make_optimizer
from dynamics_core.pack_rules import pack_compatible
from dynamics_core.sink import Sink
from dynamics_core.stacked_adam import StackedAdam
from dynamics_core.stacked_bn import vmappable
from dynamics_core.stacked_sgd import StackedSGD
from dynamics_core.train import (RunEnv, RunResult, _augment, _cpu, _epoch_order, _isolated, _synced_clock,
                                 loss_function, resolve_device, steps_per_epoch, trial_settings)

PACK_CHECKPOINT_VERSION = 2

class Pack:
    """K members of one architecture, stacked: parameters (K, *shape) on `device`."""

    def __init__(self, cfgs: Sequence[TrialConfig], data: Dataset, device: torch.device):
        why = pack_compatible(cfgs)
        if why is not None:
            raise ValueError(why)
        self.cfgs, self.data, self.device = list(cfgs), data, device
        members = [models.build(c.model, data.input_shape, data.num_classes,
                                c.model.init_seed if c.model.init_seed is not None else c.seed).to(device)
                   for c in cfgs]
        self.template = copy.deepcopy(members[0])
        self.init_params = [[p.detach().clone() for p in m.parameters()] for m in members]
        params, buffers = stack_module_state(members)
        self.params = {k: v.detach() for k, v in params.items()}
        self.buffers = buffers
        self.alive = list(range(len(cfgs)))          # member index of each stacked row
        self.frozen: dict[int, dict[str, torch.Tensor]] = {}   # weights of dropped members
        optim = cfgs[0].optim
        self.opt = (StackedAdam(self.params, optim.betas) if optim.name == "adam"
                    else StackedSGD(self.params, nesterov=optim.nesterov))
        self.loss_fn = loss_function(data)
        base = vmappable(copy.deepcopy(members[0]).to("meta").train())   # batch statistics, updating the buffers
        base_eval = copy.deepcopy(base).eval()                    # each member's running statistics
        self._noise_std, self._noise_off = cfgs[0].model.preact_noise, optim.schedule.noise_off_epoch
        self._noise_layers = [m for m in base.modules() if isinstance(m, PreactNoise)]
        self._noise_draws = _noise_draws(base, data) if self._noise_std > 0 else []
        # each member's pre-activation noise: a generator seeded as its solo run seeds the global RNG
        self.noise_rng = [torch.Generator(device).manual_seed(c.seed) for c in cfgs] if self._noise_std > 0 else []

        # train.bf16 on CUDA: the forward under bfloat16 autocast as in the solo loop (evaluation and probes in float32)
        bf16 = cfgs[0].train.bf16 and device.type == "cuda"
        autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

        def member_loss(p, b, x, y, noise):
            given = iter(noise)
            for layer in self._noise_layers:
                layer.draw = lambda like: next(given)
            with autocast():
                out = functional_call(base, (p, b), (x,)).float()
                loss = self.loss_fn(out, y)
            return loss, out.detach()

        self._grad = vmap(grad(member_loss, has_aux=True))
        self._forward = vmap(lambda p, b, x: functional_call(base_eval, (p, b), (x,)).float(),
                             in_dims=(0, 0, None))
        # each member's gradient of its mean loss on shared data, in eval mode as a probe takes it
        self._mean_grad = vmap(grad(lambda p, b, x, y: self.loss_fn(functional_call(base_eval, (p, b), (x,)), y)),
                               in_dims=(0, 0, None, None))

    # ------------------------------------------------------------- members
    def member_module(self, i: int) -> torch.nn.Module:
        """Member i as a normal module (a copy: changing it changes nothing here)."""
        if i in self.frozen:
            state = self.frozen[i]
        else:
            row = self.alive.index(i)
            state = {k: v[row] for k, v in {**self.params, **self.buffers}.items()}
        module = copy.deepcopy(self.template)
        module.load_state_dict(state)
        return module

    def drop(self, members: Sequence[int]) -> None:
        """Stop training `members`: keep their current weights, unstack the rest."""
        for i in members:
            row = self.alive.index(i)
            self.frozen[i] = {k: v[row].clone() for k, v in {**self.params, **self.buffers}.items()}
        keep = [r for r, i in enumerate(self.alive) if i not in members]
        rows = torch.tensor(keep, dtype=torch.long, device=self.device)
        for k in self.params:
            self.params[k] = self.params[k].index_select(0, rows)
        for k in self.buffers:
            self.buffers[k] = self.buffers[k].index_select(0, rows)
        self.opt.keep(rows)
        self.alive = [self.alive[r] for r in keep]

    # ------------------------------------------------------------ training
    def gradients(self, x: torch.Tensor, y: torch.Tensor, epoch: int):
        """Per-member gradients, batch losses and correct counts for batches x[r], y[r]
        at a step of `epoch` (which says whether pre-activation noise is on).

        The losses are recomputed from the logits member by member, as the solo
        loop computes them: under vmap the mean of the loss is summed in another
        order and can differ in the last bit (the gradients do not)."""
        noise = self._noise(len(x[0]), epoch)
        for layer in self._noise_layers:
            layer.std = self._noise_std if noise else 0.0
        grads, out = self._grad(self.params, self.buffers, x, y, noise)
        loss = torch.stack([self.loss_fn(out[r], y[r]) for r in range(len(out))])
        correct = ((out.argmax(2) == y).sum(1) if self.data.task != "regression"
                   else torch.zeros_like(loss))
        return grads, loss, correct

    def _noise(self, batch: int, epoch: int) -> tuple[torch.Tensor, ...]:
        """Each alive member's pre-activation noise for one step, (K, batch, *shape)
        per draw: drawn from the member's own generator in the order and shapes
        its solo run draws it from the global RNG; none from
        `optim.schedule.noise_off_epoch` on (`knobs.NoiseSwitch`)."""
        if self._noise_std == 0 or (self._noise_off is not None and epoch >= self._noise_off):
            return ()
        return tuple(torch.stack([torch.empty((batch, *shape), dtype=dtype, device=self.device)
                                  .normal_(generator=self.noise_rng[k]) for k in self.alive])
                     for shape, dtype in self._noise_draws)

    def noise_rng_state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.noise_rng]

    def load_noise_rng_state(self, states: Sequence[torch.Tensor]) -> None:
        for g, s in zip(self.noise_rng, states):
            g.set_state(s)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 1024) -> list[tuple[float, float]]:
        """(mean loss, accuracy) per alive member, summed like `train.evaluate`."""
        n = len(self.alive)
        loss_sum, correct = [0.0] * n, [0.0] * n
        for i in range(0, len(y), chunk):
            out = self._forward(self.params, self.buffers, x[i:i + chunk])
            yc = y[i:i + chunk]
            losses = torch.stack([self.loss_fn(out[r], yc) for r in range(n)])
            hits = ((out.argmax(2) == yc).sum(1) if self.data.task != "regression"
                    else torch.zeros(n, device=out.device))
            for r, (l, c) in enumerate(zip(losses.tolist(), hits.tolist())):
                loss_sum[r] += l * len(yc)
                correct[r] += c
        return [(s / len(y), c / len(y)) for s, c in zip(loss_sum, correct)]


class MemberStack:
    """Members of a pack (alive, in the given order) as one stacked model, for
    probe hooks batched over them (`hooks.StackedMembers`): eval mode (each
    member's running statistics), float32."""

    def __init__(self, pack: Pack, members: Sequence[int]):
        self._pack = pack
        rows = [pack.alive.index(k) for k in members]
        if rows == list(range(len(pack.alive))):
            self.params, self.buffers = dict(pack.params), dict(pack.buffers)
        else:
            index = torch.tensor(rows, dtype=torch.long, device=pack.device)
            self.params = {n: v.index_select(0, index) for n, v in pack.params.items()}
            self.buffers = {n: v.index_select(0, index) for n, v in pack.buffers.items()}
        self.init_params = [pack.init_params[k] for k in members]
        self.loss_fn = pack.loss_fn

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._pack._forward(self.params, self.buffers, x)

    def mean_gradients(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._pack._mean_grad(self.params, self.buffers, x, y)


def _batch_key(hook: Hook) -> Any:
    """The hook's `batch_key()` (None: it runs per member; a training hook never batches)."""
    key = getattr(hook, "batch_key", None)
    return key() if key is not None and not changes_training(hook) else None


def _noise_draws(model: torch.nn.Module, data: Dataset) -> list[tuple[torch.Size, torch.dtype]]:
    """(shape per example, dtype) of each pre-activation noise draw of a
    training forward of `model` (on the meta device), in the order drawn."""
    drawn = []

    def record(like: torch.Tensor) -> torch.Tensor:
        drawn.append((like.shape[1:], like.dtype))
        return torch.zeros_like(like)

    probe = copy.deepcopy(model)
    for layer in probe.modules():
        if isinstance(layer, PreactNoise):
            layer.draw = record
    with torch.no_grad():
        probe(torch.zeros((2, *data.input_shape), dtype=data.x_train.dtype, device="meta"))
    return drawn


class PackedRun(NamedTuple):
    results: list[RunResult]       # one per member, in the order of the configs
    pack: Pack                     # the trained weights: pack.member_module(k)


class PackSink(Protocol):
    """Where a pack's own records go (its members' go to their sinks)."""

    def checkpoint(self, state: dict[str, Any], step: int, epoch: int, reason: str) -> None:
        """The whole pack's state at a resumable point — an epoch end, a boundary
        epoch, a member's or a level's end, a level's start — after its members'
        metrics; `step` is the global step (levels: L·(T+1) + step)."""

    def epoch_end(self, epoch: int, step: int) -> None:
        """An epoch of the pack finished (after any checkpoint and every member's `epoch_end`)."""


def run_packed(cfgs: Sequence[TrialConfig], sinks: Sequence[Sink], env: RunEnv = RunEnv(),
               hooks: Sequence[Sequence[Hook]] | None = None, resume: dict[str, Any] | None = None,
               pack_sink: PackSink | None = None) -> PackedRun:
    """Train `cfgs` as one pack, member k reporting to `sinks[k]` (and running
    `hooks[k]`; None: each member's default probe round, `measure.default_hooks`).
    Checkpoints go to `pack_sink` (none without one) at the epoch ends
    `env.checkpoint_every_epochs` names; `resume` is such a checkpoint.
    Process-wide torch settings are set for the pack and restored after it
    (`trial_settings`)."""
    with trial_settings(cfgs[0]):
        return _run_packed(cfgs, sinks, env, hooks, resume, pack_sink)


def _run_packed(cfgs, sinks, env, hooks, resume, pack_sink) -> PackedRun:
    if len(sinks) != len(cfgs) or (hooks is not None and len(hooks) != len(cfgs)):
        raise ValueError("run_packed needs one sink (and one hook list) per trial config")
    why = pack_compatible(cfgs) or ("RunEnv.distributed: a pack trains in one process" if env.distributed else None)
    if why is not None:
        raise ValueError(why)
    first = cfgs[0]
    device = resolve_device(env.device if env.device != "auto" else first.train.device)
    data = load(first.data, device, env.cache_dir)
    pack = Pack(cfgs, data, device)
    if hooks is None:
        hooks = [default_hooks(c, data) for c in cfgs]
    tc = first.train                                # batch size and logging are shared
    spe = steps_per_epoch(data.n_train, tc.batch_size)
    totals = [spe * c.train.epochs if c.train.max_steps is None else min(spe * c.train.epochs, c.train.max_steps)
              for c in cfgs]                         # steps of one level, per member
    hook_steps = [{h.name: h.schedule.resolve(t, spe) for h in hs} for hs, t in zip(hooks, totals)]
    deficits = [DeficitView(c.data.deficit, data.x_train, data.num_classes, c.seed) for c in cfgs]
    augment_seeds = [c.seed if c.data.augment else None for c in cfgs]
    plans = [imp_plan(c) for c in cfgs]             # all None, or one per member (pruning.levels is shared)
    levels = plans[0].levels if plans[0] is not None else 1
    ckpt_epochs = max(c.train.epochs for c in cfgs) if env.checkpoint_every_epochs == 0 else env.checkpoint_every_epochs
    ckpt_steps = {e * spe for c in cfgs for e in c.boundary_epochs()}
    results: dict[int, RunResult] = {}
    finals: list[dict[str, float]] = [{} for _ in cfgs]   # level/<L>/final/... of the levels done
    stats = [[0.0, 0.0, 0] for _ in cfgs]           # loss·n, correct, n of the epoch so far
    clocks = [[0.0, 0.0] for _ in cfgs]             # train_s, probe_s
    level, step, epoch = 0, 0, 0
    if resume is not None:
        level, step, epoch = _restore(resume, cfgs, pack, hooks, plans, results, finals, stats, clocks)
    pruned = _pruned(pack, plans)

    def gstep() -> int:             # the global step of a level (an IMP pack's members share their length)
        return level * (totals[0] + 1) + step

    def schedule(k: int, frac: float) -> tuple[float, float]:   # (lr, momentum) as the solo loop sets them
        return lr_momentum(cfgs[k].optim, epoch, frac, cfgs[k].train.epochs)

    def update_momentum(k: int) -> float:   # a nesterov param group keeps its momentum (optim.py)
        opt = cfgs[k].optim
        return opt.momentum if opt.nesterov else sched[k][1]

    def context(k: int, lr: float, mu: float, epoch_now: int, model: torch.nn.Module) -> StepContext:
        at = gstep()
        return StepContext(step=at, epoch=epoch_now, model=model, loss_fn=pack.loss_fn, data=data, lr=lr,
                           momentum=mu, batch_size=tc.batch_size, init_params=pack.init_params[k],
                           log_artifact=lambda name, value: sinks[k].log_artifact(name, value, at),
                           level=level, level_step=step)

    def call_hooks(calls: dict[int, tuple[float, float, int, dict[str, float], bool]]) -> None:
        """The hooks due at this step of each member in `calls` (member -> lr,
        momentum, epoch, metrics so far, whether to add its clocks), then its
        metrics logged. Probe hooks that batch (`batch_key`) run as one call
        per key over the members they are due for; the others run on the
        member's unstacked copy; each member's metrics merge in its hooks' order."""
        due = {k: [h for h in hooks[k] if step in hook_steps[k][h.name]] for k in calls}
        groups: dict[Any, list[tuple[int, Hook]]] = {}
        for k, hs in due.items():
            for h in hs:
                key = _batch_key(h)
                if key is not None:
                    groups.setdefault(key, []).append((k, h))
        batched: dict[tuple[int, str], dict[str, float] | None] = {}
        for pairs in groups.values():
            t0 = _synced_clock(device)
            with _isolated(pack.template, device):     # every RNG restored (the template is not used)
                values = type(pairs[0][1]).batched([h for _, h in pairs], MemberStack(pack, [k for k, _ in pairs]))
            share = (_synced_clock(device) - t0) / len(pairs)
            for (k, h), v in zip(pairs, values):
                batched[k, h.name] = v
                clocks[k][1] += share
        for k, (lr, mu, epoch_now, metrics, times) in calls.items():
            metrics, ctx = dict(metrics), None
            for hook in due[k]:
                if (k, hook.name) in batched:
                    merge_metrics(metrics, batched[k, hook.name], hook.name)
                    continue
                t0 = _synced_clock(device)
                ctx = ctx or context(k, lr, mu, epoch_now, pack.member_module(k))
                with _isolated(ctx.model, device):
                    merge_metrics(metrics, hook(ctx), hook.name)
                clocks[k][1] += _synced_clock(device) - t0
            if times:
                metrics.update({"time/train_s": clocks[k][0], "time/probe_s": clocks[k][1]})
            if metrics:
                sinks[k].log_metrics(metrics, gstep())

    def call_plan(k: int, lr: float, mu: float) -> None:
        """The plan's training hook where it does more than hold the masks (which
        `_enforce` does on the stack): the snapshot at the rewind step of level 0
        and the mask artifacts at a level's first step."""
        plan = plans[k]
        if plan is not None and (step == plan.start_step(level) or (level == 0 and step == plan.cfg.rewind_step)):
            with torch.no_grad():
                plan(context(k, lr, mu, epoch, pack.member_module(k)))

    def start_level() -> None:
        """A level begins, as in `train.run`: each member's plan sets its weights
        and masks, a fresh optimizer, then every hook due at the start step."""
        nonlocal step, epoch, pruned
        metrics: dict[int, dict[str, float]] = {}
        for k in pack.alive:
            start = LevelStart()
            if plans[k] is not None:
                model = pack.member_module(k)
                with torch.no_grad():
                    plans[k].on_level_start(level, model, make_optimizer(cfgs[k].optim, model.parameters()), start)
                _set_member(pack, k, model)
            if not 0 <= start.start_step < totals[k]:
                raise ValueError(f"level {level} start_step {start.start_step} is not in [0, {totals[k]})")
            step, metrics[k], stats[k] = start.start_step, start.metrics, [0.0, 0.0, 0]
        epoch, pruned = step // spe, _pruned(pack, plans)
        pack.opt.reset()
        calls = {}
        for k in pack.alive:
            lr, mu = schedule(k, (step - epoch * spe) / spe)
            call_plan(k, lr, mu)
            calls[k] = (lr, mu, epoch, metrics[k], False)
        call_hooks(calls)

    for k in pack.alive:        # IMP.start: reinit ablations build fresh models
        if plans[k] is not None:
            plans[k].start(context(k, *schedule(k, 0.0), epoch, pack.member_module(k)))
    if resume is None:
        start_level()
    while True:
        while pack.alive and step < max(totals[k] for k in pack.alive):
            orders = {k: _epoch_order(data.n_train, cfgs[k].seed, epoch, device) for k in pack.alive}
            for b in range(step - epoch * spe, spe):
                if not pack.alive or step >= max(totals[k] for k in pack.alive):
                    break
                t0 = time.perf_counter()
                sched = {k: schedule(k, b / spe) for k in pack.alive}
                idx = torch.stack([orders[k][b * tc.batch_size:(b + 1) * tc.batch_size] for k in pack.alive])
                grads, loss, correct = pack.gradients(*_batch(data, deficits, augment_seeds, pack.alive, idx, epoch, step), epoch)
                values, hits = torch.stack([loss, correct.to(loss.dtype)]).tolist()
                gone = [k for k, v in zip(pack.alive, values)
                        if not math.isfinite(v) or v > cfgs[k].train.divergence_loss]
                for k, v in zip(pack.alive, values):
                    if k in gone:
                        summary = {"diverged/step": float(gstep())}
                        sinks[k].log_metrics({"diverged/step": float(gstep()),
                                              "train/batch_loss": v if math.isfinite(v) else float("inf")}, gstep())
                        sinks[k].finish("diverged", summary)
                        results[k] = RunResult("diverged", gstep(), epoch, summary, level)
                if gone:
                    rows = [r for r, k in enumerate(pack.alive) if k not in gone]
                    keep = torch.tensor(rows, dtype=torch.long, device=device)
                    grads = {n: g.index_select(0, keep) for n, g in grads.items()}
                    values, hits = [values[r] for r in rows], [hits[r] for r in rows]
                    pack.drop(gone)
                    pruned = _pruned(pack, plans)
                    if not pack.alive:
                        break
                pack.opt.step(grads, [sched[k][0] for k in pack.alive], [update_momentum(k) for k in pack.alive],
                              [cfgs[k].optim.weight_decay for k in pack.alive])
                _enforce(pack, pruned)
                step += 1
                n = len(idx[0])
                for k, v, c in zip(pack.alive, values, hits):
                    s = stats[k]
                    s[0], s[1], s[2] = s[0] + v * n, s[1] + c, s[2] + n
                for k in pack.alive:
                    call_plan(k, *sched[k])
                share = (_synced_clock(device) - t0) / len(pack.alive)
                for k in pack.alive:
                    clocks[k][0] += share
                done = {k: b == spe - 1 or step == totals[k] for k in pack.alive}   # the member's epoch ended
                pack_done = all(done.values())                                     # the pack's epoch ended
                ended = [k for k in pack.alive if step == totals[k]]               # the member's level ended
                if tc.log_every and step % tc.log_every == 0:
                    for k, v in zip(pack.alive, values):
                        batch = {"train/batch_loss": v} if done[k] else {"train/batch_loss": v, "lr": sched[k][0]}
                        sinks[k].log_metrics(batch, gstep())
                _log_epoch(pack, sinks, stats, [k for k in pack.alive if done[k]], epoch, sched, gstep(),
                           level if plans[0] is not None else None)
                call_hooks({k: (*sched[k], epoch + 1 if done[k] else epoch, {}, done[k]) for k in pack.alive})
                summaries = _log_final(pack, sinks, ended, step, gstep(), clocks, level, levels, finals,
                                       plans[0] is not None)
                leaving = ended if level + 1 == levels else []      # finished: they leave the stack
                for k in leaving:
                    sinks[k].epoch_end(epoch + 1, gstep())
                    results[k] = RunResult("finished", gstep(), epoch + 1, {**summaries[k], **finals[k]}, level)
                    sinks[k].finish("finished", results[k].summary)
                if leaving:
                    pack.drop(leaving)
                    pruned = _pruned(pack, plans)
                if pack_done:
                    epoch += 1
                due_ckpt = (pack_done and epoch % ckpt_epochs == 0) or step in ckpt_steps or bool(ended)
                if pack_sink is not None and due_ckpt:
                    pack_sink.checkpoint(_state(cfgs, pack, hooks, plans, level, step, epoch, results, finals,
                                                stats, clocks), gstep(), epoch, "epoch" if pack_done else "step")
                if pack_done:
                    for k in pack.alive:
                        sinks[k].epoch_end(epoch, gstep())
                    if pack_sink is not None:
                        pack_sink.epoch_end(epoch, gstep())
                if env.stop_after_step is not None and gstep() >= env.stop_after_step:
                    for k in pack.alive:
                        results[k] = RunResult("stopped", gstep(), epoch, level=level)
                    return PackedRun([results[k] for k in range(len(cfgs))], pack)
        if not pack.alive or level + 1 >= levels:
            break
        level += 1
        start_level()
        if pack_sink is not None:
            pack_sink.checkpoint(_state(cfgs, pack, hooks, plans, level, step, epoch, results, finals, stats, clocks),
                                 gstep(), epoch, "level")
    return PackedRun([results[k] for k in range(len(cfgs))], pack)


def _batch(data: Dataset, deficits: Sequence[DeficitView], seeds: Sequence[int | None], members: Sequence[int],
           idx: torch.Tensor, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The members' batches (K, B, ...), each as its solo run draws it: its
    deficit applied, then (`seeds[k]`: its seed when `data.augment` is on) its
    random crop and flip for images."""
    augment = seeds[members[0]] is not None and data.x_train.ndim == 4
    if not augment and not any(deficits[k].active(epoch) for k in members):
        return data.x_train[idx], data.y_train[idx]
    xs, ys = [], []
    for k, i in zip(members, idx):
        x, y = deficits[k].apply(data.x_train[i], data.y_train[i], i, epoch, step)
        xs.append(_augment(x, seeds[k], step) if augment else x)
        ys.append(y)
    return torch.stack(xs), torch.stack(ys)


def _set_member(pack: Pack, k: int, module: torch.nn.Module) -> None:
    """Write the weights and buffers of `module` into member k's stacked row."""
    row, state = pack.alive.index(k), module.state_dict()
    with torch.no_grad():
        for name, stacked in {**pack.params, **pack.buffers}.items():
            stacked[row].copy_(state[name])


def _pruned(pack: Pack, plans: Sequence[IMP | None]) -> dict[str, torch.Tensor]:
    """The pruned positions (K, *shape) of the training members' IMP masks ({} without IMP)."""
    if not pack.alive or plans[pack.alive[0]] is None:
        return {}
    names = plans[pack.alive[0]].masks
    return {n: torch.stack([~plans[k].masks[n] for k in pack.alive]).to(pack.device) for n in names}


@torch.no_grad()
def _enforce(pack: Pack, pruned: dict[str, torch.Tensor]) -> None:
    """`MaskEnforcer` on the stack: pruned weights and their momentum exactly zero."""
    for name, where in pruned.items():
        pack.params[name].masked_fill_(where, 0.0)
        for state in pack.opt.state_like(name):
            state.masked_fill_(where, 0.0)


def _log_epoch(pack: Pack, sinks: Sequence[Sink], stats: list[list[float]], members: Sequence[int], epoch: int,
               sched: dict[int, tuple[float, float]], step: int, level: int | None) -> None:
    """The epoch metrics of `members` (`train/level` too in an IMP pack)."""
    if not members:
        return
    data = pack.data
    for k, (val_loss, val_acc) in zip(pack.alive, pack.evaluate(data.x_test, data.y_test)):
        if k not in members:
            continue
        loss_sum, correct, count = stats[k]
        out = {"train/loss": loss_sum / count, "train/epoch": float(epoch + 1), "lr": sched[k][0],
               "val/loss": val_loss, "val/acc": val_acc}
        if data.task != "regression":
            out["train/acc"] = correct / count
        if level is not None:
            out["train/level"] = float(level)
        sinks[k].log_metrics(out, step)
        stats[k] = [0.0, 0.0, 0]


def _log_final(pack: Pack, sinks: Sequence[Sink], members: Sequence[int], step: int, at: int,
               clocks: list[list[float]], level: int, levels: int, finals: list[dict[str, float]],
               imp: bool) -> dict[int, dict[str, float]]:
    """The `final/*` summary of each of `members`, whose level ended: logged as
    `train.run` logs it (an IMP pack: `level/<L>/final/...`, at the last level
    with the plain keys), and kept in `finals`."""
    if not members:
        return {}
    data = pack.data
    train = pack.evaluate(data.x_train, data.y_train)
    val = pack.evaluate(data.x_test, data.y_test)
    summaries = {}
    for k, (tl, ta), (vl, va) in zip(pack.alive, train, val):
        if k not in members:
            continue
        summary = {"final/train_loss": tl, "final/train_acc": ta, "final/val_loss": vl,
                   "final/val_acc": va, "final/steps": float(step), "final/world_size": 1.0,
                   "final/time_train_s": clocks[k][0], "final/time_probe_s": clocks[k][1]}
        if imp:
            logged = {f"level/{level}/{key}": v for key, v in summary.items()}
            finals[k].update(logged)
            sinks[k].log_metrics(logged if level + 1 < levels else {**summary, **logged}, at)
        else:
            sinks[k].log_metrics(summary, at)
        summaries[k] = summary
    return summaries


# -------------------------------------------------------------- checkpoints
def _state(cfgs: Sequence[TrialConfig], pack: Pack, hooks: Sequence[Sequence[Hook]], plans: Sequence[IMP | None],
           level: int, step: int, epoch: int, results: dict[int, RunResult], finals: list[dict[str, float]],
           stats: list[list[float]], clocks: list[list[float]]) -> dict[str, Any]:
    """Tensors and plain values only (loads with `weights_only=True`)."""
    return _cpu({
        "version": PACK_CHECKPOINT_VERSION, "run_hashes": [c.run_hash() for c in cfgs],
        "seeds": [c.seed for c in cfgs], "level": level, "step": step, "epoch": epoch, "alive": list(pack.alive),
        "params": dict(pack.params), "buffers": dict(pack.buffers),
        "optimizer": pack.opt.state_dict(), "noise_rng": pack.noise_rng_state(),
        "frozen": [[k, dict(w)] for k, w in pack.frozen.items()],
        "results": [[k, r.status, r.step, r.epoch, dict(r.summary), r.level] for k, r in results.items()],
        "hooks": [{h.name: hook_state(h) for h in hs} for hs in hooks],
        "plans": [hook_state(p) if p is not None else {} for p in plans],
        "level_finals": [dict(f) for f in finals],
        "epoch_stats": [list(s) for s in stats], "time": [list(c) for c in clocks],
    })


def _restore(state: dict[str, Any], cfgs: Sequence[TrialConfig], pack: Pack, hooks: Sequence[Sequence[Hook]],
             plans: Sequence[IMP | None], results: dict[int, RunResult], finals: list[dict[str, float]],
             stats: list[list[float]], clocks: list[list[float]]) -> tuple[int, int, int]:
    if state.get("version") != PACK_CHECKPOINT_VERSION:
        raise ValueError(f"pack checkpoint version {state.get('version')} != {PACK_CHECKPOINT_VERSION}")
    if state["run_hashes"] != [c.run_hash() for c in cfgs] or state["seeds"] != [c.seed for c in cfgs]:
        raise ValueError("checkpoint belongs to another pack (its members' run_hash/seed differ)")
    device = pack.device
    pack.alive = list(state["alive"])
    pack.params = {k: v.to(device) for k, v in state["params"].items()}
    pack.buffers = {k: v.to(device) for k, v in state["buffers"].items()}
    pack.opt.load_state_dict(pack.params, state["optimizer"])
    pack.load_noise_rng_state(state["noise_rng"])
    pack.frozen = {k: {n: w.to(device) for n, w in weights.items()} for k, weights in state["frozen"]}
    for k, status, step, epoch, summary, level in state["results"]:
        results[k] = RunResult(status, step, epoch, dict(summary), level)
    for hs, saved in zip(hooks, state["hooks"]):
        for h in hs:
            load_hook_state(h, saved.get(h.name, {}))
    for plan, saved in zip(plans, state["plans"]):
        if plan is not None:
            load_hook_state(plan, saved)
    finals[:] = [dict(f) for f in state["level_finals"]]
    stats[:] = [list(s) for s in state["epoch_stats"]]
    clocks[:] = [list(c) for c in state["time"]]
    return state["level"], state["step"], state["epoch"]
