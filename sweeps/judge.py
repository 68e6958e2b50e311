"""A finished sweep -> verdicts on its conjectures + the papers' figures, in MLflow.

Reads the sweep's trial runs into a tidy table (tracking.load_table), runs
the named conjectures (default: those the spec listed, recorded on the
sweep's parent run), draws the matching figures, and logs both as a
`conjectures` child run under the sweep's parent run (one per sweep,
updated in place; each judgement kept as a versioned JSON artifact; each
verdict also as a tag `verdict.<name>` for MLflow's search box). When any
`breakeven.*` conjecture is judged, the per-trial break-even steps
(`breakeven.breakeven_steps`: both detectors, peak reached or not) go with
them as the artifact `breakeven_steps.csv`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd

from sweeps.conjectures import Verdict, evaluate
from sweeps.conjectures.breakeven import breakeven_steps
from sweeps.report import groups_for, make_figures
from sweeps import tracking
from sweeps.tracking import Store

CONJECTURES_TAG = "dynsweep.conjectures"
BREAKEVEN_STEPS_CSV = "breakeven_steps.csv"


@dataclass
class Judgement:
    """What one judging of a sweep produced and logged."""

    verdicts: list[Verdict]
    run_id: str                                  # the `conjectures` child run
    version: int                                 # this judgement's number on that run
    breakeven_steps: pd.DataFrame | None = None  # when a breakeven.* conjecture was judged


def judge(name: str, tracking_uri: str, parent_run_id: str | None = None,
          names: Iterable[str] | None = None) -> Judgement:
    store = Store(tracking_uri)
    parent = parent_run_id or tracking.find_sweep(store, name)
    if parent is None:
        raise LookupError(f"no sweep named {name!r} in {tracking_uri}")
    if names is None:
        listed = store.tags(parent).get(CONJECTURES_TAG, "")
        names = [n for n in listed.split(",") if n]
    names = list(names)
    if not names:
        raise LookupError(f"sweep {name!r} lists no conjectures (give --only NAME[,NAME])")
    table = tracking.load_table(store, name, parent)
    verdicts = evaluate(names, table)
    groups = groups_for(names)
    trajectories = _trajectories(store, table) if "breakeven" in groups else None
    figures = make_figures(table, groups=groups, trajectories=trajectories)
    steps = breakeven_steps(table) if any(n.startswith("breakeven.") for n in names) else None
    tables = {BREAKEVEN_STEPS_CSV: steps} if steps is not None else {}
    tags = {_verdict_tag(v.name): v.verdict for v in verdicts}
    rid, version = tracking.log_judgement(store, name, parent, [v.to_dict() for v in verdicts],
                                          figures, tables, tags)
    return Judgement(verdicts, rid, version, steps)


def _verdict_tag(name: str) -> str:
    """`verdict.breakeven.c1_lr.hessian/top` for `breakeven.c1_lr[hessian/top]`
    (MLflow keys allow letters, digits, `_ - . / ` and spaces)."""
    return "verdict." + re.sub(r"[^\w\-./ ]", ".", name).strip(".").replace("..", ".")


def _trajectories(store: Store, table, max_runs: int = 4) -> dict[str, tuple]:
    """For the Fig. 7/8 picture: the weight snapshots (probes.snapshots: true)
    of up to `max_runs` finished trials of the first seed, ordered by batch
    size then learning rate, with λ_K¹ at the same steps. Empty when no
    trial logged snapshots."""
    runs = table.runs[table.runs["status"] == "finished"]
    if runs.empty or "probes.snapshots" not in runs or not runs["probes.snapshots"].any():
        return {}
    runs = runs[runs["seed"] == runs["seed"].min()]
    runs = runs.sort_values(["train.batch_size", "optim.lr"]).head(max_runs)
    out = {}
    for _, row in runs.iterrows():
        snaps = tracking.load_probe_arrays(store, row["run_id"], "weights")
        lam = table.series(row["run_id"], "gradcov/top")
        steps = [s for s in snaps if s in lam.index]
        if len(steps) >= 3:
            label = f"η={row['optim.lr']:g}, S={row['train.batch_size']}"
            out[label] = (np.array(steps), np.stack([snaps[s] for s in steps]),
                          lam.loc[steps].to_numpy())
    return out

