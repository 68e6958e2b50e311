"""The tidy table of one sweep: what conjectures and figures read.

`runs` has one row per trial (child run): columns `run_id`, `trial_id`,
`run_hash`, `status` (finished/diverged/errored/running), `seed`, every
flattened config field under its dotted name (`optim.lr`,
`train.batch_size`, ...) cast back to int/float/bool/str, plus the last value
of each summary metric under its name (e.g. `breakeven/step`).

`metrics` is long format: `run_id`, `key`, `step`, `value`, sorted by
(`run_id`, `key`, `step`). `step` is the optimizer iteration.

Pure pandas: no MLflow here (sweeps.tracking.reader builds it from the store).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

RUN_COLUMNS = ("run_id", "trial_id", "run_hash", "status", "seed")
METRIC_COLUMNS = ("run_id", "key", "step", "value")


@dataclass(frozen=True)
class SweepTable:
    runs: pd.DataFrame
    metrics: pd.DataFrame

    def __post_init__(self) -> None:
        missing = [c for c in RUN_COLUMNS if c not in self.runs.columns]
        missing += [c for c in METRIC_COLUMNS if c not in self.metrics.columns]
        if missing:
            raise ValueError(f"SweepTable lacks columns {missing}")

    def series(self, run_id: str, key: str) -> pd.Series:
        """One metric of one run as a Series indexed by step."""
        m = self.metrics
        rows = m[(m["run_id"] == run_id) & (m["key"] == key)]
        return pd.Series(rows["value"].to_numpy(), index=rows["step"].to_numpy(), name=key)

    def max_of(self, key: str) -> pd.Series:
        """Maximum of a metric over each run's trajectory, indexed by run_id."""
        m = self.metrics[self.metrics["key"] == key]
        return m.groupby("run_id")["value"].max()
