"""Scheduled hooks: how behaviour plugs into the closed training loop.

A hook has a `name`, a `Schedule` and is called with a `StepContext` at the
optimizer steps its schedule resolves to (step 0 = before the first update).
It returns namespaced scalars (or None); the loop merges them (a key
collision is an error), logs them at that step, and restores the model's
modes and every RNG around the call, so a hook cannot change training.
Hooks with state (warm starts, previous values) expose state_dict /
load_state_dict so that resume is exact.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class Schedule:
    kind: Literal["every", "steps", "log", "epoch"] = "epoch"
    every: int = 1
    steps: tuple[int, ...] = ()
    points: int = 10

    def resolve(self, total_steps: int, steps_per_epoch: int) -> frozenset[int]:
        if self.kind == "every":
            return frozenset(range(0, total_steps + 1, self.every))
        if self.kind == "steps":
            return frozenset(s for s in self.steps if 0 <= s <= total_steps)
        if self.kind == "log":
            return frozenset(log_spaced_steps(total_steps, self.points))
        ends = set(range(0, total_steps + 1, steps_per_epoch)) | {total_steps}
        return frozenset(ends)


def log_spaced_steps(total_steps: int, points: int) -> list[int]:
    """Step 0 plus `points` log-spaced steps in [1, total]; duplicates merge,
    so early steps are dense and a short run still gets several points."""
    if total_steps <= 0:
        return [0]
    raw = np.geomspace(1, total_steps, num=points)
    return sorted({0, *(int(round(s)) for s in raw), total_steps})


@dataclass
class StepContext:
    step: int
    epoch: int
    model: torch.nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    data: Any                      # dynamics_core.data.Dataset
    lr: float
    momentum: float
    batch_size: int
    init_params: list[torch.Tensor]
    log_artifact: Callable[[str, Any], None]
    extras: dict[str, Any] = field(default_factory=dict)


class Hook(Protocol):
    name: str
    schedule: Schedule

    def __call__(self, ctx: StepContext) -> dict[str, float] | None: ...


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
