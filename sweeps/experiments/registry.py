"""The experiments' registry: `Experiment`, `@conjecture`, `register`, the
lookups (`get`, `get_conjecture`, `experiment_of`), `evaluate`, and the
plans a sweep registers (`registered_plans`, `plans_hash`). Experiments
import this module; `sweeps.experiments` imports them (the built-ins, in
`BUILT_IN`) after it, so the dependency runs one way.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np

from sweeps.conjectures.plan import AnalysisPlan, parse_window
from sweeps.conjectures.verdict import Verdict, finalize
from sweeps.table import SweepTable

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

Plans = Mapping[str, AnalysisPlan]          # verdict name -> plan


class Sources(Protocol):
    """What a figure may read beyond the table: bulky probe artifacts of a trial."""

    def probe_arrays(self, run_id: str, name: str) -> dict[int, np.ndarray]: ...


FigureFn = Callable[[SweepTable, "Sources | None"], "Figure | None"]
TableFn = Callable[[SweepTable], "pd.DataFrame | None"]


class Conjecture:
    """A conjecture as registered: `fn(table, plans, **options)` with its full
    name and its verdicts' registered plans.

    Called as `c(table, plans=None, **options)`: `fn` gets the registered
    plans with the given ones over them (`own_plans`), so a caller may
    override some plans and a direct call needs none.
    """

    def __init__(self, fn: Callable[..., list[Verdict]], name: str, plans: Plans) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name
        self.plans: Plans = MappingProxyType(dict(plans))

    def __call__(self, table: SweepTable, plans: Plans | None = None,
                 **options: Any) -> list[Verdict]:
        return self.fn(table, own_plans(self.plans, self.name, plans), **options)

    def __repr__(self) -> str:
        return f"<conjecture {self.name}>"


def conjecture(plans: Plans | None = None, *,
               experiment: str | None = None) -> Callable[[Callable[..., list[Verdict]]], Conjecture]:
    """Make `fn(table, plans, **options)` a `Conjecture` named `<experiment>.<fn name>`.

    The experiment is the one every plan in `plans` names (`plan.conjecture`
    is `<experiment>.<conjecture>`), else `experiment`; of `plans` the
    conjecture keeps those of its own verdicts, and must have at least one.
    """
    owners = {p.conjecture.split(".", 1)[0] for p in (plans or {}).values()}
    if experiment is None and len(owners) != 1:
        raise ValueError("@conjecture needs plans of one experiment or `experiment=`; "
                         f"the plans name {sorted(owners) or 'none'}")
    prefix = experiment or owners.pop()

    def make(fn: Callable[..., list[Verdict]]) -> Conjecture:
        name = f"{prefix}.{fn.__name__}"
        mine = {k: p for k, p in (plans or {}).items() if _conjecture_of(k) == name}
        if plans and not mine:
            raise ValueError(f"no plan for conjecture {name!r} among {sorted(plans)}")
        return Conjecture(fn, name, mine)

    return make


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    # full name -> function, or the `Conjecture`s (keyed by their names)
    conjectures: Mapping[str, Callable[..., list[Verdict]]] | Sequence[Conjecture]
    figures: Mapping[str, FigureFn] = field(default_factory=dict)   # file name -> function
    tables: Mapping[str, TableFn] = field(default_factory=dict)     # file name -> function
    specs: tuple[str, ...] = ()                          # spec files under sweeps/specs/
    # verdict name -> plan; by default those of the `Conjecture`s
    plans: Plans = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.conjectures, Mapping):
            object.__setattr__(self, "conjectures", {c.name: c for c in self.conjectures})
        if not self.plans:
            object.__setattr__(self, "plans", {k: p for c in self.conjectures.values()
                                               if isinstance(c, Conjecture)
                                               for k, p in c.plans.items()})
        wrong = [n for n in self.conjectures if not n.startswith(self.name + ".")]
        if wrong:
            raise ValueError(f"experiment {self.name!r}: conjecture names must start with "
                             f"'{self.name}.': {wrong}")
        for key, plan in self.plans.items():
            if _conjecture_of(key) != plan.conjecture or plan.conjecture not in self.conjectures:
                raise ValueError(f"experiment {self.name!r}: plan {key!r} must be keyed by its "
                                 "verdict's name, `<conjecture>` or `<conjecture>[<part>]`, "
                                 "and name one of the experiment's conjectures")


REGISTRY: dict[str, Experiment] = {}


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


def get_conjecture(name: str) -> Callable[..., list[Verdict]]:
    """The conjecture called `name`; KeyError listing the valid names."""
    try:
        return _conjectures()[name]
    except KeyError:
        raise KeyError(f"unknown conjecture {name!r}; valid names: "
                       f"{', '.join(conjecture_names())}") from None


def experiment_of(conjecture_name: str) -> Experiment:
    """The experiment a conjecture belongs to."""
    get_conjecture(conjecture_name)
    return REGISTRY[conjecture_name.split(".", 1)[0]]


def evaluate(conjecture_names: Iterable[str], table: SweepTable,
             options: Mapping[str, Mapping[str, Any]] | None = None,
             overrides: Mapping[str, Any] | None = None,
             registered: Mapping[str, Mapping[str, Any]] | None = None) -> list[Verdict]:
    """Run the named conjectures on one table, in order, then Holm within each family.

    `options[name]` are a conjecture's keyword arguments. Each conjecture
    gets its plans (`plans_for`): the code's, marked exploratory where they
    differ from `registered` (plan dicts by verdict name, as
    `registered_plans` wrote them) or where `overrides` change them. Every
    name is looked up before anything runs, so a typo fails fast.
    """
    conjecture_names = list(conjecture_names)
    funcs = [get_conjecture(n) for n in conjecture_names]
    options = options or {}
    out: list[Verdict] = []
    used: dict[str, AnalysisPlan] = {}
    for n, f in zip(conjecture_names, funcs):
        kwargs = dict(options.get(n, {}))
        plans = plans_for(n, overrides, registered)
        if plans:
            kwargs.setdefault("plans", plans)
            used.update(kwargs["plans"])
        out.extend(f(table, **kwargs))
    return finalize(out, used.values())


# ------------------------------------------------------------------- plans
def plans_of(conjecture_name: str) -> dict[str, AnalysisPlan]:
    """The registered plans of one conjecture's verdicts, by verdict name (empty: none)."""
    get_conjecture(conjecture_name)
    plans = REGISTRY[conjecture_name.split(".", 1)[0]].plans
    return {k: p for k, p in plans.items() if _conjecture_of(k) == conjecture_name}


