"""1-D regression check of the frequency principle: y = sin x + 2 sin 3x +
3 sin 5x on a uniform grid (docs/science.md#frequency-principle)."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from dynamics_core.config import DataConfig
from dynamics_core.data.dataset import RawSplit

N_TRAIN = 201


def target(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) + 2 * torch.sin(3 * x) + 3 * torch.sin(5 * x)


def load(cfg: DataConfig, cache_dir: Path) -> RawSplit:
    n = cfg.train_size or N_TRAIN
    x = torch.linspace(-math.pi, math.pi, n).unsqueeze(1)
    step = 2 * math.pi / (n - 1)
    x_test = (x[:-1] + step / 2)                          # midpoints of the grid
    return RawSplit(x, target(x), x_test, target(x_test), num_classes=1, task="regression")
