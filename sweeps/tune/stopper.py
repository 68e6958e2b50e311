"""The spec's stopper (`sweeps.stoppers`) in Tune, and its record files.

`SpecStopper` feeds each trial's reported values of the stopper's metric to
the pure rule and stops the trial when it fires; it keeps each trial's series
in <experiment>/stopper/<Tune trial id>.json, so a resumed sweep's stopper
goes on from everything reported before. `record_stops` tags the MLflow run
of each stopped trial with where it stopped, once the sweep's `fit` returns.
"""
from __future__ import annotations

import json
import math
from typing import Any

from ray import tune

from sweeps import storage as files
from sweeps import tracking
from sweeps.context import SweepContext
from sweeps.stoppers import Stopper
from sweeps.tracking import Store

STOPPER_DIR = "stopper"       # <experiment>/stopper/<Tune trial id>.json


class SpecStopper(tune.Stopper):
    """The spec's stopper (`sweeps.stoppers`) in Tune. At each epoch-end
    report of a trial, its value of the stopper's metric joins the trial's
    series (keyed by step, with the epoch) and the pure rule reads the series
    up to that step; the trial stops when the rule fires. The final report
    (`status_*`, the last epoch's values again) adds nothing.

    The series of each trial is saved in <experiment>/stopper/<trial id>.json
    after each value and read back the first time a trial reports to a new
    driver, so a resumed sweep's stopper goes on from everything its trials
    reported before (a trial that resumes from an older checkpoint reports
    the same values at the same steps again; only the steps up to the one
    reported count). A stopped trial's file records its stop epoch and step,
    which `record_stops` tags on its MLflow run (`stopper/epoch`)."""

    def __init__(self, rule: Stopper, exp: str):
        self.rule, self.exp = rule, exp
        self._series: dict[str, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"rule": self.rule, "exp": self.exp}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["rule"], state["exp"])

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if "step" not in result or any(str(k).startswith("status_") for k in result):
            return False
        record = self._series.get(trial_id) or _read_stopper(self.exp, trial_id)
        self._series[trial_id] = record
        step = int(result["step"])
        value = result.get(self.rule.metric)
        record["series"][str(step)] = [float(result.get("epoch", math.nan)),
                                       math.nan if value is None else float(value)]
        upto = sorted((int(s), e, v) for s, (e, v) in record["series"].items() if int(s) <= step)
        stop = self.rule.stop_index([v for _, _, v in upto])
        if stop is not None:
            record["stop"] = {"epoch": upto[stop][1], "step": upto[stop][0]}
        _write_stopper(self.exp, trial_id, record)
        return stop is not None

    def stop_all(self) -> bool:
        return False


def _stopper_file(exp: str, trial_id: str) -> str:
    return files.join(exp, STOPPER_DIR, f"{trial_id}.json")


def _read_stopper(exp: str, trial_id: str) -> dict[str, Any]:
    path = _stopper_file(exp, trial_id)
    return json.loads(files.read_text(path)) if files.exists(path) else {"series": {}}


def _write_stopper(exp: str, trial_id: str, record: dict[str, Any]) -> None:
    """Whole or not at all: written beside, then moved over the old one."""
    path = _stopper_file(exp, trial_id)
    files.write_text(path + ".tmp", json.dumps(record))
    fs, local = files.filesystem(path)
    fs.move(local + ".tmp", local)


def record_stops(store: Store, ctx: SweepContext, exp: str, names: dict[str, str]) -> None:
    """Tag each trial the stopper stopped with the epoch and step it stopped at
    (`stopper/epoch`, `stopper/step`)."""
    runs = None
    for trial_id, name in names.items():
        path = _stopper_file(exp, trial_id)
        if not files.exists(path):
            continue
        stop = json.loads(files.read_text(path)).get("stop")
        if stop is None:
            continue
        if runs is None:
            runs = {r.trial_id: r.run_id for r in tracking.trial_runs(store, ctx.spec_name, ctx.parent_run_id)}
        if name in runs:
            store.set_tags(runs[name], {"stopper/epoch": f"{stop['epoch']:g}", "stopper/step": str(stop["step"])})
