"""All-CNN-C (Springenberg et al. 2014, table 2), with the BatchNorm option used by
the critical-learning-periods paper (Achille et al. 2019):

    conv96 conv96 conv96/s2 [dropout]
    conv192 conv192 conv192/s2 [dropout]
    conv192(3x3) conv192(1x1) conv(classes, 1x1) global-avg-pool

All 3x3 convs use padding 1, including the 7th (the paper's is unpadded), so any
input of at least 4x4 works; parameter counts are unchanged by padding. Every conv
except the last is followed by [BatchNorm] -> preact noise -> activation; the
last 1x1 conv is plain (with bias) and feeds the average pool directly, so the
logits are not clipped by a ReLU. Dropout (cfg.dropout, default 0; the paper used
0.5) follows the two stride-2 convs; the paper's 0.2 input dropout is omitted.
Channel counts are fixed at 96/192; cfg.width is ignored.
State-dict keys: conv1..conv8.* (each .layer / .norm), classifier.*.
"""
from __future__ import annotations

import torch
from torch import nn

from dynamics_core.config import ModelConfig
from dynamics_core.models._layers import Model, conv_unit

C1, C2 = 96, 192


class AllCNN(Model):
    def __init__(self, in_channels: int, num_classes: int, activation: str = "relu",
                 batchnorm: bool = False, dropout: float = 0.0, preact_noise: float = 0.0):
        super().__init__()
        unit = lambda c_in, c_out, kernel, stride: conv_unit(  # noqa: E731
            2, c_in, c_out, kernel, stride, kernel // 2, batchnorm, activation, preact_noise)
        self.conv1 = unit(in_channels, C1, 3, 1)
        self.conv2 = unit(C1, C1, 3, 1)
        self.conv3 = unit(C1, C1, 3, 2)
        self.drop1 = nn.Dropout(dropout)
        self.conv4 = unit(C1, C2, 3, 1)
        self.conv5 = unit(C2, C2, 3, 1)
        self.conv6 = unit(C2, C2, 3, 2)
        self.drop2 = nn.Dropout(dropout)
        self.conv7 = unit(C2, C2, 3, 1)
        self.conv8 = unit(C2, C2, 1, 1)
        self.classifier = nn.Conv2d(C2, num_classes, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    @classmethod
    def from_config(cls, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> "AllCNN":
        if len(input_shape) != 3:
            raise ValueError(f"allcnn needs a (C, H, W) input shape, got {input_shape}")
        return cls(input_shape[0], num_classes, cfg.activation, cfg.batchnorm, cfg.dropout,
                   cfg.preact_noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.conv3(self.conv2(self.conv1(x))))
        x = self.drop2(self.conv6(self.conv5(self.conv4(x))))
        x = self.classifier(self.conv8(self.conv7(x)))
        return self.pool(x).flatten(1)
