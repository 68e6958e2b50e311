"""Iterative magnitude pruning with rewinding inside one trial (Frankle,
Schwab, Morcos 2020): the `LevelPlan` that `dynamics_core.train.run` hosts,
built from the pure pieces of `dynamics_core.pruning`.

    plan = imp_plan(cfg)              # None when cfg.pruning.levels == 0
    run(cfg, sink, env, hooks=with_plan(plan, default_hooks), plan=plan)

Level 0 trains the dense network; its training hook keeps the state at
optimizer step k = `pruning.rewind_step` (k = 0: the initialisation) as a
tensor snapshot in the plan's state, so it is in every checkpoint after step
k. Each later level prunes `pruning.rate` of the surviving prunable weights
by global magnitude (biases and normalisation stay dense, `exclude` too),
rewinds every parameter and buffer to the step-k snapshot, zeroes the pruned
weights and trains the level's schedule again from step k, the mask held by
`MaskEnforcer` after every optimizer step. After L pruning levels a fraction
0.8^L of the prunable weights survives (to the rounding of `prune_count`).

Optimizer: fresh at every level (its state cleared, as OpenLTH builds a new
one): momentum and Adam moments are not rewound; the learning-rate schedule
resumes at step k, since it is a function of the step.

Ablations (`pruning.ablation`, `pruning.ABLATIONS`) are controls on the masks
IMP finds, so their masks come from the unablated chain of the same trial:
with an ablation each pruning level is trained twice in a row, first
unablated (its end weights give the next mask), then ablated at the rewind
point with the same mask. Loop levels are then 0 (dense), 1 (IMP level 1),
2 (IMP level 1 ablated), 3 (IMP level 2), … : 1 + 2L levels, and every
ablation trial carries its own unablated curve, paired by construction. The
ablation's random draws come from `ablation_generator(cfg, seed, IMP level)`.

Recorded at the start step of every loop level l: `imp/sparsity`,
`imp/kept` (surviving prunable weights), `imp/level` (times pruned),
`imp/ablated` (0/1), and the same under `level/<l>/imp/...`, so a trial's
summary holds them beside `level/<l>/final/...`. The masks of every level
are the artifact `masks/level_<l>`: one flat uint8 array (1 = kept), the
layers concatenated row-major in the order of the artifact `masks/layout`
({"names": [...], "shapes": [...]}, logged at level 0).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from dynamics_core import models
from dynamics_core.config import PruningConfig, TrialConfig
from dynamics_core.hooks import LevelStart, Schedule, StepContext
from dynamics_core.pruning import (MaskEnforcer, Masks, ablate, ablation_generator, clone_state,
                                   global_magnitude_prune, initial_masks, masks_from_state,
                                   masks_to_state, rewind, sparsity)


class IMP:
    """The IMP level plan and its training hook (one object, both roles)."""

    name = "imp"
    changes_training = True

    def __init__(self, cfg: PruningConfig, seed: int, model_cfg: Any = None):
        self.cfg, self.seed, self.model_cfg = cfg, seed, model_cfg
        self.paired = cfg.ablation != "none"
        self.levels = 1 + cfg.levels * (2 if self.paired else 1)
        self.schedule = Schedule(kind="every", every=1)
        self.masks: Masks = {}
        self.pending: Masks = {}        # the unablated chain's next masks
        self.snapshot: dict[str, torch.Tensor] = {}
        self._enforcer: MaskEnforcer | None = None
        self._build: Callable[[int], torch.nn.Module] | None = None

    # ------------------------------------------------------------ levels
    def ablated(self, level: int) -> bool:
        """Whether loop level `level` trains the ablated network."""
        return self.paired and level >= 1 and level % 2 == 0

    def imp_level(self, level: int) -> int:
        """How many times the network of loop level `level` was pruned."""
        return (level + 1) // 2 if self.paired else level

    def start_step(self, level: int) -> int:
        return 0 if level == 0 else self.cfg.rewind_step

    def on_level_start(self, level: int, model: torch.nn.Module,
                       optimizer: torch.optim.Optimizer, start: LevelStart) -> None:
        if level == 0:
            self.masks, self.pending = initial_masks(model, self.cfg.exclude), {}
        else:
            if not self.snapshot:
                raise ValueError(f"pruning.rewind_step {self.cfg.rewind_step} was never reached "
                                 "in level 0: it must be below the steps of one level")
            if not self.ablated(level - 1):      # model: the end of an unablated level
                self.pending = global_magnitude_prune(model, self.masks, self.cfg.rate)
            if not self.ablated(level):
                self.masks = self.pending
            rewind(model, self.masks, self.snapshot)
            if self.ablated(level):
                generator = ablation_generator(self.cfg, self.seed, self.imp_level(level))
                ablate(model, self.masks, self.cfg.ablation, generator, self._build)
            optimizer.state.clear()
            start.start_step = self.cfg.rewind_step
        self._enforcer = MaskEnforcer(model, self.masks)
        start.metrics.update(self.level_metrics(level))

    def level_metrics(self, level: int) -> dict[str, float]:
        values = {"sparsity": sparsity(self.masks),
                  "kept": float(sum(int(m.sum()) for m in self.masks.values())),
                  "level": float(self.imp_level(level)), "ablated": float(self.ablated(level))}
        return {**{f"imp/{k}": v for k, v in values.items()},
                **{f"level/{level}/imp/{k}": v for k, v in values.items()}}

    # ------------------------------------------------------ training hook
    def start(self, ctx: StepContext) -> None:
        """(Re)entering training: the enforcer and the fresh-model builder for `reinit`."""
        data, model_cfg = ctx.data, self.model_cfg
        if model_cfg is not None:
            self._build = lambda s: models.build(model_cfg, data.input_shape, data.num_classes, s)
        self._enforcer = MaskEnforcer(ctx.model, self.masks)

    def __call__(self, ctx: StepContext) -> None:
        if self._enforcer is None:
            self._enforcer = MaskEnforcer(ctx.model, self.masks)
        self._enforcer(ctx.optimizer)
        if ctx.level == 0 and ctx.level_step == self.cfg.rewind_step:
            self.snapshot = clone_state(ctx.model)
        if ctx.level_step == self.start_step(ctx.level):
            if ctx.level == 0:
                ctx.log_artifact("masks/layout", {"names": list(self.masks),
                                                  "shapes": [list(m.shape) for m in self.masks.values()]})
            ctx.log_artifact(f"masks/level_{ctx.level}", flat_masks(self.masks))
        return None

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"masks": masks_to_state(self.masks), "pending": masks_to_state(self.pending),
                "snapshot": {n: t.detach().cpu().clone() for n, t in self.snapshot.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = masks_from_state(state.get("masks", {}))
        self.pending = masks_from_state(state.get("pending", {}))
        self.snapshot = {n: t.clone() for n, t in state.get("snapshot", {}).items()}
        self._enforcer = None


def flat_masks(masks: Masks) -> np.ndarray:
    """The masks as one flat uint8 array (1 = kept), layers in mask order, row-major."""
    if not masks:
        return np.zeros(0, dtype=np.uint8)
    return torch.cat([m.detach().cpu().reshape(-1) for m in masks.values()]).to(torch.uint8).numpy()


def imp_plan(cfg: TrialConfig) -> IMP | None:
    """The IMP plan of a trial config, or None when `pruning.levels` is 0."""
    if cfg.pruning.levels == 0:
        return None
    return IMP(cfg.pruning, cfg.seed, cfg.model)


def with_plan(plan: IMP | None, hooks: Any) -> Any:
    """The hook source for `run`: the plan (a training hook too) ahead of `hooks`."""
    if plan is None:
        return hooks
    return lambda cfg, data: [plan, *(hooks(cfg, data) if callable(hooks) else hooks)]


__all__ = ["IMP", "flat_masks", "imp_plan", "with_plan"]
