"""A finished sweep -> verdicts on its conjectures + the papers' figures and
tables, in MLflow.

Reads the sweep's trial runs into a tidy table (`tracking.load_table`), runs
the named conjectures (default: those the spec listed, recorded on the
sweep's parent run), draws the figures and builds the tables of the
experiments those conjectures belong to (`sweeps.experiments`), and logs all
of it to the sweep's one `conjectures` run (updated in place, each judgement
kept as a versioned JSON artifact, each verdict also a tag
`verdict.<name>` for MLflow's search box).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from sweeps import experiments, tracking
from sweeps.conjectures import Verdict
from sweeps.report import make_figures
from sweeps.tracking import Store

CONJECTURES_TAG = "dynsweep.conjectures"
PLUGINS_TAG = "dynsweep.plugins"


@dataclass
class Judgement:
    """What one judging of a sweep produced and logged."""

    verdicts: list[Verdict]
    run_id: str                                  # the sweep's `conjectures` run
    version: int                                 # this judgement's number on that run
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)   # file name -> table


@dataclass(frozen=True)
class StoreSources:
    """`experiments.Sources` over the tracking store: probe arrays by run."""

    store: Store

    def probe_arrays(self, run_id: str, name: str) -> dict[int, np.ndarray]:
        return tracking.load_probe_arrays(self.store, run_id, name)


def judge(name: str, tracking_uri: str, parent_run_id: str | None = None,
          names: Iterable[str] | None = None) -> Judgement:
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
    verdicts = experiments.evaluate(names, table)
    figures = make_figures(table, involved, StoreSources(store))
    tables = {fname: frame for e in involved for fname, build in experiments.get(e).tables.items()
              if (frame := build(table)) is not None}
    tags = {_verdict_tag(v.name): v.verdict for v in verdicts}
    rid, version = tracking.log_judgement(store, name, parent, [v.to_dict() for v in verdicts],
                                          figures, tables, tags)
    return Judgement(verdicts, rid, version, tables)


def _verdict_tag(name: str) -> str:
    """`verdict.breakeven.c1_lr.hessian/top` for `breakeven.c1_lr[hessian/top]`
    (MLflow keys allow letters, digits, `_ - . / ` and spaces)."""
    return "verdict." + re.sub(r"[^\w\-./ ]", ".", name).strip(".").replace("..", ".")
