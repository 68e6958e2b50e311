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
    reader.py     reading a sweep back: trial runs as plain records, the tidy table

Everything goes through an explicit `MlflowClient(tracking_uri)`; nothing sets
MLflow's process-global state, because trials run in Ray workers (other
processes, other working directories). `Store` pickles as its URIs only.
"""
from sweeps.tracking.reader import TrialRecord, cast_param, load_probe_arrays, load_table, trial_runs
from sweeps.tracking.store import (Store, client_env, create_schema, default_tracking_uri, git_sha,
                                   open_store, ui_command)
from sweeps.tracking.sweep_runs import (close_trial_run, end_sweep, find_sweep, log_judgement,
                                        runs_page, start_sweep)
from sweeps.tracking.trial_run import TrialRun, open_trial

__all__ = ["Store", "TrialRecord", "TrialRun", "cast_param", "client_env", "close_trial_run",
           "create_schema", "default_tracking_uri", "end_sweep", "find_sweep", "git_sha",
           "load_probe_arrays", "load_table", "log_judgement", "open_store", "open_trial", "runs_page",
           "start_sweep", "trial_runs", "ui_command"]