def own_plans(plans: Plans, conjecture_name: str,
              given: Plans | None) -> dict[str, AnalysisPlan]:
    """A conjecture's plans: `given` over the registered `plans` (what a
    `Conjecture` hands its function). A given plan must be one of the
    conjecture's verdicts."""
    mine = {k: p for k, p in plans.items() if _conjecture_of(k) == conjecture_name}
    unknown = set(given or {}) - set(mine)
    if unknown:
        raise KeyError(f"{conjecture_name} has no verdicts {sorted(unknown)}; "
                       f"its plans: {sorted(mine)}")
    return {**mine, **dict(given or {})}


def plans_for(conjecture_name: str, overrides: Mapping[str, Any] | None = None,
              registered: Mapping[str, Mapping[str, Any]] | None = None
              ) -> dict[str, AnalysisPlan]:
    """The plans a conjecture is judged under, by verdict name.

    With `registered`, a plan that differs from the registered one, or was
    not registered, is kept but marked exploratory, with the registered hash
    (or "unregistered"). `overrides` (e.g. {"window": "whole_run"}) are
    applied with `with_overrides` where they change the plan; a `detector`
    only to plans that name one. A `window` reaches every plan of the
    conjecture, also one that reads final values and ignores it (its
    verdicts still say exploratory): pick the conjectures with care.
    """
    out = {}
    for key, plan in plans_of(conjecture_name).items():
        if registered is not None:
            before = registered.get(key)
            reg_hash = AnalysisPlan.from_dict(before).hash() if before else "unregistered"
            if reg_hash != plan.hash():
                plan = dataclasses.replace(plan, exploratory=True, registered_hash=reg_hash)
        changes = _changes(plan, overrides or {})
        out[key] = plan.with_overrides(**changes) if changes else plan
    return out


def _changes(plan: AnalysisPlan, overrides: Mapping[str, Any]) -> dict[str, Any]:
    changes = {}
    for k, v in overrides.items():
        if v is None or (k == "detector" and plan.detector is None):
            continue
        v = str(parse_window(v)) if k == "window" else v
        if getattr(plan, k) != v:
            changes[k] = v
    return changes


def registered_plans(conjecture_names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Plan dicts of every verdict the named conjectures give, by verdict name.

    What a sweep records on its parent run before the trials run (`plans.json`).
    """
    out: dict[str, dict[str, Any]] = {}
    for n in conjecture_names:
        out.update({k: p.to_dict() for k, p in sorted(plans_of(n).items())})
    return out


def plans_hash(plans: Mapping[str, Mapping[str, Any] | AnalysisPlan]) -> str:
    """One hash for a set of plans: SHA-256 (12 hex digits) of {verdict name: plan hash}."""
    hashes = {k: (p if isinstance(p, AnalysisPlan) else AnalysisPlan.from_dict(p)).hash()
              for k, p in plans.items()}
    text = json.dumps(hashes, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _conjecture_of(verdict_name: str) -> str:
    """`breakeven.c1_lr` for `breakeven.c1_lr[hessian/top]`."""
    return verdict_name.split("[", 1)[0]


def _conjectures(exclude: str | None = None) -> dict[str, Callable[..., list[Verdict]]]:
    return {n: f for e in REGISTRY.values() if e.name != exclude for n, f in e.conjectures.items()}


