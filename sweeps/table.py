"""The tidy table of one sweep, and every reader the experiments share.

`runs` has one row per trial (child run): columns `run_id`, `trial_id`,
`run_hash`, `status` (finished/diverged/errored/running), `seed`, every
flattened config field under its dotted name (`optim.lr`,
`train.batch_size`, ...) cast back to int/float/bool/str, plus the last value
of each summary metric under its name (e.g. `breakeven/step`).

`metrics` is long format: `run_id`, `key`, `step`, `value`, sorted by
(`run_id`, `key`, `step`). `step` is the optimizer iteration.

Conjectures, figures and tables read the sweep only through `SweepTable`'s
methods (finished runs, config params, metric rows, final values, per-epoch
series, IMP level frames), so a rule such as "trials that are not finished
are never averaged in" is written once.

Pure pandas: no MLflow here (sweeps.tracking.reader builds it from the store).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

RUN_COLUMNS = ("run_id", "trial_id", "run_hash", "status", "seed")
METRIC_COLUMNS = ("run_id", "key", "step", "value")
FINISHED = "finished"
# `level/<l>/<key>`: the value of `key` at loop level l of an iterative-pruning trial
_LEVEL_KEY = re.compile(r"^level/(\d+)/(.+)$")


def usable_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """(finished runs, counts of those left out by status: diverged/errored/running)."""
    status = runs["status"].astype(str)
    keep = runs[status == FINISHED]
    excluded = status[status != FINISHED].value_counts().to_dict()
    counts = {f"excluded_{k}": int(v) for k, v in excluded.items()}
    counts.setdefault("excluded_diverged", 0)
    return keep, counts


def param(runs: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    """A config column of `runs`, numeric where possible; `default` where the column is absent."""
    if name not in runs.columns:
        return pd.Series([default] * len(runs), index=runs.index, name=name)
    col = runs[name]
    num = pd.to_numeric(col, errors="coerce")
    return num if num.notna().sum() == col.notna().sum() else col


def as_tuple(value: Any) -> tuple[float, ...]:
    """A list-valued config field (e.g. `optim.schedule.milestones`) as floats,
    however the table holds it: a list, a tuple, a JSON or tuple string, a
    scalar; () for None, NaN or an unreadable string."""
    v = value
    if isinstance(v, str):
        try:
            v = json.loads(v.replace("(", "[").replace(")", "]"))
        except ValueError:
            return ()
    if isinstance(v, (list, tuple, np.ndarray)):
        return tuple(float(x) for x in v)
    return () if v is None or (isinstance(v, float) and np.isnan(v)) else (float(v),)


@dataclass(frozen=True)
class SweepTable:
    runs: pd.DataFrame
    metrics: pd.DataFrame

    def __post_init__(self) -> None:
        missing = [c for c in RUN_COLUMNS if c not in self.runs.columns]
        missing += [c for c in METRIC_COLUMNS if c not in self.metrics.columns]
        if missing:
            raise ValueError(f"SweepTable lacks columns {missing}")

    # ------------------------------------------------------------------ runs
    def finished(self) -> pd.DataFrame:
        """The runs whose trial finished (not diverged, errored or still running)."""
        return self.runs[self.runs["status"].astype(str) == FINISHED]

    def usable(self) -> tuple[pd.DataFrame, dict[str, int]]:
        """(finished runs, `excluded_<status>` counts of the others): `usable_runs`."""
        return usable_runs(self.runs)

    def left_out(self) -> dict[str, int]:
        """How many runs are not finished: `excluded_diverged`, `excluded_other`
        (errored, still running)."""
        status = self.runs["status"].astype(str)
        return {"excluded_diverged": int((status == "diverged").sum()),
                "excluded_other": int(((status != "diverged") & (status != FINISHED)).sum())}

    def param(self, name: str, default: Any = None) -> pd.Series:
        """A config column over every run (`param`)."""
        return param(self.runs, name, default)

    # --------------------------------------------------------------- metrics
    def has(self, *keys: str) -> bool:
        """Whether every one of `keys` was logged by some run."""
        return bool(set(keys) <= set(self.metrics["key"].unique()))

    def metric(self, key: str) -> pd.DataFrame:
        """Rows of one metric, sorted by (run_id, step), with finite-or-not values kept."""
        m = self.metrics
        return m[m["key"] == key].sort_values(["run_id", "step"])

    def series(self, run_id: str, key: str) -> pd.Series:
        """One metric of one run as a Series indexed by step."""
        m = self.metrics
        rows = m[(m["run_id"] == run_id) & (m["key"] == key)]
        return pd.Series(rows["value"].to_numpy(), index=rows["step"].to_numpy(), name=key)

    def max_of(self, key: str) -> pd.Series:
        """Maximum of a metric over each run's trajectory, indexed by run_id."""
        m = self.metrics[self.metrics["key"] == key]
        return m.groupby("run_id")["value"].max()

    def final(self, key: str, fallback: str | None = None) -> pd.Series:
        """Last logged value of `key` per run (falling back to the last of `fallback`)."""
        out = self.metric(key).groupby("run_id")["value"].last()
        if fallback is not None:
            fb = self.metric(fallback).groupby("run_id")["value"].last()
            out = out.combine_first(fb)
        return out

    def per_epoch(self, run_id: str, key: str) -> pd.Series:
        """`key` of one run at epoch ends (indexed by step).

        Epoch-end steps are those where `train/epoch` was logged, else those of
        `val/acc` (evaluated once per epoch); when neither exists or they share no
        step with `key`, every logged value is taken as one per epoch.
        """
        s = self.series(run_id, key).sort_index()
        for marker in ("train/epoch", "val/acc"):
            if marker == key:
                continue
            ends = self.series(run_id, marker).index
            if len(ends):
                common = s.index.intersection(ends)
                if len(common) >= 2:
                    return s.loc[common]
        return s

    def mean_curve(self, run_ids: Iterable[str], key: str) -> pd.Series:
        """Mean over runs of `key` at each step (steps shared by the runs)."""
        m = self.metrics
        rows = m[(m["key"] == key) & m["run_id"].isin(list(run_ids))]
        return rows.groupby("step")["value"].mean()

    def levels(self, keys: Iterable[str], run_ids: Iterable[str]) -> pd.DataFrame:
        """The loop levels of iterative-pruning trials: one row per run and level
        with the last value of each `level/<l>/<key>` (NaN where not logged).

        Columns `run_id`, `level` (the string l, ordered as the groupby sorts it)
        and one per key; empty (no rows) when none of `run_ids` logged a level.
        """
        keys = list(keys)
        m = self.metrics[self.metrics["run_id"].isin(list(run_ids))]
        parsed = m["key"].str.extract(_LEVEL_KEY)
        m = m.assign(level=parsed[0], what=parsed[1]).dropna(subset=["level"])
        m = m[m["what"].isin(keys)]
        if m.empty:
            return pd.DataFrame(columns=["run_id", "level", *keys])
        wide = (m.groupby(["run_id", "level", "what"])["value"].last().unstack("what")
                .reset_index())
        for what in keys:
            if what not in wide:
                wide[what] = np.nan
        return wide
