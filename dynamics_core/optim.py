"""Optimizers and stateless learning-rate / momentum schedules.

The schedule is a pure function of (config, epoch, fraction of the epoch), so
resuming from any step needs no scheduler state: the loop sets each param
group's lr (and SGD momentum) before every step.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from dynamics_core.config import OptimConfig


def make_optimizer(cfg: OptimConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    raise KeyError(f"unknown optimizer {cfg.name!r}; valid: sgd, adam")


def lr_momentum(cfg: OptimConfig, epoch: int, frac: float, total_epochs: int) -> tuple[float, float]:
    """Learning rate and momentum for a step in `epoch` at `frac` ∈ [0, 1) through it."""
    s = cfg.schedule
    lr, mu = cfg.lr, cfg.momentum
    if s.kind == "step":
        passed = sum(epoch >= round(m * total_epochs) for m in s.milestones)
        lr = cfg.lr * s.factor ** passed
    elif s.kind == "exponential":
        restart = s.restart_epoch if s.restart_epoch is not None and epoch >= s.restart_epoch else 0
        lr = cfg.lr * s.gamma ** (epoch - restart)
    elif s.kind == "two_stage" and epoch >= s.stage1_epochs:
        lr = s.lr2 if s.lr2 is not None else cfg.lr
        mu = s.momentum2 if s.momentum2 is not None else cfg.momentum
        if s.anneal_epoch is not None and epoch >= s.anneal_epoch:
            lr *= s.factor
    if s.warmup_epochs > 0:
        lr *= min(1.0, (epoch + frac) / s.warmup_epochs)
    return lr, mu


def apply_lr_momentum(opt: torch.optim.Optimizer, lr: float, momentum: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
        if "momentum" in group and not group.get("nesterov", False):
            group["momentum"] = momentum
