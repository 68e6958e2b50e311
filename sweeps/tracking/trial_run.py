"""A worker's side: one trial's child run, opened (or re-opened after a
restore) by `open_trial`, written through a buffered `TrialRun`.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from sweeps.tracking.outage import WORKER_GRACE_S, outage_bound
from sweeps.tracking.store import (KIND_TAG, MAX_METRICS_PER_BATCH, PARENT_TAG, RUN_NAME_TAG,
                                   GIT_COMMIT_TAG, Store, chunks, is_missing, json_default,
                                   now_ms, param_value, quote, retry, safe_relpath)

log = logging.getLogger(__name__)

STATUSES = ("running", "finished", "diverged", "errored")
_MLFLOW_STATUS = {"running": "RUNNING", "finished": "FINISHED",
                  "diverged": "FINISHED", "errored": "FAILED"}


def open_trial(store: Store, parent_run_id: str, trial_id: str,
               run_hash: str, params: dict[str, Any], run_id: str | None = None,
               tags: dict[str, Any] | None = None) -> TrialRun:
    """The child run of one trial: re-opened by `run_id` (from a checkpoint) or by
    `trial_id` under this parent (a trial that crashed before checkpointing), else
    created (in the parent's experiment). Params already on the run are not logged again.
    The trial waits out an outage WORKER_GRACE_S longer than the driver, which stops
    the sweep first when the store is down for everyone."""
    store.patience.seconds = outage_bound() + WORKER_GRACE_S
    parent = store.client.get_run(parent_run_id)
    run = _existing_trial_run(store, run_id, parent, trial_id)
    if run is None:
        exp_id = parent.info.experiment_id
        ptags = parent.data.tags
        all_tags = {k: ptags[k] for k in ("spec_hash", "git_sha", GIT_COMMIT_TAG) if k in ptags}
        all_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
        all_tags.update({PARENT_TAG: parent_run_id, KIND_TAG: "trial", "trial_id": trial_id,
                         "run_hash": run_hash, "status": "running", RUN_NAME_TAG: trial_id})
        run = retry(lambda: store.client.create_run(exp_id, tags=all_tags, run_name=trial_id))
        store.log_params(run.info.run_id, params)
        return TrialRun(store, run.info.run_id)

    rid = run.info.run_id
    have = run.data.params
    changed = sorted(k for k, v in params.items() if k in have and have[k] != param_value(v))
    if changed:
        log.warning("run %s: params %s differ from the logged ones; kept the logged", rid, changed[:10])
    store.log_params(rid, {k: v for k, v in params.items() if k not in have})
    extra = {str(k): str(v) for k, v in (tags or {}).items()}
    extra.update({"status": "running", "trial_id": trial_id, "run_hash": run_hash})
    store.set_tags(rid, extra)
    if run.info.status != "RUNNING":
        retry(lambda: store.client.update_run(rid, status="RUNNING"))
    history = {key: [(m.step, m.value) for m in store.client.get_metric_history(rid, key)]
               for key in run.data.metrics}
    return TrialRun(store, rid, history=history)


def _existing_trial_run(store: Store, run_id: str | None, parent, trial_id: str):
    if run_id is not None:
        try:
            run = store.client.get_run(run_id)
        except MlflowException as exc:
            if not is_missing(exc):
                raise
            log.warning("run %s (from a checkpoint) is not in %s; looking up trial %s",
                        run_id, store.tracking_uri, trial_id)
        else:
            if run.info.lifecycle_stage == "active":
                return run
            log.warning("run %s was deleted; looking up trial %s", run_id, trial_id)
    found = store.client.search_runs(
        [parent.info.experiment_id],
        filter_string=(f"tags.`{PARENT_TAG}` = '{parent.info.run_id}' "
                       f"and tags.trial_id = '{quote(trial_id)}'"),
        max_results=1, order_by=["attributes.start_time DESC"])
    return found[0] if found else None


class TrialRun:
    """One trial's child run, written from inside the trial worker.

    Metrics are buffered and sent with `log_batch` when `flush_every` are
    pending, when `flush_interval_s` has passed, on `flush()` and on
    `set_status`. A (key, step) pair already on the run is never sent again.
    Non-finite values are data (divergence): NaN is stored as NaN, +-inf as
    +-max float64 by SQL stores (the reader turns those back into +-inf).
    """

    def __init__(self, store: Store, run_id: str, history: dict[str, list[tuple[int, float]]] | None = None,
                 flush_every: int = 500, flush_interval_s: float = 15.0) -> None:
        self.store = store
        self.run_id = run_id
        self.history = history or {}          # key -> [(step, value)] the run held when opened
        self.flush_every = flush_every
        self.flush_interval_s = flush_interval_s
        self.status = "running"
        self._seen: set[tuple[str, int]] = {(k, int(step)) for k, pts in self.history.items()
                                             for step, _ in pts}
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()

    def __repr__(self) -> str:
        return f"TrialRun({self.run_id!r}, status={self.status!r})"

    def logged(self, key: str, step: int) -> bool:
        """Whether (key, step) is already on the run or in the buffer."""
        return (key, int(step)) in self._seen

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        step, ts = int(step), now_ms()
        for key, value in metrics.items():
            if value is None or (key, step) in self._seen:
                continue
            self._seen.add((key, step))
            self._buffer.append(Metric(key, float(value), ts, step))
        if (len(self._buffer) >= self.flush_every
                or time.monotonic() - self._last_flush >= self.flush_interval_s):
            self.flush()

    def flush(self) -> None:
        pending, self._buffer = self._buffer, []
        self._last_flush = time.monotonic()
        for chunk in chunks(pending, MAX_METRICS_PER_BATCH):
            retry(lambda: self.store.client.log_batch(self.run_id, metrics=chunk))

    def log_artifact(self, name: str, value: Any, step: int) -> None:
        """A probe's bulky output: arrays as probes/<name>/step_<step>.npy, dicts as .json."""
        base = f"probes/{safe_relpath(name)}/step_{int(step)}"
        if isinstance(value, dict):
            text = json.dumps(value, indent=2, sort_keys=True, default=json_default)
            self.store.log_via_tempfile(self.run_id, base + ".json", lambda path: path.write_text(text))
            return
        array = np.asarray(value)
        self.store.log_via_tempfile(self.run_id, base + ".npy",
                                    lambda path: np.save(path, array, allow_pickle=False))

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.store.set_tags(self.run_id, tags)

    def set_status(self, status: str) -> None:
        """Tag `status`; finished/diverged end the run FINISHED, errored ends it FAILED."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.flush()
        self.set_tags({"status": status})
        if status == "running":
            retry(lambda: self.store.client.update_run(self.run_id, status="RUNNING"))
        else:
            self.store.end_run(self.run_id, _MLFLOW_STATUS[status])
        self.status = status

    def __enter__(self) -> TrialRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.status == "running":
            try:
                self.set_status("errored")
            except Exception:  # never mask the original error
                log.exception("could not mark run %s errored", self.run_id)
        else:
            self.flush()
