"""MLflow tracking: the only package in the project that imports `mlflow`.

Layout of a store:

- one experiment per spec name;
- one *parent* run per sweep execution (tags `dynsweep.kind=sweep`,
  `spec_hash`, `git_sha`), created by the driver (`sweep_runs.start_sweep`);
- one *child* run per trial (`trial_run.open_trial` -> `TrialRun`), nested
  through MLflow's standard `mlflow.parentRunId` tag, with tags `trial_id`,
  `run_hash`, `status` (running/finished/diverged/errored), `dynsweep.kind=trial`;
- params = the trial config flattened to dotted keys, values `str()`-ed;
- metrics at `step` = optimizer iteration, sent with `log_batch`; a resumed
  trial re-opens its run (the run id travels in the checkpoint) and never logs
  the same (key, step) twice;
- probe arrays as artifacts under `probes/<name>/step_<step>.npy`;
- one `conjectures` child run per sweep (`sweep_runs.log_judgement`), updated
  in place when the sweep is judged again, every judgement kept as a
  versioned JSON artifact.

One module per job:

    store.py      where the store is (URIs), is it usable (open_store), the client,
                  experiments, generic writes
    sweep_runs.py the driver's side: parent runs, closing trial runs, the conjectures run
    trial_run.py  a worker's side: one trial's run, buffered metrics and artifacts
    outage.py     a store that stops answering: every call waits it out for a
                  bound, the driver's watch stops the sweep past it
    reader.py     reading a sweep back: trial runs as plain records, the tidy table
    registrations.py  which sweeps registered plans for a conjecture, when, on which seeds

Everything goes through an explicit `MlflowClient(tracking_uri)`; nothing sets
MLflow's process-global state, because trials run in Ray workers (other
processes, other working directories). `Store` pickles as its URIs only.

The names below are imported from their module on first use, so a trial
worker, which needs only `store` and `trial_run`, never imports the reader's
pandas and the driver's helpers.
"""
from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "outage": ("OUTAGE_ENV", "TrackingDown", "outage_bound"),
    "registrations": ("SweepRegistration", "registrations_of", "sweep_registration", "sweeps_registering"),
    "reader": ("TrialRecord", "cast_param", "load_probe_arrays", "load_table", "ran_on",
               "trial_runs"),
    "store": ("Store", "client_env", "code_commit", "create_schema", "default_tracking_uri", "git_sha", "open_store",
              "ui_command"),
    "sweep_runs": ("close_trial_run", "end_sweep", "find_sweep", "log_judgement", "runs_page", "start_sweep"),
    "trial_run": ("TrialRun", "open_trial"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    elif name in _MODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
