"""The MNIST-1D ConvBase (Greydanus 2020, github.com/greydanus/mnist1d):
three Conv1d units (kernels 5, 3, 3; stride 2; padding 1), flatten, linear.

Channels = cfg.width. The mnist1d repo uses 25 channels; the ModelConfig default
width (128) is larger, so pass width=25 to reproduce the original (for a length-40
input it then has 25*5 = 125 linear inputs, as in the repo).

The input is viewed as one channel of length prod(input_shape), like the repo's
`x.view(-1, 1, x.shape[-1])`: (40,) and (1, 40) give length 40; a (1, 28, 28)
image gives a length-784 sequence. Optional BatchNorm1d after each conv; dropout
(cfg.dropout) after the last conv unit.
State-dict keys: conv1.*, conv2.*, conv3.* (each .layer / .norm), out.*.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from dynamics_core.config import ModelConfig
from dynamics_core.models._layers import Model, conv_out, conv_unit

SPEC = ((5, 2, 1), (3, 2, 1), (3, 2, 1))   # (kernel, stride, padding) per conv


class CNN1d(Model):
    def __init__(self, length: int, num_classes: int, channels: int = 25,
                 activation: str = "relu", batchnorm: bool = False, dropout: float = 0.0,
                 preact_noise: float = 0.0):
        super().__init__()
        (k1, s1, p1), (k2, s2, p2), (k3, s3, p3) = SPEC
        self.conv1 = conv_unit(1, 1, channels, k1, s1, p1, batchnorm, activation, preact_noise)
        self.conv2 = conv_unit(1, channels, channels, k2, s2, p2, batchnorm, activation, preact_noise)
        self.conv3 = conv_unit(1, channels, channels, k3, s3, p3, batchnorm, activation, preact_noise)
        self.drop = nn.Dropout(dropout)
        out_len = length
        for k, s, p in SPEC:
            out_len = conv_out(out_len, k, s, p)
        if out_len < 1:
            raise ValueError(f"cnn1d: input length {length} is too short")
        self.out = nn.Linear(channels * out_len, num_classes)

    @classmethod
    def from_config(cls, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> "CNN1d":
        return cls(math.prod(input_shape), num_classes, cfg.width, cfg.activation,
                   cfg.batchnorm, cfg.dropout, cfg.preact_noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], 1, -1)
        x = self.conv3(self.conv2(self.conv1(x)))
        return self.out(self.drop(x.flatten(1)))
