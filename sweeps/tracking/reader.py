"""Reading a sweep back: its trial runs as plain records, the tidy table
(`sweeps.table.SweepTable`) that conjectures and figures read, and probe
arrays logged as artifacts.
"""
from __future__ import annotations

import ast
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.entities import ViewType

from sweeps.table import METRIC_COLUMNS, RUN_COLUMNS, SweepTable
from sweeps.tracking.store import KIND_TAG, PARENT_TAG, THREADS_TAG, TORCH_TAG, Store, safe_relpath
from sweeps.tracking.sweep_runs import find_sweep

_FROM_MLFLOW_STATUS = {"RUNNING": "running", "SCHEDULED": "running",
                       "FINISHED": "finished", "FAILED": "errored", "KILLED": "errored"}
# SQL stores replace +-inf with +-max float64; the reader maps them back.
_FLOAT_MAX = sys.float_info.max


@dataclass(frozen=True)
class TrialRecord:
    """One trial run as the driver and the CLI see it (no MLflow objects)."""

    run_id: str
    trial_id: str | None
    status: str | None                   # our tag: running/finished/diverged/errored
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]            # last value of each metric


def trial_runs(store: Store, experiment_name: str, parent_run_id: str | None = None) -> list[TrialRecord]:
    """The child (trial) runs of the latest, or the given, sweep parent."""
    return [_record(r) for r in _search_trials(store, experiment_name, parent_run_id)]


def ran_on(store: Store, experiment_name: str, parent_run_id: str) -> dict[str, Any]:
    """What a sweep's numerics ran on: the commit of its parent run, and the torch
    versions and thread counts its trial runs recorded (sorted lists: one entry
    when every trial agreed; empty for runs from before these tags existed)."""
    tags = [r.tags for r in trial_runs(store, experiment_name, parent_run_id)]
    return {"commit": store.tags(parent_run_id).get("git_sha"),
            "torch": sorted({t[TORCH_TAG] for t in tags if TORCH_TAG in t}),
            "threads": sorted({int(t[THREADS_TAG]) for t in tags if THREADS_TAG in t})}


def load_table(store: Store, experiment_name: str, parent_run_id: str | None = None,
               metric_keys: Iterable[str] | None = None) -> SweepTable:
    """The tidy table of one sweep: one row per trial run with params cast back and
    the last value of every metric, plus every metric's full history in long
    format. `metric_keys` restricts the histories read."""
    wanted = None if metric_keys is None else set(metric_keys)
    rows, long_rows = [], []
    param_cols, metric_cols = set(), set()
    for run in trial_runs(store, experiment_name, parent_run_id):
        params = {k: cast_param(v) for k, v in run.params.items()}
        last = {k: _restore_float(v) for k, v in run.metrics.items()}
        row: dict[str, Any] = {"run_id": run.run_id, "trial_id": run.trial_id,
                               "run_hash": run.tags.get("run_hash"), "status": run.status,
                               "seed": params.get("seed")}
        row.update({k: v for k, v in params.items() if k not in row})
        row.update(last)
        param_cols.update(params)
        metric_cols.update(last)
        rows.append(row)
        for key in sorted(last):
            if wanted is not None and key not in wanted:
                continue
            for m in store.client.get_metric_history(run.run_id, key):
                long_rows.append((run.run_id, key, int(m.step), _restore_float(m.value), m.timestamp))

    columns = list(RUN_COLUMNS)
    columns += sorted(param_cols - set(columns))
    columns += sorted(metric_cols - set(columns))
    runs = pd.DataFrame({c: _column([r.get(c) for r in rows], numeric=c in metric_cols)
                         for c in columns}, columns=columns)
    if len(runs):
        runs = runs.sort_values("trial_id", kind="stable").reset_index(drop=True)

    metrics = pd.DataFrame(long_rows, columns=[*METRIC_COLUMNS, "timestamp"])
    # Should a store ever hold a (key, step) twice, keep the latest write.
    metrics = (metrics.sort_values(["run_id", "key", "step", "timestamp"], kind="stable")
               .drop_duplicates(["run_id", "key", "step"], keep="last")
               .drop(columns="timestamp").reset_index(drop=True))
    metrics["step"] = metrics["step"].astype("int64")
    metrics["value"] = metrics["value"].astype("float64")
    return SweepTable(runs=runs, metrics=metrics)


