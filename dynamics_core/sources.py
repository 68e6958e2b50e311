"""Where each data set comes from, without torch.

mnist1d and sine1d are generated here and digits ship inside scikit-learn;
CIFAR-10, MNIST and FashionMNIST are read by torchvision from a local root
(`SETS`). `check_available` says,
before anything is loaded, whether a config's data set can be loaded on this
machine: a spec is checked without importing torch.
"""
from __future__ import annotations

from pathlib import Path

from dynamics_core.config import DataConfig

# name -> (torchvision class name, folder torchvision looks for under root, mean, std)
SETS = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "mnist": ("MNIST", "MNIST/raw", (0.1307,), (0.3081,)),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", (0.2860,), (0.3530,)),
}


def check_available(cfg: DataConfig, cache_dir: str | Path) -> str | None:
    """None when the data set can be loaded here, else a message naming the path."""
    if cfg.dataset in SETS:
        return vision_problem(cfg)
    return None


def vision_problem(cfg: DataConfig) -> str | None:
    """None when torchvision can load the set from its root (or may download it)."""
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
