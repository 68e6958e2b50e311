"""CIFAR ResNet-20 (He et al. 2016, section 4.2), laid out like OpenLTH's
`cifar_resnet_20`: a 3x3 conv to 16 channels, three stages of 3 basic blocks
(16, 32, 64 channels; stride 2 at the start of stages 2 and 3), global average
pool, linear. Convs have no bias; BatchNorm after every conv (always on,
cfg.batchnorm is ignored). Shortcuts that change shape are 1x1 conv + BN
("option B"), which gives 272,474 parameters for 10 classes (the zero-padding
"option A" variant has 269,722). Channel counts are fixed at 16/32/64; cfg.width
and cfg.depth are ignored. Conv and linear weights use Kaiming-normal init
(fan_in), BN weight 1 / bias 0, as in OpenLTH.

Preact noise goes right before each activation (after the residual sum in the
second half of a block). Dropout (cfg.dropout) is applied before the final linear.
State-dict keys: conv.*, bn.*, blocks.{i}.{conv1,bn1,conv2,bn2}.*,
blocks.{i}.shortcut.{0,1}.* (projection blocks only), fc.*.
"""
from __future__ import annotations

import torch
from torch import nn

from dynamics_core.config import ModelConfig
from dynamics_core.models._layers import ACTIVATIONS, Model, PreactNoise

STAGES = ((16, 3), (32, 3), (64, 3))   # (channels, blocks)


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, activation: str, preact_noise: float):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.noise1 = PreactNoise(preact_noise)
        self.act1 = ACTIVATIONS[activation]()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        else:
            self.shortcut = nn.Sequential()
        self.noise2 = PreactNoise(preact_noise)
        self.act2 = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.noise1(self.bn1(self.conv1(x))))
        h = self.bn2(self.conv2(h)) + self.shortcut(x)
        return self.act2(self.noise2(h))


class ResNet20(Model):
    def __init__(self, in_channels: int, num_classes: int, activation: str = "relu",
                 dropout: float = 0.0, preact_noise: float = 0.0):
        super().__init__()
        c0 = STAGES[0][0]
        self.conv = nn.Conv2d(in_channels, c0, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c0)
        self.noise = PreactNoise(preact_noise)
        self.act = ACTIVATIONS[activation]()
        blocks, c_in = [], c0
        for stage, (c_out, n) in enumerate(STAGES):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(Block(c_in, c_out, stride, activation, preact_noise))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, cfg: ModelConfig, input_shape: tuple[int, ...],
                    num_classes: int) -> "ResNet20":
        if len(input_shape) != 3:
            raise ValueError(f"resnet20 needs a (C, H, W) input shape, got {input_shape}")
        return cls(input_shape[0], num_classes, cfg.activation, cfg.dropout, cfg.preact_noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act(self.noise(self.bn(self.conv(x)))))
        return self.fc(self.drop(self.pool(x).flatten(1)))