def load_probe_arrays(store: Store, run_id: str, name: str) -> dict[int, np.ndarray]:
    """The arrays a trial logged with TrialRun.log_artifact(name, array, step), by step."""
    folder = f"probes/{safe_relpath(name)}"
    out: dict[int, np.ndarray] = {}
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")   # one bar per file
    with tempfile.TemporaryDirectory() as tmp:
        for item in store.client.list_artifacts(run_id, folder):
            stem = Path(item.path).name
            if stem.startswith("step_") and stem.endswith(".npy"):
                local = store.client.download_artifacts(run_id, item.path, tmp)
                out[int(stem[5:-4])] = np.load(local, allow_pickle=False)
    return dict(sorted(out.items()))


def load_json_artifact(store: Store, run_id: str, path: str) -> Any:
    """The JSON artifact `path` of a run (e.g. a sweep's `plans.json`), parsed; None if absent."""
    folder = str(Path(path).parent) if "/" in path else None
    if path not in {item.path for item in store.client.list_artifacts(run_id, folder)}:
        return None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(store.client.download_artifacts(run_id, path, tmp)).read_text())


def cast_param(text: str) -> Any:
    """Undo `str()` on a param value: int, float, bool, None, list/tuple/dict, else str."""
    if not isinstance(text, str):
        return text
    s = text.strip()
    if s == "None":
        return None
    if s in ("True", "False"):
        return s == "True"
    if re.fullmatch(r"[+-]?\d+", s):
        return int(s)
    try:
        return float(s)
    except ValueError:
        pass
    if s[:1] in "[({" and s[-1:] in "])}":
        try:
            return json.loads(s)
        except ValueError:
            pass
        try:
            return ast.literal_eval(s)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return text


def _search_trials(store: Store, experiment_name: str, parent_run_id: str | None) -> list:
    exp_id = store.experiment_or_none(experiment_name)
    if exp_id is None:
        raise LookupError(f"no MLflow experiment named {experiment_name!r} in {store.tracking_uri}")
    parent = parent_run_id or find_sweep(store, experiment_name)
    if parent is None:
        raise LookupError(f"experiment {experiment_name!r} has no sweep run")
    flt = f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{KIND_TAG}` = 'trial'"
    runs, token = [], None
    while True:
        page = store.client.search_runs([exp_id], filter_string=flt, max_results=1000,
                                        run_view_type=ViewType.ACTIVE_ONLY, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _record(run) -> TrialRecord:
    tags = dict(run.data.tags)
    return TrialRecord(run_id=run.info.run_id, trial_id=tags.get("trial_id"),
                       status=tags.get("status") or _FROM_MLFLOW_STATUS.get(run.info.status),
                       tags=tags, params=dict(run.data.params), metrics=dict(run.data.metrics))


def _restore_float(value: float) -> float:
    if abs(value) >= _FLOAT_MAX:
        return math.copysign(math.inf, value)
    return float(value)


def _column(values: list[Any], numeric: bool) -> pd.Series:
    """A runs-table column whose cells keep the types cast_param gave them: int64, float64
    or bool when uniform, else object (so None stays None and 40 stays 40, not 40.0)."""
    if numeric:                                    # metrics: NaN where a run lacks one
        return pd.Series([np.nan if v is None else v for v in values], dtype="float64")
    if values and all(isinstance(v, bool) for v in values):
        return pd.Series(values, dtype="bool")
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return pd.Series(values, dtype="int64")
    if values and all(isinstance(v, float) for v in values):
        return pd.Series(values, dtype="float64")
    return pd.Series(values, dtype="object")
