"""A sweep's trials as rows, without Ray or torch: `dynsweep status`, and the
table a finished `run` or `resume` prints.

Each row joins a trial's state and last result from Tune's saved experiment
state (`sweeps.tune.checkpoints.saved_trials`, read as plain JSON) with its
MLflow run (id, status and, for a pack's members, metrics). Besides the
generic columns, each row has the headline columns of the sweep's probes,
which the driver recorded in the manifest at launch (`SweepContext.columns`:
the probes declare them beside their hooks, which import torch); a sweep
stored before then shows the generic columns only.
"""
from __future__ import annotations

from typing import Any

from sweeps import tracking
from sweeps.context import PACK_KEY, TRIAL_KEY, SweepContext, trial_config
from sweeps.tracking import Store
from sweeps.tune.checkpoints import SavedTrial, saved_trials


def status_rows(exp: str, ctx: SweepContext) -> list[dict[str, Any]]:
    """One row per trial: name, Tune state, progress, key metrics, MLflow run id and status.
    ValueError where Tune saved no state yet."""
    store = Store(ctx.tracking_uri, ctx.artifact_root)
    mlflow_runs, last_metrics = {}, {}
    try:
        for r in tracking.trial_runs(store, ctx.spec_name, ctx.parent_run_id):
            mlflow_runs[r.trial_id] = (r.run_id, r.status)
            last_metrics[r.trial_id] = r.metrics
    except LookupError:
        pass
    rows = []
    for trial in sorted(saved_trials(exp), key=lambda t: t.name):
        last = trial.last_result or {}
        if PACK_KEY in trial.config:
            rows += _member_rows(trial, ctx, mlflow_runs, last_metrics)
            continue
        run_id, status = mlflow_runs.get(trial.name, (None, None))
        epochs = trial_config(trial.config, ctx.base).train.epochs
        rows.append({"trial": trial.name, "state": trial.status, "status": status,
                     "progress": f"{last.get('epoch', 0):.0f}/{epochs} epochs", "step": last.get("step"),
                     "train/loss": last.get("train/loss"), "val/acc": last.get("val/acc"),
                     **{label: last.get(key) for key, label in ctx.columns},
                     "mlflow run": run_id})
    return sorted(rows, key=lambda row: row["trial"])    # a pack's members among the other trials


def _member_rows(trial: SavedTrial, ctx: SweepContext, mlflow_runs: dict[str, tuple],
                 last_metrics: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """A pack's rows: one per member, its metrics from its MLflow run."""
    rows, last = [], trial.last_result or {}
    for member in trial.config[PACK_KEY]["members"]:
        run_id, status = mlflow_runs.get(member["name"], (None, None))
        metrics = last_metrics.get(member["name"], {})
        epochs = trial_config({TRIAL_KEY: member["overrides"]}, ctx.base).train.epochs
        rows.append({"trial": member["name"], "state": trial.status, "status": status,
                     "progress": f"{metrics.get('train/epoch', 0):.0f}/{epochs} epochs",
                     "step": metrics.get("final/steps", last.get("step")),
                     "train/loss": metrics.get("train/loss"), "val/acc": metrics.get("val/acc"),
                     **{label: metrics.get(key) for key, label in ctx.columns},
                     "mlflow run": run_id})
    return rows
