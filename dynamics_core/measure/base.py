"""What every probe hook shares: the probe set, the per-step cache, the schedule.

`ProbeSet` is the fixed data the probes measure on, drawn once per trial from
the training data (seeded, no augmentation, no deficit), with a validation
probe set from the test data. `ProbeSet.at(ctx)` is the `ProbeRound` of one
step: lazily computed quantities that several probes use, computed at most
once per step and kept in `ctx.cache` (dropped after the step): the Gram
GGᵀ of the per-example gradients of the probe set and the validation probe
set together (`joint_gram`: K centres its train block exactly, stiffness
reads its train-train, train-val and val-val blocks), built by
`per_example_gram` from layer factors without forming G where it can, with
float64 accumulation only where an eigen-solve needs it (the train-train
block, when K is on); and, only for consumers that need them (minibatch K,
plugins), the per-example gradients G themselves.

Probe families whose math is one batched forward or one gradient of the
mean loss (the loss probe, the timeline) also run batched over a pack's
members (`ProbeFamily.batch_key`, `batched`; `dynamics_core.packed`).
"""
from __future__ import annotations

from functools import cached_property
from typing import Sequence

import torch

from dynamics_core import probes as P
from dynamics_core.config import ProbesConfig
from dynamics_core.data import Dataset, probe_indices
from dynamics_core.hooks import Schedule, StackedMembers, StepContext


def probe_schedule(cfg: ProbesConfig) -> Schedule:
    s = cfg.schedule
    return Schedule(kind=s.kind, every=s.every, steps=tuple(s.steps), points=s.points,
                    start=s.log_start)


class ProbeSet:
    def __init__(self, cfg: ProbesConfig, data: Dataset):
        self.cfg = cfg
        self.data = data
        self.classification = data.task == "classification"
        self.num_classes = data.num_classes
        idx = probe_indices(data.n_train, cfg.probe_size, cfg.probe_seed)
        self.x, self.y = data.x_train[idx], data.y_train[idx]
        vidx = probe_indices(len(data.y_test), cfg.val_probe_size, cfg.probe_seed + 1)
        self.xv, self.yv = data.x_test[vidx], data.y_test[vidx]
        h = cfg.hessian_size or cfg.probe_size
        self.xh, self.yh = self.x[:h], self.y[:h]

    def at(self, ctx: StepContext) -> "ProbeRound":
        """This step's shared quantities (one `ProbeRound` per step and set)."""
        if self not in ctx.cache:
            ctx.cache[self] = ProbeRound(self, ctx)
        return ctx.cache[self]

    def label_repr(self, y: torch.Tensor) -> torch.Tensor:
        if self.classification:
            return torch.nn.functional.one_hot(y, self.num_classes).float()
        return y.float()


class ProbeRound:
    def __init__(self, probes: ProbeSet, ctx: StepContext):
        self.probes, self.ctx = probes, ctx

    @cached_property
    def grads(self) -> torch.Tensor:
        """Per-example gradients on the probe set, (n, p)."""
        return P.per_example_gradients(self.ctx.model, self.ctx.loss_fn, self.probes.x, self.probes.y)

    @cached_property
    def grads64(self) -> torch.Tensor:
        return self.grads.double()

    @cached_property
    def val_grads64(self) -> torch.Tensor:
        return P.per_example_gradients(self.ctx.model, self.ctx.loss_fn,
                                       self.probes.xv, self.probes.yv).double()

    @cached_property
    def exact(self) -> int:
        """Rows of the joint Gram whose block among themselves is float64-
        accumulated: the probe set's when K (per example) reads it (an
        eigen-solve), else none: cosines alone (stiffness) are exact to
        float32 rounding from float32 products."""
        cfg = self.probes.cfg
        return len(self.probes.y) if cfg.gradcov and cfg.gradcov_unit == "example" else 0

    @cached_property
    def joint_gram(self) -> torch.Tensor:
        """The Gram of the per-example gradients of the probe set, stacked
        over those of the validation probe set when stiffness will ask for
        the train-val and val-val pairs: one `per_example_gram` of
        [x; x_val], (n + m)², whose blocks are train-train, train-val and
        val-val. G itself is never formed for Linear layers. The train-train
        block is float64-accumulated when `exact` says so; the blocks that only
        stiffness reads are float32 products."""
        ps = self.probes
        x, y = ps.x, ps.y
        if ps.cfg.stiffness and ps.classification:
            x, y = torch.cat([x, ps.xv]), torch.cat([y, ps.yv])
        return P.per_example_gram(self.ctx.model, self.ctx.loss_fn, x, y, exact=self.exact)

    @cached_property
    def gram(self) -> torch.Tensor:
        """GGᵀ of the probe set (n×n, float64-accumulated): K centres it. The
        train-train block of `joint_gram` when that is exact, else its own
        product."""
        n = len(self.probes.y)
        if self.exact == n:
            return self.joint_gram[:n, :n]
        return P.per_example_gram(self.ctx.model, self.ctx.loss_fn, self.probes.x, self.probes.y)


class ProbeFamily:
    """Base of the built-in probe hooks: the probes of one `ProbesConfig`
    flag, on the shared probe set, on the probe schedule, named
    `probes.<flag>` (the key of its state in checkpoints)."""

    flag = ""

    def __init__(self, cfg: ProbesConfig, probes: ProbeSet):
        self.cfg, self.probes = cfg, probes
        self.name = f"probes.{self.flag}"
        self.schedule = probe_schedule(cfg)

    def __call__(self, ctx: StepContext) -> dict[str, float] | None:
        raise NotImplementedError

    # ------------------------------------------------ batched over a pack
    def batch_key(self) -> tuple | None:
        """Hooks of a pack's members with equal keys that are due at one step
        run as one `batched` call instead of one call per member; None (the
        default): this family runs per member, on the member's own module."""
        return None

    @staticmethod
    def batched(hooks: Sequence["ProbeFamily"], stack: StackedMembers) -> list[dict[str, float] | None]:
        """What each of `hooks` (one per member of `stack`, in its order)
        would return if called alone on its member's module."""
        raise NotImplementedError

    def _probe_set_key(self) -> tuple:
        """The batch key of a family that reads only the probe set: its type and
        what makes two members' probe sets the same data (the data set is the pack's)."""
        c = self.cfg
        return (type(self), c.probe_size, c.probe_seed, c.val_probe_size, c.hessian_size)
