"""CIFAR-10, MNIST and FashionMNIST through torchvision, from a local root.

Nothing is downloaded unless `data.download: true`. A missing root is an
immediate `FileNotFoundError` naming the path and how to fetch the files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dynamics_core.config import DataConfig
from dynamics_core.data.dataset import RawSplit

# name -> (torchvision class name, folder torchvision looks for under root, mean, std)
SETS = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "mnist": ("MNIST", "MNIST/raw", (0.1307,), (0.3081,)),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", (0.2860,), (0.3530,)),
}


def check_available(cfg: DataConfig) -> str | None:
    if cfg.download:
        return None
    if not cfg.root:
        return (f"data.root is not set: {cfg.dataset} loads from a local folder "
                f"(set data.root, or data.download: true on a machine with internet)")
    folder = Path(cfg.root).expanduser() / SETS[cfg.dataset][1]
    if not folder.exists():
        return (f"{cfg.dataset} not found at {folder}: fetch it once with "
                f"`python -c \"import torchvision; torchvision.datasets.{SETS[cfg.dataset][0]}"
                f"('{cfg.root}', download=True)\"` on a machine with internet, "
                f"or set data.download: true")
    return None


def load(cfg: DataConfig, cache_dir: Path) -> RawSplit:
    problem = check_available(cfg)
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
