"""A small 2-D CNN for small images (8×8 digits, 28×28 MNIST):

    conv3x3(same, width) → activation → maxpool2
    conv3x3(same, width) → activation → maxpool2
    flatten → dropout → linear(classes)

Channels = cfg.width. An 8×8 input leaves 2×2 per channel, 28×28 leaves 7×7.
Optional BatchNorm2d after each conv (the conv then has no bias).
State-dict keys: conv1.*, conv2.* (each .layer / .norm), out.*.
"""
from __future__ import annotations

import torch
from torch import nn

from dynamics_core.config import ModelConfig
from dynamics_core.models._layers import Model, conv_out, conv_unit


class CNN2d(Model):
    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, channels: int = 32,
                 activation: str = "relu", batchnorm: bool = False, dropout: float = 0.0,
                 preact_noise: float = 0.0):
        super().__init__()
        c, h, w = input_shape
        self.conv1 = conv_unit(2, c, channels, 3, 1, 1, batchnorm, activation, preact_noise)
        self.conv2 = conv_unit(2, channels, channels, 3, 1, 1, batchnorm, activation, preact_noise)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(dropout)
        fh, fw = (conv_out(conv_out(s, 2, 2), 2, 2) for s in (h, w))
        if fh < 1 or fw < 1:
            raise ValueError(f"cnn2d: input {h}x{w} is too small (need >= 4x4)")
        self.out = nn.Linear(channels * fh * fw, num_classes)

    @classmethod
    def from_config(cls, cfg: ModelConfig, input_shape: tuple[int, ...],
                    num_classes: int) -> "CNN2d":
        if len(input_shape) != 3:
            raise ValueError(f"cnn2d needs a (C, H, W) input shape, got {input_shape}")
        return cls(input_shape, num_classes, cfg.width, cfg.activation, cfg.batchnorm,
                   cfg.dropout, cfg.preact_noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv2(self.pool(self.conv1(x))))
        return self.out(self.drop(x.flatten(1)))
