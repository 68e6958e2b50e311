"""The probe registry: which hook measures what a `ProbesConfig` switches on.

One entry per probe family, keyed by its name: a bool field of
`ProbesConfig` (the family runs when the flag is true) or, for a plugin, any
other name (it runs when `probes.extra` lists it). `default_hooks` builds the
hooks of a trial from the config and this registry alone: there is no second
list to keep in step, and a true flag without a registered probe is an error.
"""
from __future__ import annotations

from typing import Callable

from dynamics_core.config import ProbesConfig, TrialConfig
from dynamics_core.data import Dataset
from dynamics_core.hooks import Hook
from dynamics_core.measure.base import ProbeSet
from dynamics_core.measure.loss import LossProbe
from dynamics_core.measure.patch import PatchAccuracy

ProbeFactory = Callable[[ProbesConfig, ProbeSet], Hook]

_REGISTRY: dict[str, ProbeFactory] = {}


def flags() -> list[str]:
    """The bool fields of ProbesConfig, in declaration order."""
    return [n for n, f in ProbesConfig.model_fields.items() if f.annotation in (bool, "bool")]


def register_probe(name: str, factory: ProbeFactory) -> ProbeFactory:
    """Add a probe family: `factory(probes_config, probe_set)` returns its hook
    (a probe hook, `dynamics_core.hooks`). `name` is a ProbesConfig flag or a
    new name that `probes.extra` enables. Registering a name twice with
    another factory is an error."""
    if name in ProbesConfig.model_fields and name not in flags():
        raise ValueError(f"{name!r} is a ProbesConfig setting, not a flag; valid flags: {flags()}")
    if _REGISTRY.get(name, factory) is not factory:
        raise ValueError(f"probe {name!r} is already registered")
    _REGISTRY[name] = factory
    return factory


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> ProbeFactory:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown probe {name!r}; valid: {', '.join(names())}") from None


def enabled(cfg: ProbesConfig) -> list[str]:
    """The probe families a config switches on: true flags in declaration
    order, then `extra` in its order."""
    missing = [f for f in flags() if f not in _REGISTRY]
    if missing:
        raise RuntimeError(f"ProbesConfig flags without a registered probe: {missing}")
    for name in cfg.extra:
        if name in ProbesConfig.model_fields:
            raise ValueError(f"probes.extra lists {name!r}, a ProbesConfig field: set it instead")
        get(name)
    if len(set(cfg.extra)) != len(cfg.extra):
        raise ValueError(f"probes.extra lists a name twice: {list(cfg.extra)}")
    return [f for f in flags() if getattr(cfg, f)] + list(cfg.extra)


def default_hooks(cfg: TrialConfig, data: Dataset) -> list[Hook]:
    """The measurement a trial config asks for: the loss on the probe set
    plus one hook per enabled probe family, all on one shared `ProbeSet`;
    the patch-only accuracy at each epoch end for patch data."""
    hooks: list[Hook] = []
    wanted = enabled(cfg.probes)
    if wanted:
        probes = ProbeSet(cfg.probes, data)
        hooks = [LossProbe(cfg.probes, probes), *(get(n)(cfg.probes, probes) for n in wanted)]
    if data.x_patch_only is not None:
        hooks.append(PatchAccuracy())
    return hooks
