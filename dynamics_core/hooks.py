"""Scheduled hooks: how behaviour plugs into the closed training loop.

A hook has a `name`, a `Schedule` and is called with a `StepContext` at the
optimizer steps its schedule resolves to (step 0 = before the first update).
It returns namespaced scalars (or None); the loop merges them (a key
collision is an error) and logs them at that step. There are two kinds:

Probe hooks (the default kind) only look. The loop restores the model's
modes and every RNG around each call, so a probe hook cannot change
training. All probe hooks called at one step share `ctx.cache`, a dict the
loop creates fresh for that step (the probes keep their per-example
gradients and Gram there, computed once for K, stiffness and the rest).

A probe hook may also run batched over the members of a pack
(`dynamics_core.packed`): its `batch_key()` returns a hashable (None: never
batched), and the pack calls `type(hook).batched(hooks, stack)` once for
the members whose hooks are due at the step and share the key, with a
`StackedMembers` view of their weights instead of one module per member.
It returns what each hook would return alone, to the probe's tolerance, and
updates each hook's state as its call would.

Training hooks (`changes_training = True`) may change training, under this
contract:
  - they run after the optimizer step (at step 0: before the first update),
    before the epoch's evaluation, any probe hook and any checkpoint of that
    step, in list order, under `torch.no_grad()`;
  - they may change parameter and buffer values in place (e.g. multiply by a
    pruning mask) and the optimizer's state (`ctx.optimizer`), but never
    replace parameters, change their shapes or build a new optimizer;
  - what they do must be a function of their own state and the context:
    randomness from their own generator seeded by the step, never the
    global RNGs (the loop does not isolate them);
  - an optional `start(ctx)` is called whenever the loop (re)enters training
    (a fresh run, a resume, the start of a level) to re-apply what a freshly
    built model lacks (e.g. noise switched off).

Hooks of both kinds with state (warm starts, masks, previous values) expose
state_dict / load_state_dict; their state goes into every checkpoint, so
resume is exact. The state must be tensors and plain Python values
(checkpoints load with `torch.load(..., weights_only=True)`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class Schedule:
    """Steps of one level of `total_steps` optimizer steps. `epoch`: step 0
    and every epoch end; `epoch_end`: the epoch ends only."""

    kind: Literal["every", "steps", "log", "epoch", "epoch_end"] = "epoch"
    every: int = 1
    steps: tuple[int, ...] = ()
    points: int = 10
    start: int = 1                 # log: the first log-spaced step

    def resolve(self, total_steps: int, steps_per_epoch: int) -> frozenset[int]:
        if self.kind == "every":
            return frozenset(range(0, total_steps + 1, self.every))
        if self.kind == "steps":
            return frozenset(s for s in self.steps if 0 <= s <= total_steps)
        if self.kind == "log":
            return frozenset(log_spaced_steps(total_steps, self.points, self.start))
        ends = set(range(0, total_steps + 1, steps_per_epoch)) | {total_steps}
        if self.kind == "epoch_end":
            ends.discard(0)
        return frozenset(ends)


def log_spaced_steps(total_steps: int, points: int, start: int = 1) -> list[int]:
    """Step 0 plus `points` log-spaced steps in [start, total]; duplicates merge,
    so early steps are dense and a short run still gets several points. A
    start above 1 (capped at total) spends no points on the first few steps."""
    if total_steps <= 0:
        return [0]
    raw = np.geomspace(min(max(start, 1), total_steps), total_steps, num=points)
    return sorted({0, *(int(round(s)) for s in raw), total_steps})


@dataclass
class StepContext:
    step: int                      # the trial's global step (what the sink logs under)
    epoch: int                     # epochs completed in this level
    model: torch.nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    data: Any                      # dynamics_core.data.Dataset
    lr: float
    momentum: float
    batch_size: int
    init_params: list[torch.Tensor]
    log_artifact: Callable[[str, Any], None]
    extras: dict[str, Any] = field(default_factory=dict)
    level: int = 0                 # multi-level trials: the level (0 otherwise)
    level_step: int = 0            # step within the level (= step when there is one level)
    optimizer: torch.optim.Optimizer | None = None   # for training hooks only
    cache: dict[Any, Any] = field(default_factory=dict)   # shared by the hooks of one step


class Hook(Protocol):
    name: str
    schedule: Schedule

    def __call__(self, ctx: StepContext) -> dict[str, float] | None: ...


class StackedMembers(Protocol):
    """Some members of a pack as one stacked model, in eval mode, float32 (no
    autocast): what a batched probe hook reads instead of their modules."""

    params: dict[str, torch.Tensor]        # name -> (k, *shape), the members' rows, module order
    init_params: list[list[torch.Tensor]]  # each member's initial parameters, module order
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's output on the same inputs, (k, n, *out)."""

    def mean_gradients(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each member's gradient of its mean loss on (x, y): name -> (k, *shape)."""


class TrainingHook(Hook, Protocol):
    """A hook that may change training, under the contract above."""

    changes_training: bool         # True


def changes_training(hook: Hook) -> bool:
    return bool(getattr(hook, "changes_training", False))


def hook_state(hook: Hook) -> dict[str, Any]:
    return hook.state_dict() if hasattr(hook, "state_dict") else {}


def load_hook_state(hook: Hook, state: dict[str, Any]) -> None:
    if hasattr(hook, "load_state_dict"):
        hook.load_state_dict(state)


def merge_metrics(into: dict[str, float], new: dict[str, float] | None, source: str) -> None:
    for key, value in (new or {}).items():
        if key in into:
            raise ValueError(f"metric {key!r} from hook {source!r} collides with another hook")
        into[key] = float(value)


# ------------------------------------------------------------------ levels
@dataclass
class LevelStart:
    """What a level plan may set as a level starts."""

    start_step: int = 0            # rewind: the level trains from this step of the schedule
    metrics: dict[str, float] = field(default_factory=dict)   # logged at the level's first step


class LevelPlan(Protocol):
    """A trial of `levels` levels (train → prune → rewind → retrain …).

    Each level trains the config's full schedule (epochs, lr, data order), from
    `start.start_step` on. `on_level_start` is called as every level starts,
    level 0 included, before any hook of that level: it may change weights
    and buffers in place (masks, rewinding to saved weights), reset or load the
    optimizer's state, and set `start`. It must be a function of the plan's
    state, the model and the optimizer (state_dict / load_state_dict carry the
    plan's state through checkpoints, as for hooks), so that a trial resumed
    from the checkpoint at a level's end starts the next level identically.
    A plan that must see the weights during a level (e.g. at the rewind step)
    is also passed as a training hook.
    """

    levels: int

    def on_level_start(self, level: int, model: torch.nn.Module,
                       optimizer: torch.optim.Optimizer, start: LevelStart) -> None: ...
