"""Pieces shared by every model: the activation table, pre-activation noise,
the conv/linear "unit" (layer -> norm -> noise -> activation) and the `Model`
base class that carries `set_preact_noise`.

Module structure never depends on `dropout` or `preact_noise` values (a zero
dropout / zero noise module is still there, and neither has parameters), so
state_dict keys only change with the architecture and `batchnorm`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class PreactNoise(nn.Module):
    """Adds N(0, std^2) noise in training mode only, std times `draw(x)`: by
    default `torch.randn_like`, the global torch RNG (so the training loop's
    RNG checkpointing covers it); packed trials (`dynamics_core.packed`) set
    `draw` to hand each member the draws of its own generator. Identity in
    eval mode or when std == 0, and then it draws nothing."""

    def __init__(self, std: float = 0.0):
        super().__init__()
        self.std = float(std)
        self.draw: Callable[[torch.Tensor], torch.Tensor] = torch.randn_like

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0.0:
            return x + self.std * self.draw(x)
        return x

    def extra_repr(self) -> str:
        return f"std={self.std}"


class Unit(nn.Module):
    """`layer` -> `norm` (BatchNorm or Identity) -> `noise` -> `act`."""

    def __init__(self, layer: nn.Module, norm: nn.Module, activation: str, preact_noise: float):
        super().__init__()
        self.layer = layer
        self.norm = norm
        self.noise = PreactNoise(preact_noise)
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.noise(self.norm(self.layer(x))))


def conv_unit(dim: int, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
              batchnorm: bool, activation: str, preact_noise: float) -> Unit:
    """Conv1d/Conv2d unit; the conv has a bias only when no BatchNorm follows it."""
    conv = {1: nn.Conv1d, 2: nn.Conv2d}[dim]
    norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dim]
    return Unit(conv(c_in, c_out, kernel, stride=stride, padding=padding, bias=not batchnorm),
                norm(c_out) if batchnorm else nn.Identity(), activation, preact_noise)


def linear_unit(d_in: int, d_out: int, batchnorm: bool, activation: str,
                preact_noise: float) -> Unit:
    return Unit(nn.Linear(d_in, d_out, bias=not batchnorm),
                nn.BatchNorm1d(d_out) if batchnorm else nn.Identity(), activation, preact_noise)


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Spatial output length of a conv or pool along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


class Model(nn.Module):
    """Base class: every model can switch its pre-activation noise at run time."""

    def set_preact_noise(self, std: float) -> None:
        """Set the noise std of every `PreactNoise` module (no-op if there are none)."""
        for m in self.modules():
            if isinstance(m, PreactNoise):
                m.std = float(std)

    @property
    def preact_noise(self) -> float:
        stds = {m.std for m in self.modules() if isinstance(m, PreactNoise)}
        return max(stds, default=0.0)
