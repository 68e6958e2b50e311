"""Training hooks a trial config switches on: experiment knobs outside the loop.

What a run computes depends on its config alone, so the loop builds these
itself (`config_hooks`), next to whatever hooks the caller passes; they
follow the training-hook contract of `dynamics_core.hooks`.

  NoiseSwitch   optim.schedule.noise_off_epoch: pre-activation noise
                (model.preact_noise) on before that epoch, off from it on
"""
from __future__ import annotations

from dynamics_core.config import TrialConfig
from dynamics_core.hooks import Hook, Schedule, StepContext


class NoiseSwitch:
    name = "noise_switch"
    changes_training = True

    def __init__(self, std: float, off_epoch: int, steps_per_epoch: int):
        self.std, self.off_epoch = std, off_epoch
        self.schedule = Schedule(kind="steps", steps=(off_epoch * steps_per_epoch,))

    def start(self, ctx: StepContext) -> None:
        _set_preact_noise(ctx.model, 0.0 if ctx.epoch >= self.off_epoch else self.std)

    def __call__(self, ctx: StepContext) -> None:
        _set_preact_noise(ctx.model, 0.0)


def config_hooks(cfg: TrialConfig, steps_per_epoch: int) -> list[Hook]:
    off = cfg.optim.schedule.noise_off_epoch
    if off is None or cfg.model.preact_noise == 0.0:
        return []
    return [NoiseSwitch(cfg.model.preact_noise, off, steps_per_epoch)]


def _set_preact_noise(model, std: float) -> None:
    if hasattr(model, "set_preact_noise"):
        model.set_preact_noise(std)
