"""Side-effect-free execution of probes.

`probe_mode` puts a model into the mode a probe needs (eval by default: dropout
off, BatchNorm on running statistics) and, on exit, restores every submodule's
`training` flag and every buffer (so a BatchNorm in train mode cannot leak
updated running statistics into training). Autocast is switched off inside, so
probes run in the parameters' dtype (fp32) even when training uses bf16, and
gradients are enabled even if the caller is inside `torch.no_grad()`.

The small helpers here are shared by all probes: the list of trainable
parameters, flattening, and a probe-owned random generator.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)
DEFAULT_SEED = 0


@contextlib.contextmanager
def probe_mode(model: nn.Module, train: bool = False,
               bn_mode: str | None = None) -> Iterator[nn.Module]:
    """Run `model` with all modules in `train` mode; BatchNorm modules follow
    `bn_mode` ("eval" | "train") when given. Restores flags and buffers on exit."""
    if bn_mode not in (None, "eval", "train"):
        raise ValueError(f"bn_mode must be 'eval' or 'train', got {bn_mode!r}")
    flags = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        model.train(train)
        if bn_mode is not None:
            for m in model.modules():
                if isinstance(m, _BN_TYPES):
                    m.train(bn_mode == "train")
        with _no_autocast(model), torch.enable_grad():
            yield model
    finally:
        for m, flag in flags:
            m.training = flag
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


def _no_autocast(model: nn.Module):
    p = next(model.parameters(), None)
    device_type = p.device.type if p is not None else "cpu"
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:  # a device type autocast does not know
        return contextlib.nullcontext()


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """Parameters a probe differentiates: `requires_grad=True`, model order."""
    return [p for p in model.parameters() if p.requires_grad]


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vec: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out, i = [], 0
    for t in like:
        out.append(vec[i:i + t.numel()].view_as(t))
        i += t.numel()
    return out


def make_generator(generator: torch.Generator | None,
                   seed: int = DEFAULT_SEED) -> torch.Generator:
    """The probe's own generator; `None` -> a fresh CPU generator with a fixed
    seed (deterministic, and the global RNG is never touched)."""
    if generator is not None:
        return generator
    return torch.Generator(device="cpu").manual_seed(seed)


def rademacher(n: int, generator: torch.Generator, device, dtype) -> torch.Tensor:
    v = torch.randint(0, 2, (n,), generator=generator, device=generator.device)
    return (2 * v - 1).to(device=device, dtype=dtype)


def to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
