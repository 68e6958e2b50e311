"""The in-memory data set record and the seeded probe-set draw."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch


@dataclass(frozen=True)
class Dataset:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int                      # 1 for regression
    input_shape: tuple[int, ...]
    task: Literal["classification", "regression"] = "classification"
    y_train_clean: torch.Tensor | None = None   # before label noise
    x_patch_only: torch.Tensor | None = None    # patch data: inputs holding only the patch

    @property
    def n_train(self) -> int:
        return int(self.y_train.shape[0])

    def to(self, device: torch.device | str) -> "Dataset":
        move = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return replace(self, **move)


def probe_indices(n: int, size: int, seed: int) -> torch.Tensor:
    """A fixed, seeded draw of min(size, n) distinct indices (own generator)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[: min(size, n)].sort().values


@dataclass(frozen=True)
class RawSplit:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    task: Literal["classification", "regression"] = "classification"
