"""Training-data deficits with epoch windows [start_epoch, end_epoch).

blur: 2-D images 32→8→32 (bilinear, antialiased), 1-D signals 40→10→40
  (the same resampling on a 1-pixel-high image); always down by 4.
vflip: images upside down; 1-D signals negated (the plot flipped vertically).
label_permutation: a fixed, seeded permutation of the classes.
noise: inputs replaced by Gaussian noise with the training set's mean and
  std, drawn per batch from a generator seeded by the step (resumable).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dynamics_core.config import DeficitConfig

KINDS = ("none", "blur", "vflip", "label_permutation", "noise")


def blur(x: torch.Tensor, factor: int = 4) -> torch.Tensor:
    img = x.view(x.shape[0], 1, 1, x.shape[1]) if x.ndim == 2 else x
    if x.ndim == 3:                      # (N, C, L) signals
        img = x.unsqueeze(2)
    h, w = img.shape[-2:]
    small = (max(1, h // factor) if h > 1 else 1, max(1, w // factor))
    down = F.interpolate(img, size=small, mode="bilinear", antialias=True, align_corners=False)
    up = F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False)
    return up.reshape(x.shape)


def vflip(x: torch.Tensor) -> torch.Tensor:
    return -x if x.ndim <= 3 else x.flip(-2)


class DeficitView:
    """Applies the configured deficit to batches whose epoch is in the window."""

    def __init__(self, cfg: DeficitConfig, x_train: torch.Tensor, num_classes: int, seed: int):
        self.cfg = cfg
        self.seed = seed
        self._blurred = blur(x_train) if cfg.kind == "blur" else None
        g = torch.Generator().manual_seed(seed + 15485863)
        self._perm = torch.randperm(max(num_classes, 1), generator=g).to(x_train.device)
        self._mean = x_train.mean().item()
        self._std = x_train.std().item()

    def active(self, epoch: int) -> bool:
        return self.cfg.kind != "none" and self.cfg.start_epoch <= epoch < self.cfg.end_epoch

    def apply(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
              epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.active(epoch):
            return x, y
        kind = self.cfg.kind
        if kind == "blur":
            return self._blurred[idx], y
        if kind == "vflip":
            return vflip(x), y
        if kind == "label_permutation":
            return x, self._perm[y]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        noise = torch.randn(x.shape, generator=g).to(x.device)
        return noise * self._std + self._mean, y
