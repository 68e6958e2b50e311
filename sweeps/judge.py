"""A finished sweep -> verdicts on its conjectures + the papers' figures and
tables, in MLflow.

Reads the sweep's trial runs into a tidy table (`tracking.load_table`), runs
the named conjectures (default: those the spec listed, recorded on the
sweep's parent run), draws the figures and builds the tables of the
experiments those conjectures belong to (`sweeps.experiments`), and logs all
of it to the sweep's one `conjectures` run (updated in place, each judgement
kept as a versioned JSON artifact, each verdict also a tag
`verdict.<name>` for MLflow's search box, e.g. `supported` or
`supported (exploratory)`).

Plans: when the sweep's parent run carries the plans registered before its
trials ran (`plans.json`, written from `experiments.registered_plans`), every
verdict is judged under the code's plan and marked exploratory where that
plan differs from the registered one (both hashes on the verdict). Overrides
(`--window`, `--detector`) make exploratory plans too. The conjectures run
records the hash of the plans used and of those registered
(`dynsweep.plans_hash`, `dynsweep.registered_plans_hash`) and the plans used
as `plans_used.json`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from sweeps import experiments, tracking
from sweeps.conjectures import Verdict
from sweeps.report import make_figures
from sweeps.tracking import Store
from sweeps.tracking.reader import load_json_artifact

CONJECTURES_TAG = "dynsweep.conjectures"
PLUGINS_TAG = "dynsweep.plugins"
PLANS_ARTIFACT = "plans.json"            # on the parent run: the plans registered at sweep start
PLANS_HASH_TAG = "dynsweep.plans_hash"
REGISTERED_HASH_TAG = "dynsweep.registered_plans_hash"


@dataclass
class Judgement:
    """What one judging of a sweep produced and logged."""

    verdicts: list[Verdict]
    run_id: str                                  # the sweep's `conjectures` run
    version: int                                 # this judgement's number on that run
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)   # file name -> table
    plans_hash: str = ""                          # the plans judged under
    registered_plans_hash: str | None = None      # those registered at sweep start (None: none)


@dataclass(frozen=True)
class StoreSources:
    """`experiments.Sources` over the tracking store: probe arrays by run."""

    store: Store

    def probe_arrays(self, run_id: str, name: str) -> dict[int, np.ndarray]:
        return tracking.load_probe_arrays(self.store, run_id, name)


def judge(name: str, tracking_uri: str, parent_run_id: str | None = None,
          names: Iterable[str] | None = None,
          overrides: Mapping[str, Any] | None = None) -> Judgement:
    store = Store(tracking_uri)
    parent = parent_run_id or tracking.find_sweep(store, name)
    if parent is None:
        raise LookupError(f"no sweep named {name!r} in {tracking_uri}")
    parent_tags = store.tags(parent)
    experiments.load_plugins(m for m in parent_tags.get(PLUGINS_TAG, "").split(",") if m)
    if names is None:
        names = [n for n in parent_tags.get(CONJECTURES_TAG, "").split(",") if n]
    names = list(names)
    if not names:
        raise LookupError(f"sweep {name!r} lists no conjectures (give --only NAME[,NAME])")
    involved = list(dict.fromkeys(experiments.experiment_of(n).name for n in names))
    table = tracking.load_table(store, name, parent)
    registered = load_json_artifact(store, parent, PLANS_ARTIFACT)
    verdicts = experiments.evaluate(names, table, overrides=overrides, registered=registered)
    used = {k: p for n in names for k, p in experiments.plans_for(n, overrides, registered).items()}
    hashes = {PLANS_HASH_TAG: experiments.plans_hash(used),
              REGISTERED_HASH_TAG: experiments.plans_hash(registered) if registered else "none"}
    figures = make_figures(table, involved, StoreSources(store))
    tables = {fname: frame for e in involved for fname, build in experiments.get(e).tables.items()
              if (frame := build(table)) is not None}
    tags = {**{_verdict_tag(v.name): verdict_label(v) for v in verdicts}, **hashes}
    rid, version = tracking.log_judgement(store, name, parent, [v.to_dict() for v in verdicts],
                                          figures, tables, tags)
    store.log_json(rid, {k: p.to_dict() for k, p in used.items()}, "plans_used.json")
    return Judgement(verdicts, rid, version, tables, hashes[PLANS_HASH_TAG],
                     None if registered is None else hashes[REGISTERED_HASH_TAG])


def verdict_label(v: Verdict) -> str:
    """The verdict kind, with " (exploratory)" when its plan was not the registered one."""
    return v.verdict + (" (exploratory)" if v.exploratory else "")


def _verdict_tag(name: str) -> str:
    """`verdict.breakeven.c1_lr.hessian/top` for `breakeven.c1_lr[hessian/top]`
    (MLflow keys allow letters, digits, `_ - . / ` and spaces)."""
    return "verdict." + re.sub(r"[^\w\-./ ]", ".", name).strip(".").replace("..", ".")
