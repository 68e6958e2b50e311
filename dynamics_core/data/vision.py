"""CIFAR-10, MNIST and FashionMNIST through torchvision, from a local root.

Nothing is downloaded unless `data.download: true`. A missing root is an
immediate `FileNotFoundError` naming the path and how to fetch the files
(`dynamics_core.sources`, which knows the sets and checks their roots without torch).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dynamics_core.config import DataConfig
from dynamics_core.data.dataset import RawSplit
from dynamics_core.sources import SETS, vision_problem


def load(cfg: DataConfig, cache_dir: Path) -> RawSplit:
    problem = vision_problem(cfg)
    if problem:
        raise FileNotFoundError(problem)
    import torchvision

    cls_name, _, mean, std = SETS[cfg.dataset]
    cls = getattr(torchvision.datasets, cls_name)
    root = str(Path(cfg.root or cache_dir).expanduser())
    train = cls(root, train=True, download=cfg.download)
    test = cls(root, train=False, download=cfg.download)
    x, y = _tensors(train, mean, std)
    x_test, y_test = _tensors(test, mean, std)
    return RawSplit(x, y, x_test, y_test, num_classes=len(train.classes))


def _tensors(ds, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    data = ds.data if isinstance(ds.data, np.ndarray) else ds.data.numpy()
    x = torch.tensor(data, dtype=torch.float32) / 255.0
    x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x.unsqueeze(1)   # NHWC -> NCHW; NHW -> N1HW
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x - m) / s, torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
