"""The Keras CIFAR-10 example CNN (keras/examples/cifar10_cnn.py), the "SimpleCNN"
of the break-even paper (Jastrzebski et al. 2020):

    conv32(same) conv32(valid) maxpool2 dropout
    conv64(same) conv64(valid) maxpool2 dropout
    flatten dense512 dropout dense(classes)

3x3 convs; cfg.activation (default ReLU); optional BatchNorm after each conv
(cfg.batchnorm); every dropout uses cfg.dropout (Keras used 0.25/0.25/0.5, here
default 0). Channel counts are fixed; cfg.width is ignored. Works for any (C, H, W)
with H, W >= 10: 32x32 gives 64*6*6 = 2304 flat features, 28x28 gives 64*5*5.
State-dict keys: conv1..conv4.*, fc.*, out.*.
"""
from __future__ import annotations

import torch
from torch import nn

from dynamics_core.config import ModelConfig
from dynamics_core.models._layers import Model, conv_out, conv_unit, linear_unit


def _flat_side(size: int) -> int:
    """same-conv, valid-conv, pool, same-conv, valid-conv, pool along one axis."""
    for _ in range(2):
        size = conv_out(conv_out(size, 3), 2, 2)
    return size


class SimpleCNN(Model):
    def __init__(self, input_shape: tuple[int, int, int], num_classes: int,
                 activation: str = "relu", batchnorm: bool = False, dropout: float = 0.0,
                 preact_noise: float = 0.0):
        super().__init__()
        c, h, w = input_shape
        unit = lambda c_in, c_out, pad: conv_unit(  # noqa: E731
            2, c_in, c_out, 3, 1, pad, batchnorm, activation, preact_noise)
        self.conv1 = unit(c, 32, 1)
        self.conv2 = unit(32, 32, 0)
        self.pool1 = nn.MaxPool2d(2)
        self.drop1 = nn.Dropout(dropout)
        self.conv3 = unit(32, 64, 1)
        self.conv4 = unit(64, 64, 0)
        self.pool2 = nn.MaxPool2d(2)
        self.drop2 = nn.Dropout(dropout)
        fh, fw = _flat_side(h), _flat_side(w)
        if fh < 1 or fw < 1:
            raise ValueError(f"simple_cnn: input {h}x{w} is too small (need >= 10x10)")
        self.fc = linear_unit(64 * fh * fw, 512, False, activation, preact_noise)
        self.drop3 = nn.Dropout(dropout)
        self.out = nn.Linear(512, num_classes)

    @classmethod
    def from_config(cls, cfg: ModelConfig, input_shape: tuple[int, ...],
                    num_classes: int) -> "SimpleCNN":
        if len(input_shape) != 3:
            raise ValueError(f"simple_cnn needs a (C, H, W) input shape, got {input_shape}")
        return cls(input_shape, num_classes, cfg.activation, cfg.batchnorm, cfg.dropout,
                   cfg.preact_noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.pool1(self.conv2(self.conv1(x))))
        x = self.drop2(self.pool2(self.conv4(self.conv3(x))))
        x = self.drop3(self.fc(x.flatten(1)))
        return self.out(x)
