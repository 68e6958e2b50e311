"""The probe registry: which hook measures what a `ProbesConfig` switches on.

One entry per probe family, keyed by its name: a bool field of
`ProbesConfig` (the family runs when the flag is true) or any other name (it
runs when `probes.extra` lists it). `default_hooks` builds the hooks of a
trial from the config and this registry alone: there is no second list to
keep in step, and a true flag without a registered probe is an error.

An entry also says what the service shows of the family, so that the generic
code (the trial's sink, `dynsweep status`, the live progress line) knows no
metric name: its `summaries` (`summary.py`: logged once at a trial's end,
e.g. `Peak("hessian/top")` for `hessian/top_max`, `…_argmax_step`,
`…_breakeven_step`) and its headline `columns` (metric key -> short label,
e.g. `{"hessian/top": "λ_H¹"}`), which the driver records in the sweep's
manifest at launch (`sweeps.context.SweepContext.columns`) for the torch-free
`status` to read back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from dynamics_core.config import ProbesConfig, TrialConfig
from dynamics_core.data import Dataset
from dynamics_core.hooks import Hook
from dynamics_core.measure.base import ProbeSet
from dynamics_core.measure.loss import LossProbe
from dynamics_core.measure.patch import PatchAccuracy
from dynamics_core.measure.summary import Summary

ProbeFactory = Callable[[ProbesConfig, ProbeSet], Hook]


@dataclass(frozen=True)
class Probe:
    """One registered probe family: its hook factory, its end-of-trial
    summaries and its headline columns ((metric key, short label), in order)."""

    name: str
    factory: ProbeFactory
    summaries: tuple[Summary, ...] = ()
    columns: tuple[tuple[str, str], ...] = ()


_REGISTRY: dict[str, Probe] = {}


def flags() -> list[str]:
    """The bool fields of ProbesConfig, in declaration order."""
    return [n for n, f in ProbesConfig.model_fields.items() if f.annotation in (bool, "bool")]


def register_probe(name: str, factory: ProbeFactory, *, summaries: Sequence[Summary] = (),
                   columns: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> ProbeFactory:
    """Add a probe family: `factory(probes_config, probe_set)` returns its hook
    (a probe hook, `dynamics_core.hooks`). `name` is a ProbesConfig flag or a
    new name that `probes.extra` enables. `summaries` are logged once at the
    end of each trial that runs it (`summary.Summary`, e.g. `Peak(key)`);
    `columns` maps its headline metric keys to the short labels `dynsweep
    status` and the progress line show. Registering a name twice with another
    factory is an error (the same factory again replaces its entry)."""
    if name in ProbesConfig.model_fields and name not in flags():
        raise ValueError(f"{name!r} is a ProbesConfig setting, not a flag; valid flags: {flags()}")
    if name in _REGISTRY and _REGISTRY[name].factory is not factory:
        raise ValueError(f"probe {name!r} is already registered")
    columns = tuple((str(k), str(v)) for k, v in (columns.items() if isinstance(columns, Mapping) else columns))
    _REGISTRY[name] = Probe(name, factory, tuple(summaries), columns)
    return factory


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> ProbeFactory:
    return probe(name).factory


def probe(name: str) -> Probe:
    """The registry entry of a probe family (factory, summaries, columns)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown probe {name!r}; valid: {', '.join(names())}") from None


def _families(cfg: ProbesConfig | None) -> list[Probe]:
    """The enabled families of `cfg`, in `enabled` order; with None, every
    registered family (flags in declaration order, then the others)."""
    if cfg is not None:
        return [probe(n) for n in enabled(cfg)]
    order = flags()
    return sorted(_REGISTRY.values(), key=lambda p: order.index(p.name) if p.name in order else len(order))


def probe_summaries(cfg: ProbesConfig | None = None) -> list[Summary]:
    """The end-of-trial summaries of the families `cfg` enables (None: of every
    registered family; a summary of a series the trial never logged gives nothing)."""
    return [s for p in _families(cfg) for s in p.summaries]


def probe_columns(*cfgs: ProbesConfig) -> list[tuple[str, str]]:
    """The headline (metric key, label) columns of the families any of `cfgs`
    enables, each once, in `enabled` order of the first config that enables it."""
    out: dict[str, str] = {}
    for cfg in cfgs:
        for p in _families(cfg):
            for key, label in p.columns:
                out.setdefault(key, label)
    return list(out.items())


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
