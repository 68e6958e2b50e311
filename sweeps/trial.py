"""One trial: config -> dynamics_core, with a sink to MLflow and the scheduler.

This module knows neither Ray nor MLflow by name: the runner hands it a
`Session` (report / last checkpoint, backed by Ray Tune) and it records
through `sweeps.tracking`. A trial's MLflow run id travels inside its
checkpoints, so a restored trial re-opens the same run; the tracking layer
drops any (metric, step) the run already holds, so no step is logged twice.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from dynamics_core.config import TrialConfig
from dynamics_core.train import RunEnv, RunResult, run
from sweeps.spec import with_overrides
from sweeps.tracking import Store, TrialRun, open_trial

STATE_FILE = "state.pt"
RUN_ID_FILE = "mlflow_run_id"
TRIAL_KEY = "__trial__"            # grid search: one Tune value holding all overrides


@dataclass(frozen=True)
class SweepContext:
    """What every trial of one sweep execution needs from the driver."""

    spec_name: str
    base: dict[str, Any]               # the spec's base trial config (json form)
    tracking_uri: str
    artifact_root: str | None
    parent_run_id: str
    cache_dir: str                     # absolute: workers do not share the driver's cwd
    storage: str                       # the sweep's Ray storage root
    checkpoint_every_epochs: int = 1
    device: str = "auto"


class Session(Protocol):
    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None: ...
    def checkpoint_dir(self) -> str | None: ...
    def trial_name(self) -> str: ...


def trial_config(config: dict[str, Any], base: dict[str, Any]) -> TrialConfig:
    """The frozen trial config for a Tune `config` (grid value or Optuna sample)."""
    overrides = dict(config.get(TRIAL_KEY, {}))
    overrides.update({k: v for k, v in config.items() if k != TRIAL_KEY})
    return with_overrides(base, overrides)


def run_trial(config: dict[str, Any], ctx: SweepContext, session: Session,
              distributed: bool = False) -> RunResult:
    """Train one trial. With `distributed`, this process is one DDP rank of
    several: rank 0 records to MLflow and checkpoints, the others only train
    and take part in the per-epoch reports."""
    cfg = trial_config(config, ctx.base)
    env = RunEnv(device=ctx.device, cache_dir=ctx.cache_dir,
                 checkpoint_every_epochs=ctx.checkpoint_every_epochs, distributed=distributed)
    state, run_id = _load_checkpoint(session.checkpoint_dir())
    if distributed and not _is_rank_zero():
        return run(cfg, ReportOnlySink(session), env, resume=state)
    store = Store(ctx.tracking_uri, ctx.artifact_root)
    trial = open_trial(store, ctx.spec_name, ctx.parent_run_id, session.trial_name(), cfg.run_hash(),
                       cfg.flat(), run_id=run_id, tags={"seed": cfg.seed})
    sink = TrialSink(trial, session)
    try:
        return run(cfg, sink, env, resume=state)
    except SystemExit:      # the scheduler (e.g. ASHA) stopped the trial at a report:
        trial.flush()       # no error; the runner closes the run once Tune says TERMINATED
        raise
    except KeyboardInterrupt:   # Ctrl-C reached the worker: the sweep resumes this run
        trial.flush()
        raise
    except BaseException:
        if trial.status == "running":
            trial.set_status("errored")
        raise


class TrialSink:
    """The Sink of a trial: metrics to MLflow, progress and checkpoints to Tune."""

    def __init__(self, trial: TrialRun, session: Session):
        self.trial = trial
        self.session = session
        self.latest: dict[str, float] = {}
        self._pending: str | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.trial.log_metrics(metrics, step)
        self.latest.update(metrics)
        self.latest["step"] = float(step)
        if "train/epoch" in metrics:
            self.latest["epoch"] = metrics["train/epoch"]

    def log_artifact(self, name: str, value: Any, step: int) -> None:
        self.trial.log_artifact(name, value, step)

    def checkpoint(self, state: dict[str, Any], step: int, epoch: int, reason: str) -> None:
        self.trial.flush()           # metrics up to here are stored before the checkpoint exists
        self._cleanup()
        self._tmp = tempfile.TemporaryDirectory(prefix="dynsweep-ckpt-")
        path = Path(self._tmp.name)
        torch.save(state, path / STATE_FILE)
        (path / RUN_ID_FILE).write_text(self.trial.run_id)
        self._pending = str(path)

    def epoch_end(self, epoch: int, step: int) -> None:
        self._report({"epoch": float(epoch), "step": float(step)})

    def finish(self, status: str, summary: dict[str, float]) -> None:
        self.trial.set_status(status)
        self._report({**summary, "status_" + status: 1.0})

    def _report(self, extra: dict[str, float]) -> None:
        metrics = {**self.latest, **extra}
        self.session.report(metrics, self._pending)
        self._pending = None
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class ReportOnlySink:
    """DDP ranks > 0: no records, but every rank joins each epoch's report."""

    def __init__(self, session: Session):
        self.session = session

    def log_metrics(self, metrics, step): pass
    def log_artifact(self, name, value, step): pass
    def checkpoint(self, state, step, epoch, reason): pass

    def epoch_end(self, epoch: int, step: int) -> None:
        self.session.report({"epoch": float(epoch), "step": float(step)}, None)

    def finish(self, status: str, summary: dict[str, float]) -> None:
        self.session.report({"status_" + status: 1.0}, None)


def _is_rank_zero() -> bool:
    import torch.distributed as dist
    return not dist.is_initialized() or dist.get_rank() == 0


def _load_checkpoint(path: str | None) -> tuple[dict[str, Any] | None, str | None]:
    if path is None:
        return None, None
    state = torch.load(os.path.join(path, STATE_FILE), weights_only=False)
    run_id_file = Path(path) / RUN_ID_FILE
    return state, (run_id_file.read_text().strip() if run_id_file.exists() else None)
