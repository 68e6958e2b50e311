"""Seeded, whole-set transforms applied once when a data set is built."""
from __future__ import annotations

import torch

from dynamics_core.config import PatchConfig


def class_balanced_subset(y: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Indices of `size` examples, as equal per class as the classes allow."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(y)
    per_class = [torch.nonzero(y == c).flatten() for c in classes]
    per_class = [idx[torch.randperm(len(idx), generator=g)] for idx in per_class]
    quota = [size // len(classes)] * len(classes)
    for i in range(size - sum(quota)):
        quota[i] += 1
    chosen = torch.cat([idx[:q] for idx, q in zip(per_class, quota)])
    return chosen.sort().values


def add_label_noise(y: torch.Tensor, num_classes: int, fraction: float, seed: int) -> torch.Tensor:
    """Replace `fraction` of the labels by a uniformly drawn *different* class."""
    g = torch.Generator().manual_seed(seed + 7919)
    n = len(y)
    idx = torch.randperm(n, generator=g)[: int(round(fraction * n))]
    shift = torch.randint(1, num_classes, (len(idx),), generator=g)
    y = y.clone()
    y[idx] = (y[idx] + shift) % num_classes
    return y


def add_patches(x: torch.Tensor, y: torch.Tensor, num_classes: int, cfg: PatchConfig,
                seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Li, Wei & Ma's patch data: a fraction of examples get patch z + zeta_c.

    The patch overwrites the first `size` entries of a 1-D signal, or the
    top-left `size`×`size` corner of every channel of an image. z is one
    random vector of norm `scale`; zeta_c a random per-class vector of norm
    `zeta`. With `noise` > 0 every example's patch also gets its own Gaussian
    xi_i (std noise/sqrt(patch entries), so |xi_i| is about `noise`): a
    pattern that is easy to fit but, as the noise swamps zeta, hard to
    generalize. Returns the patched inputs and, for measuring how much the
    model relies on the patch, inputs that hold only the patch (zeros
    elsewhere) for every training example (its class's patch and its own xi_i).
    """
    g = torch.Generator().manual_seed(seed + 104729)
    shape = _patch_shape(x, cfg.size)
    z = torch.randn(shape, generator=g)
    z = cfg.scale * z / z.norm()
    zeta = torch.randn((num_classes, *shape), generator=g)
    zeta = cfg.zeta * zeta / zeta.flatten(1).norm(dim=1).view(-1, *[1] * len(shape))
    patches = z.unsqueeze(0) + zeta[y]
    carry = torch.randperm(len(y), generator=g)[: int(round(cfg.fraction * len(y)))]
    if cfg.noise > 0:
        xi = torch.randn(patches.shape, generator=g)
        patches = patches + cfg.noise / float(torch.tensor(shape).prod()) ** 0.5 * xi
    patched = x.clone()
    _paste(patched, carry, patches[carry])
    only = torch.zeros_like(x)
    _paste(only, torch.arange(len(y)), patches)
    return patched, only


def _patch_shape(x: torch.Tensor, size: int) -> tuple[int, ...]:
    if x.ndim == 2:
        return (size,)
    return (x.shape[1], size, size)


def _paste(x: torch.Tensor, idx: torch.Tensor, patches: torch.Tensor) -> None:
    if x.ndim == 2:
        x[idx, : patches.shape[1]] = patches
    else:
        s = patches.shape[-1]
        x[idx, :, :s, :s] = patches
