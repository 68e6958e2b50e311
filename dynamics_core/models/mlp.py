"""Fully-connected net: flatten, `depth` hidden units of `width`, linear output.

Each hidden unit is Linear -> [BatchNorm1d] -> preact noise -> activation -> dropout.
State-dict keys: hidden.{i}.layer.*, hidden.{i}.norm.* (batchnorm only), out.*.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from dynamics_core.config import ModelConfig
from dynamics_core.models._layers import Model, linear_unit


class MLP(Model):
    def __init__(self, in_features: int, num_classes: int, width: int = 128, depth: int = 2,
                 activation: str = "relu", batchnorm: bool = False, dropout: float = 0.0,
                 preact_noise: float = 0.0):
        super().__init__()
        dims = [in_features] + [width] * depth
        self.hidden = nn.ModuleList(
            linear_unit(d_in, d_out, batchnorm, activation, preact_noise)
            for d_in, d_out in zip(dims[:-1], dims[1:]))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(dims[-1], num_classes)

    @classmethod
    def from_config(cls, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> "MLP":
        return cls(math.prod(input_shape), num_classes, cfg.width, cfg.depth, cfg.activation,
                   cfg.batchnorm, cfg.dropout, cfg.preact_noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for unit in self.hidden:
            x = self.drop(unit(x))
        return self.out(x)
