"""scikit-learn's bundled 8×8 handwritten digits: small real images, offline.

`sklearn.datasets.load_digits` reads 1797 grey 8×8 images (10 classes, about
180 each; pixel values 0–16) from a file inside the scikit-learn package, so
nothing is downloaded. They are the image setting of the frequency-principle
papers at a size a 2-core machine trains in seconds per epoch.

Split: a fixed class-stratified split by `data.data_seed`, a quarter of each
class to the test set (450 images) and the rest to training (1347). Pixels
are scaled by 1/16, then standardised by the training set's mean and
standard deviation (one scalar each, as the torchvision sets use per-channel
constants). Shape (N, 1, 8, 8), float32.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dynamics_core.config import DataConfig
from dynamics_core.data.dataset import RawSplit

TEST_FRACTION = 0.25
NUM_CLASSES = 10


def split_indices(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices, sorted: per class, a seeded quarter to the test set."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(TEST_FRACTION * idx.size))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load(cfg: DataConfig, cache_dir: Path) -> RawSplit:
    from sklearn.datasets import load_digits     # scikit-learn ships the images

    bunch = load_digits()
    x = bunch.images.astype(np.float32) / 16.0
    y = bunch.target.astype(np.int64)
    tr, te = split_indices(y, cfg.data_seed)
    mean, std = float(x[tr].mean()), float(x[tr].std())
    x = (x - mean) / std
    as_x = lambda i: torch.from_numpy(np.ascontiguousarray(x[i][:, None]))  # noqa: E731
    return RawSplit(as_x(tr), torch.from_numpy(y[tr]), as_x(te), torch.from_numpy(y[te]),
                    num_classes=NUM_CLASSES)
