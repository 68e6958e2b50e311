"""Iterative magnitude pruning with rewinding (Frankle, Schwab, Morcos 2020,
"The early phase of neural network training"): the pure pieces a multi-level
trial calls. No training loop lives here.

One level of IMP with rewinding to iteration k:

    masks = initial_masks(model)                          # level 0: dense
    ... train; keep snapshot = clone of model.state_dict() at step k ...
    masks = global_magnitude_prune(model, masks, rate)   # end of a level
    rewind(model, masks, snapshot)                        # survivors back to step k
    ablate(model, masks, cfg.ablation, generator, build)  # optional control
    enforcer = MaskEnforcer(model, masks)                 # enforcer(opt) after every step
    ... train the next level from step k ...

What is pruned: the weight of every Linear/Conv1d/Conv2d module, chosen by
module type (`models.prunable_parameters`), never by name. Biases and
normalisation parameters (BatchNorm, LayerNorm, GroupNorm are not such
modules) stay dense, and so do the weights named in `PruningConfig.exclude`.

Masks are `{state_dict name: bool tensor}`, True = the weight survives. Pass
the model itself, not a DistributedDataParallel wrapper, so names carry no
`module.` prefix. Random draws come from an explicit CPU `torch.Generator`,
never the global RNG, so the same generator state gives the same network on
any device.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
import torch
from torch import nn

from dynamics_core import probes
from dynamics_core.config import Ablation, PruningConfig
from dynamics_core.models import prunable_parameters

Masks = dict[str, torch.Tensor]
# `Ablation` and `PruningConfig` live in dynamics_core.config (the trial's `pruning` section)


def ablation_generator(cfg: PruningConfig, trial_seed: int, level: int) -> torch.Generator:
    """The CPU generator for the ablation at `level`: seeded by
    (cfg.ablation_seed, or the trial seed when None) * 2654435761 + level."""
    seed = cfg.ablation_seed if cfg.ablation_seed is not None else trial_seed
    return torch.Generator(device="cpu").manual_seed((seed * 2_654_435_761 + level) % 2**63)


# ------------------------------------------------------------------ masks
def prunable(model: nn.Module, exclude: Iterable[str] = ()) -> dict[str, nn.Parameter]:
    """`{name: weight}` of the Linear/Conv layers in module order, less `exclude`."""
    params, exclude = prunable_parameters(model), set(exclude)
    unknown = sorted(exclude - set(params))
    if unknown:
        raise KeyError(f"exclude names {unknown} are not prunable weights; "
                       f"valid names: {list(params)}")
    return {n: p for n, p in params.items() if n not in exclude}


def initial_masks(model: nn.Module, exclude: Iterable[str] = ()) -> Masks:
    """All-True masks (CPU) for every prunable weight not in `exclude`."""
    return {n: torch.ones(p.shape, dtype=torch.bool) for n, p in prunable(model, exclude).items()}


def _params(model_or_params: nn.Module | Mapping[str, torch.Tensor],
            masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors the masks refer to, checked by name and shape."""
    source = (dict(model_or_params.named_parameters())
              if isinstance(model_or_params, nn.Module) else model_or_params)
    missing = sorted(set(masks) - set(source))
    if missing:
        raise KeyError(f"masks name {missing}, which the model lacks; valid names: {list(source)}")
    for name, m in masks.items():
        if tuple(m.shape) != tuple(source[name].shape):
            raise ValueError(f"mask {name!r} has shape {tuple(m.shape)}, "
                             f"weight has {tuple(source[name].shape)}")
    return {n: source[n] for n in masks}


def prune_count(remaining: int, rate: float) -> int:
    """How many of `remaining` weights one level prunes: floor(rate * remaining + 0.5),
    i.e. rate * remaining rounded half up. Iterating r -> r - prune_count(r, 0.2)
    from the weight count gives 0.8^L of it, to this rounding, after L levels."""
    return math.floor(rate * remaining + 0.5)


def global_magnitude_prune(model_or_params: nn.Module | Mapping[str, torch.Tensor],
                           masks: Mapping[str, torch.Tensor], rate: float = 0.2) -> Masks:
    """New masks with the `prune_count(remaining, rate)` smallest-magnitude
    surviving weights, compared across all masked layers at once, also pruned.

    Order: ascending (|w|, global flat index), where the global index runs over
    the layers in mask order and row-major within each layer, so among equal
    magnitudes the earlier weight is pruned first. Pruned weights stay pruned
    whatever their current value. The inputs are not modified.
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    params = _params(model_or_params, masks)
    flat_masks = [masks[n].detach().cpu().reshape(-1) for n in masks]
    flat_abs = [params[n].detach().cpu().double().abs().reshape(-1) for n in masks]
    alive = torch.cat(flat_masks)
    survivors = torch.nonzero(alive).squeeze(1)               # ascending global index
    n_prune = prune_count(len(survivors), rate)
    order = torch.sort(torch.cat(flat_abs)[survivors], stable=True).indices
    alive = alive.clone()
    alive[survivors[order[:n_prune]]] = False
    out, start = {}, 0
    for name, m in zip(masks, flat_masks):
        out[name] = alive[start:start + m.numel()].reshape(masks[name].shape)
        start += m.numel()
    return out


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Set every masked weight to exactly +0.0, in place."""
    params = _params(model, masks)
    with torch.no_grad():
        for name, m in masks.items():
            params[name].masked_fill_(~m.to(params[name].device), 0.0)


def sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of the masked weights that are pruned (0.0 for dense masks)."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return (total - kept) / total if total else 0.0


def layer_sparsity(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """`{name: fraction pruned}` per masked weight."""
    return {n: (m.numel() - int(m.sum())) / m.numel() for n, m in masks.items()}


def masks_to_state(masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Masks as plain CPU bool tensors: `torch.save` them, `torch.load(weights_only=True)` back."""
    return {n: m.detach().to("cpu", torch.bool).clone() for n, m in masks.items()}


def masks_from_state(state: Mapping[str, torch.Tensor],
                     model: nn.Module | None = None) -> Masks:
    """Masks from `masks_to_state` output; checked against `model` when given."""
    masks = {n: torch.as_tensor(t).to("cpu", torch.bool).clone() for n, t in state.items()}
    if model is not None:
        _params(model, masks)
    return masks


class MaskEnforcer:
    """Keeps the masked weights exactly zero while the model trains.

    Contract: call `enforcer(optimizer)` after every `optimizer.step()`, before
    anything else reads the model. It zeroes the masked weights and, in the
    optimizer's per-parameter state, every tensor shaped like its weight (SGD
    `momentum_buffer`, Adam `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`) at the
    masked positions. For element-wise optimizers (SGD with momentum, Nesterov
    and weight decay; Adam) the surviving weights then follow exactly the
    trajectory they would with masked gradients, since every step starts from
    zero weight and zero state at the masked positions. `mask_gradients()`
    (between backward and step) is optional: it also keeps the step itself sparse.

    State: `state_dict()` -> {"masks": plain CPU bool tensors}; with
    `load_state_dict` a resumed trial gets the same masks back.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]):
        self.model = model
        self._set(masks)

    def _set(self, masks: Mapping[str, torch.Tensor]) -> None:
        self.params = _params(self.model, masks)
        self.masks = {n: m.to(self.params[n].device, torch.bool) for n, m in masks.items()}
        self._pruned = {n: ~m for n, m in self.masks.items()}

    def __call__(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        with torch.no_grad():
            for name, p in self.params.items():
                p.masked_fill_(self._pruned[name], 0.0)
                state = optimizer.state.get(p, {}) if optimizer is not None else {}
                for value in state.values():
                    if isinstance(value, torch.Tensor) and value.shape == p.shape:
                        value.masked_fill_(self._pruned[name], 0.0)

    def mask_gradients(self) -> None:
        """Zero the `.grad` of every masked weight (where a gradient exists)."""
        with torch.no_grad():
            for name, p in self.params.items():
                if p.grad is not None:
                    p.grad.masked_fill_(self._pruned[name], 0.0)

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"masks": masks_to_state(self.masks)}

    def load_state_dict(self, state: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        self._set(masks_from_state(state["masks"]))


# ------------------------------------------------------------- rewinding
def rewind(model: nn.Module, masks: Mapping[str, torch.Tensor],
           snapshot: Mapping[str, torch.Tensor]) -> None:
    """Load the whole saved state (`model.state_dict()` cloned at step k, k=0 the
    initialisation: every parameter and buffer, BatchNorm statistics included),
    then zero the masked weights. The snapshot itself is not modified."""
    model.load_state_dict(snapshot)
    apply_masks(model, masks)


ABLATIONS: dict[str, str] = {
    "none": "the rewound network as it is",
    "random_magnitudes_kept_signs":
        "sign kept, magnitude drawn from |N(0, s^2)|, s = root mean square of "
        "the layer's surviving rewound values",
    "kept_magnitudes_random_signs": "magnitude kept, sign drawn +1/-1 with probability 1/2",
    "shuffle_layer": "surviving values permuted uniformly within each layer",
    "shuffle_network": "surviving values permuted uniformly across all masked layers",
    "reinit": "surviving values taken from a fresh model build(seed), seed drawn from "
              "the generator (the model's own initialiser, not its layers' defaults)",
}


def ablate(model: nn.Module, masks: Mapping[str, torch.Tensor], ablation: str,
           generator: torch.Generator,
           build: Callable[[int], nn.Module] | None = None) -> None:
    """Apply a rewind-point control in place to the surviving masked weights.

    Masked weights stay exactly 0; biases, normalisation parameters, buffers
    and excluded weights keep their (rewound) values. `generator` is a CPU
    generator (`ablation_generator`); the draws run layer by layer in mask
    order, so one generator state gives one network. "reinit" needs `build`,
    which makes a fresh model of the same architecture from an int seed (a
    trial passes `lambda s: models.build(cfg.model, shape, classes, s)`); the
    layers' `reset_parameters` would not reproduce custom initialisers.
    """
    if ablation not in ABLATIONS:
        raise KeyError(f"unknown ablation {ablation!r}; valid names: {sorted(ABLATIONS)}")
    if ablation == "none":
        return
    params = _params(model, masks)
    alive = {n: m.to("cpu", torch.bool) for n, m in masks.items()}
    values = {n: params[n].detach().cpu()[alive[n]] for n in masks}   # survivors, row-major
    if ablation == "random_magnitudes_kept_signs":
        for n, v in values.items():
            if v.numel():
                s = v.double().pow(2).mean().sqrt()
                mag = torch.randn(v.shape, generator=generator, dtype=torch.float64).abs() * s
                values[n] = (torch.sign(v).double() * mag).to(v.dtype)
    elif ablation == "kept_magnitudes_random_signs":
        for n, v in values.items():
            signs = torch.randint(0, 2, v.shape, generator=generator) * 2 - 1
            values[n] = v.abs() * signs.to(v.dtype)
    elif ablation == "shuffle_layer":
        for n, v in values.items():
            values[n] = v[torch.randperm(v.numel(), generator=generator)]
    elif ablation == "shuffle_network":
        flat = torch.cat([v.double() for v in values.values()])
        flat = flat[torch.randperm(flat.numel(), generator=generator)]
        start = 0
        for n, v in values.items():
            values[n] = flat[start:start + v.numel()].to(v.dtype)
            start += v.numel()
    elif ablation == "reinit":
        if build is None:
            raise ValueError("ablation 'reinit' needs build(seed) -> a fresh model")
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        fresh = _params(build(seed), masks)
        values = {n: fresh[n].detach().cpu()[alive[n]].to(values[n].dtype) for n in masks}
    with torch.no_grad():
        for n, p in params.items():
            new = torch.zeros(p.shape, dtype=p.dtype)
            new[alive[n]] = values[n]
            p.copy_(new)


# -------------------------------------------------------------- timeline
def _restricted(model: nn.Module, reference: Mapping[str, torch.Tensor],
                masks: Mapping[str, torch.Tensor] | None) -> tuple[list, list]:
    """The prunable weights of `model` and `reference` (survivors only when masked)."""
    names = list(masks) if masks is not None else list(prunable(model))
    params = _params(model, {n: reference[n] for n in names})   # names and shapes agree
    now = [params[n].detach() for n in names]
    ref = [reference[n].detach().to(p.device) for n, p in zip(names, now)]
    if masks is None:
        return now, ref
    keep = [masks[n].to(p.device) for n, p in zip(names, now)]
    return [p[k] for p, k in zip(now, keep)], [r[k] for r, k in zip(ref, keep)]


def weight_distance(model: nn.Module, reference: Mapping[str, torch.Tensor],
                    masks: Mapping[str, torch.Tensor] | None = None,
                    relative: bool = False) -> float:
    """`probes.distance_from_init` over the prunable weights only (the surviving
    ones when `masks` is given): ‖w − w_ref‖₂, over ‖w_ref‖₂ when `relative`.
    `reference` is a state dict, e.g. the initialisation or the rewind point."""
    now, ref = _restricted(model, reference, masks)
    return probes.distance_from_init(now, ref, relative=relative)


def weight_sign_flips(model: nn.Module, reference: Mapping[str, torch.Tensor],
                      masks: Mapping[str, torch.Tensor] | None = None) -> float:
    """`probes.sign_flip_fraction` over the prunable weights only (the surviving
    ones when `masks` is given) against a reference state dict."""
    now, ref = _restricted(model, reference, masks)
    return probes.sign_flip_fraction(now, ref)


def clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of `model.state_dict()`: the snapshot `rewind` takes."""
    return {n: t.detach().to("cpu", copy=True) for n, t in model.state_dict().items()}


__all__ = [
    "ABLATIONS", "Ablation", "MaskEnforcer", "Masks", "PruningConfig", "ablate",
    "ablation_generator", "apply_masks", "clone_state", "global_magnitude_prune",
    "initial_masks", "layer_sparsity", "masks_from_state", "masks_to_state", "prunable",
    "prune_count", "rewind", "sparsity", "weight_distance", "weight_sign_flips",
]
