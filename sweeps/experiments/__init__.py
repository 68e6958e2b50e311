"""Experiments: one module per line of work, found through one registry.

An `Experiment` holds everything one paper needs: its conjectures (pure
functions `SweepTable -> list[Verdict]`, named `<experiment>.<conjecture>`),
its figures (`(table, sources) -> Figure | None`, by file name), its tables
(`(table) -> DataFrame | None`, by file name) and the names of its specs.
`judge`, `report` and the CLI look experiments up here and have no per-paper
code. Adding an experiment is one module that calls `register(...)` (plus its
specs and tests); a plugin outside this package does the same and is loaded
by naming its module in a spec's `plugins:` list.

    from sweeps import experiments
    for v in experiments.evaluate(["breakeven.c1_lr", "regimes.momentum"], table):
        print(v.summary())
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol

import numpy as np

from sweeps.conjectures.verdict import Verdict

Conjecture = Callable[..., list[Verdict]]


class Sources(Protocol):
    """What a figure may read beyond the table: bulky probe artifacts of a trial."""

    def probe_arrays(self, run_id: str, name: str) -> dict[int, np.ndarray]: ...


FigureFn = Callable[[Any, "Sources | None"], Any]
TableFn = Callable[[Any], Any]


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    conjectures: Mapping[str, Conjecture]               # full name -> function
    figures: Mapping[str, FigureFn] = field(default_factory=dict)   # file name -> function
    tables: Mapping[str, TableFn] = field(default_factory=dict)     # file name -> function
    specs: tuple[str, ...] = ()                          # spec files under sweeps/specs/

    def __post_init__(self) -> None:
        wrong = [n for n in self.conjectures if not n.startswith(self.name + ".")]
        if wrong:
            raise ValueError(f"experiment {self.name!r}: conjecture names must start with "
                             f"'{self.name}.': {wrong}")


REGISTRY: dict[str, Experiment] = {}
BUILT_IN = ("breakeven", "regimes", "large_lr", "stiffness", "frequency", "critical_periods",
            "early_phase")


def register(experiment: Experiment) -> Experiment:
    """Add an experiment; a second one under the same name or a conjecture
    name already taken is an error."""
    if experiment.name in REGISTRY and REGISTRY[experiment.name] is not experiment:
        raise ValueError(f"experiment {experiment.name!r} is already registered")
    taken = set(experiment.conjectures) & set(_conjectures(exclude=experiment.name))
    if taken:
        raise ValueError(f"conjecture name(s) already registered: {sorted(taken)}")
    REGISTRY[experiment.name] = experiment
    return experiment


def load_plugins(modules: Iterable[str]) -> None:
    """Import plugin modules (each registers its experiments and probes on import)."""
    for module in modules:
        importlib.import_module(module)


def names() -> list[str]:
    """Every registered experiment name, sorted."""
    return sorted(REGISTRY)


def get(name: str) -> Experiment:
    """The experiment called `name`; KeyError listing the valid names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown experiment {name!r}; valid names: {', '.join(names())}") from None


def conjecture_names() -> list[str]:
    """Every registered conjecture name, sorted."""
    return sorted(_conjectures())


def conjecture(name: str) -> Conjecture:
    """The conjecture function called `name`; KeyError listing the valid names."""
    try:
        return _conjectures()[name]
    except KeyError:
        raise KeyError(f"unknown conjecture {name!r}; valid names: "
                       f"{', '.join(conjecture_names())}") from None


def experiment_of(conjecture_name: str) -> Experiment:
    """The experiment a conjecture belongs to."""
    conjecture(conjecture_name)
    return REGISTRY[conjecture_name.split(".", 1)[0]]


def evaluate(conjecture_names: Iterable[str], table: Any,
             options: Mapping[str, Mapping[str, Any]] | None = None) -> list[Verdict]:
    """Run the named conjectures on one table, in order; `options[name]` are its kwargs.

    Every name is looked up before anything runs, so a typo fails fast.
    """
    conjecture_names = list(conjecture_names)
    funcs = [conjecture(n) for n in conjecture_names]
    options = options or {}
    out: list[Verdict] = []
    for n, f in zip(conjecture_names, funcs):
        out.extend(f(table, **dict(options.get(n, {}))))
    return out


def _conjectures(exclude: str | None = None) -> dict[str, Conjecture]:
    return {n: f for e in REGISTRY.values() if e.name != exclude for n, f in e.conjectures.items()}


for _module in BUILT_IN:
    importlib.import_module(f"sweeps.experiments.{_module}")
