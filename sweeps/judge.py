"""A finished sweep -> verdicts on its conjectures + the papers' figures, in MLflow.

Reads the sweep's trial runs into a tidy table (tracking.load_table), runs
the named conjectures (default: those the spec listed, recorded on the
sweep's parent run), draws the matching figures, and logs both as a
`conjectures` child run under the sweep's parent run.
"""
from __future__ import annotations

from typing import Iterable

from sweeps.conjectures import Verdict, evaluate
from sweeps.report import groups_for, make_figures
from sweeps.tracking import Tracker

CONJECTURES_TAG = "dynsweep.conjectures"


def judge_sweep(name: str, tracking_uri: str, parent_run_id: str | None = None,
                names: Iterable[str] | None = None) -> list[Verdict]:
    tracker = Tracker(tracking_uri)
    parent = parent_run_id or tracker.find_sweep(name)
    if parent is None:
        raise LookupError(f"no sweep named {name!r} in {tracking_uri}")
    if names is None:
        listed = tracker.run_tags(parent).get(CONJECTURES_TAG, "")
        names = [n for n in listed.split(",") if n]
    names = list(names)
    if not names:
        raise LookupError(f"sweep {name!r} lists no conjectures (give --only NAME[,NAME])")
    table = tracker.load_table(name, parent)
    verdicts = evaluate(names, table)
    figures = make_figures(table, groups=groups_for(names))
    tracker.log_verdicts(name, parent, [v.to_dict() for v in verdicts], figures)
    return verdicts
