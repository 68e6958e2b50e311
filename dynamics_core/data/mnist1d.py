"""MNIST-1D, generated procedurally offline and cached to disk once.

Uses `mnist1d.data.make_dataset` with the package's default arguments
(4000 train / 1000 test, length 40, 10 classes). Never `get_dataset`, which
downloads.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from dynamics_core.config import DataConfig
from dynamics_core.data.dataset import RawSplit


def load(cfg: DataConfig, cache_dir: Path) -> RawSplit:
    root = Path(cfg.root) if cfg.root else cache_dir
    path = root / "mnist1d_default_seed42.pt"
    if not path.exists():
        _generate(path)
    blob = torch.load(path, weights_only=True)
    return RawSplit(blob["x"], blob["y"], blob["x_test"], blob["y_test"], num_classes=10)


def _generate(path: Path) -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    blob = {
        "x": torch.tensor(data["x"], dtype=torch.float32),
        "y": torch.tensor(data["y"], dtype=torch.int64),
        "x_test": torch.tensor(data["x_test"], dtype=torch.float32),
        "y_test": torch.tensor(data["y_test"], dtype=torch.int64),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")   # atomic: trials race
    os.close(fd)
    torch.save(blob, tmp)
    os.replace(tmp, path)
