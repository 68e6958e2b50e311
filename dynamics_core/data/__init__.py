"""Datasets as tensors on the device, plus deficits and the fixed probe set.

`load(cfg, device, cache_dir)` returns a `Dataset`; everything here is small
enough to live in memory, so there is no DataLoader and no worker process.
"""
from __future__ import annotations

from pathlib import Path

import torch

from dynamics_core.config import DataConfig
from dynamics_core.data.dataset import Dataset, probe_indices
from dynamics_core.data.deficits import DeficitView
from dynamics_core.data.transforms import class_balanced_subset, add_label_noise, add_patches
from dynamics_core.data import digits, mnist1d, sine1d, vision
from dynamics_core.sources import check_available   # torch-free: a spec is checked without torch

__all__ = ["Dataset", "DeficitView", "load", "check_available", "probe_indices", "LOADERS"]

LOADERS = {
    "mnist1d": mnist1d.load,
    "sine1d": sine1d.load,
    "digits": digits.load,
    "cifar10": vision.load,
    "mnist": vision.load,
    "fashion_mnist": vision.load,
}


def load(cfg: DataConfig, device: torch.device | str = "cpu", cache_dir: str | Path = "runs/data") -> Dataset:
    """Build the data set of a trial: raw split, subset, label noise, patches."""
    raw = LOADERS[cfg.dataset](cfg, Path(cache_dir))
    x, y = raw.x_train, raw.y_train
    if cfg.train_size is not None and cfg.train_size < len(y):
        idx = _subset(y, cfg.train_size, cfg.data_seed, raw.task)
        x, y = x[idx], y[idx]
    x_test, y_test = raw.x_test, raw.y_test
    if cfg.test_size is not None and cfg.test_size < len(y_test):
        idx = _subset(y_test, cfg.test_size, cfg.data_seed + 1, raw.task)
        x_test, y_test = x_test[idx], y_test[idx]
    y_clean = y
    if cfg.label_noise > 0 and raw.task != "classification":
        raise ValueError(f"data.label_noise applies to classification data, not {cfg.dataset}")
    if cfg.label_noise > 0:
        y = add_label_noise(y, raw.num_classes, cfg.label_noise, seed=cfg.data_seed)
    patch_only = None
    if cfg.patch.fraction > 0:
        x, patch_only = add_patches(x, y, raw.num_classes, cfg.patch, seed=cfg.data_seed)
    ds = Dataset(
        x_train=x, y_train=y, x_test=x_test, y_test=y_test,
        num_classes=raw.num_classes, input_shape=tuple(x.shape[1:]),
        task=raw.task, y_train_clean=y_clean, x_patch_only=patch_only,
    )
    return ds.to(device)


def _subset(y: torch.Tensor, size: int, seed: int, task: str) -> torch.Tensor:
    """Class-balanced for classification; a seeded uniform draw for regression
    (real-valued targets are no classes)."""
    if task == "regression":
        return probe_indices(len(y), size, seed)
    return class_balanced_subset(y, size, seed=seed)
