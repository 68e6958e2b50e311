"""Experiments: one module per line of work, found through one registry.

An `Experiment` holds everything one paper needs: its conjectures (pure
functions `SweepTable -> list[Verdict]`, named `<experiment>.<conjecture>`),
the analysis plan of every verdict they give (`plans`), its figures
(`(table, sources) -> Figure | None`, by file name), its tables
(`(table) -> DataFrame | None`, by file name) and the names of its specs.
`judge`, `report` and the CLI look experiments up here and have no per-paper
code. Adding an experiment is one module that calls `register(...)` (plus its
specs and tests); a plugin outside this package does the same and is loaded
by naming its module in a spec's `plugins:` list.

The pattern every conjecture follows (see `breakeven.py`, `large_lr.py`):

1. The module writes one `AnalysisPlan` per verdict, keyed by the verdict's
   name: `breakeven.c1_lr[hessian/top]` for a conjecture that gives one
   verdict per metric, the conjecture's own name when it gives one verdict;
   `plan.conjecture` is the conjecture's name (`breakeven.c1_lr`). Where
   the parts are only known from the data (one verdict per stage-1 length T
   in `regimes.two_stage[T=5]`), one plan keyed by the conjecture's name
   serves them all and `finalize` counts each part in its family.
   Families: the tests one sweep asks together (`breakeven.c1`: the 4 tests
   of conjecture 1); alpha 0.05; `min_n` / `min_per_stratum` the floor below
   which a permutation test cannot reach alpha (10 for a trend, 5 per arm
   for a comparison), `effect_of_interest` what the paper's claim is about.
   The module docstring says why its plans' numbers are what they are.
2. The conjecture takes `plans` (its verdicts' plans, by name; default the
   registered ones: `own_plans(PLANS, name, plans)`), reads the metric,
   window, detector and exclusions from them, and returns
   `judge(plan, result, name=key, checks=...)` for each: manipulation checks as
   {check name: (passed, one-line detail)}. Called directly it gives the
   verdicts before multiplicity.
3. `Experiment(plans=PLANS)` registers them. `evaluate` hands each
   conjecture its plans (overridden or registered ones where asked), then
   `finalize` adjusts p by Holm within each family and decides again.

`registered_plans(names)` is what a sweep records before its trials run
(`plans.json` on the parent run, with `plans_hash(...)`); judging reads it
back (`sweeps.judge`). A plan that differs from the one registered, or that
was changed on the command line (`with_overrides`), gives exploratory
verdicts. A conjecture without plans still runs; its verdicts pass through
`finalize` unchanged.

    from sweeps import experiments
    for v in experiments.evaluate(["breakeven.c1_lr", "regimes.momentum"], table):
        print(v.summary())
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol

import numpy as np

from sweeps.conjectures.plan import AnalysisPlan, parse_window
from sweeps.conjectures.verdict import Verdict, finalize

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
    plans: Mapping[str, AnalysisPlan] = field(default_factory=dict)  # verdict name -> plan

    def __post_init__(self) -> None:
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
    funcs = [conjecture(n) for n in conjecture_names]
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
    conjecture(conjecture_name)
    plans = REGISTRY[conjecture_name.split(".", 1)[0]].plans
    return {k: p for k, p in plans.items() if _conjecture_of(k) == conjecture_name}


def own_plans(plans: Mapping[str, AnalysisPlan], conjecture_name: str,
              given: Mapping[str, AnalysisPlan] | None) -> dict[str, AnalysisPlan]:
    """A conjecture's plans: `given` over the module's registered `plans`.

    What a conjecture calls first: `plans = own_plans(PLANS, name, plans)`.
    A given plan must be one of the conjecture's verdicts.
    """
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


def _conjectures(exclude: str | None = None) -> dict[str, Conjecture]:
    return {n: f for e in REGISTRY.values() if e.name != exclude for n, f in e.conjectures.items()}


for _module in BUILT_IN:
    importlib.import_module(f"sweeps.experiments.{_module}")
