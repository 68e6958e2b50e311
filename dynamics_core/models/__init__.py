"""Model registry: `get(name)`, `build(cfg, input_shape, num_classes, seed)`,
`prunable_parameters(model)`.

Every model is a `Model` (an nn.Module with `set_preact_noise(std)`), maps a batch
(N, *input_shape) to (N, num_classes) (num_classes=1 is a regression output), and
is built by `cls.from_config(cfg, input_shape, num_classes)`.

Which ModelConfig fields each model reads:

    model       width          depth  activation batchnorm      dropout preact_noise
    mlp         hidden units   yes    yes        yes            yes     yes
    cnn1d       channels       -      yes        yes            yes     yes
    cnn2d       channels       -      yes        yes            yes     yes
    simple_cnn  - (32/64/512)  -      yes        yes            yes     yes
    resnet20    - (16/32/64)   -      yes        - (always BN)  yes     yes
    allcnn      - (96/192)     -      yes        yes            yes     yes
"""
from __future__ import annotations

import torch
from torch import nn

from dynamics_core.config import ModelConfig
from dynamics_core.models._layers import Model, PreactNoise
from dynamics_core.models.allcnn import AllCNN
from dynamics_core.models.cnn1d import CNN1d
from dynamics_core.models.cnn2d import CNN2d
from dynamics_core.models.mlp import MLP
from dynamics_core.models.resnet20 import ResNet20
from dynamics_core.models.simple_cnn import SimpleCNN

MODELS: dict[str, type[Model]] = {
    "mlp": MLP,
    "cnn1d": CNN1d,
    "cnn2d": CNN2d,
    "simple_cnn": SimpleCNN,
    "resnet20": ResNet20,
    "allcnn": AllCNN,
}

PRUNABLE_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def get(name: str) -> type[Model]:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; valid names: {sorted(MODELS)}") from None


def build(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int,
          generator_seed: int) -> Model:
    """Construct `cfg.name` on the CPU with weights fixed by `generator_seed`.

    The same seed gives bitwise-identical parameters and buffers. The global RNG
    state (CPU and CUDA) is left exactly as it was: construction runs inside
    `fork_rng` and only the CPU generator is reseeded. Resolving `cfg.init_seed`
    against the trial seed is the caller's job; pass the result here.
    """
    cls = get(cfg.name)
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.default_generator.manual_seed(generator_seed)
        return cls.from_config(cfg, tuple(input_shape), num_classes)


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """`{state_dict name: weight}` for every Linear/Conv layer, in module order.

    Biases and normalisation parameters are excluded. The output layer is included;
    an IMP routine that wants to spare it (OpenLTH spares `fc.weight`) drops it itself.
    """
    return {f"{name}.weight" if name else "weight": m.weight
            for name, m in model.named_modules() if isinstance(m, PRUNABLE_LAYERS)}


__all__ = ["MODELS", "Model", "PreactNoise", "build", "get", "prunable_parameters"]
