"""Experiments: one package (or module) per line of work, found through one registry.

An `Experiment` holds everything one paper needs: its conjectures (functions
`SweepTable -> list[Verdict]`, named `<experiment>.<conjecture>`), the
analysis plan of every verdict they give (`plans`, collected from its
conjectures), its figures (`(table, sources) -> Figure | None`, by file
name), its tables (`(table) -> DataFrame | None`, by file name) and the names
of its specs. `judge`, `report` and the CLI look experiments up here and have
no per-paper code. Adding an experiment is one module that calls
`register(...)` (plus its specs and tests); a plugin outside this package
does the same and is loaded by naming its module in a spec's `plugins:` list.
An experiment whose module would pass ~400 lines is a package:
`<name>/plans.py` (its `PLANS` and the reasons for their numbers),
`analysis.py` (readers and conjectures), `figures.py`, and `__init__.py`
(registration and the public names).

The pattern every conjecture follows (see `breakeven/`, `large_lr/`):

1. The experiment writes one `AnalysisPlan` per verdict, keyed by the
   verdict's name: `breakeven.c1_lr[hessian/top]` for a conjecture that gives
   one verdict per metric, the conjecture's own name when it gives one
   verdict; `plan.conjecture` is the conjecture's name (`breakeven.c1_lr`).
   Where the parts are only known from the data (one verdict per stage-1
   length T in `regimes.two_stage[T=5]`), one plan keyed by the conjecture's
   name serves them all and `finalize` counts each part in its family.
   Families: the tests one sweep asks together (`breakeven.c1`: the 4 tests
   of conjecture 1); alpha 0.05; `min_n` / `min_per_stratum` the floor below
   which a permutation test cannot reach alpha (10 for a trend, 5 per arm
   for a comparison), `effect_of_interest` what the paper's claim is about.
   The plans' docstring says why their numbers are what they are.
2. The conjecture is a function `(table, plans, **options)` decorated with
   `@conjecture(PLANS)`: its name is `<experiment>.<function name>` (the
   experiment the plans name; `@conjecture(experiment="toy")` for one without
   plans), and it receives its own verdicts' plans, by verdict name: the
   registered ones, or those a caller passes (`c1_lr(table, plans=...)`, a
   subset or all of them, checked to be its own). It reads the metric,
   window, detector and exclusions from them and returns
   `verdict_of(plan, result, name=key, checks=...)` for each: manipulation
   checks as {check name: (passed, one-line detail)}. Called directly it
   gives the verdicts before multiplicity.
3. `register(Experiment(conjectures=[c1_lr, ...]))` registers them with
   their plans. `evaluate` hands each conjecture its plans (overridden or
   registered ones where asked), then `finalize` adjusts p by Holm within
   each family and decides again.

`registered_plans(names)` is what a sweep records before its trials run
(`plans.json` on the parent run, with `plans_hash(...)`); judging reads it
back (`sweeps.judge`). A plan that differs from the one registered, or that
was changed on the command line (`with_overrides`), gives exploratory
verdicts. A conjecture without plans still runs; its verdicts pass through
`finalize` unchanged.

    from sweeps import experiments
    for v in experiments.evaluate(["breakeven.c1_lr", "regimes.momentum_matched"], table):
        print(v.summary())
"""
from __future__ import annotations

import importlib

from sweeps.experiments.registry import (REGISTRY, Conjecture, Experiment, FigureFn, Plans, Sources, TableFn,
                                         conjecture, conjecture_names, evaluate, experiment_of, get,
                                         get_conjecture, load_plugins, names, own_plans, plans_for,
                                         plans_hash, plans_of, register, registered_plans)

BUILT_IN = ("breakeven", "regimes", "large_lr", "stiffness", "frequency", "critical_periods",
            "early_phase", "stages")

for _module in BUILT_IN:
    importlib.import_module(f"sweeps.experiments.{_module}")

__all__ = ["BUILT_IN", "REGISTRY", "Conjecture", "Experiment", "FigureFn", "Plans", "Sources", "TableFn",
           "conjecture", "conjecture_names", "evaluate", "experiment_of", "get", "get_conjecture",
           "load_plugins", "names", "own_plans", "plans_for", "plans_hash", "plans_of", "register",
           "registered_plans"]
