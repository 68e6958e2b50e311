"""One member's training and its sinks, for `sweeps.worker.run_unit`.

`train` trains one trial config with `dynamics_core.train.run`: DDP when
the env says so, IMP levels when the config has them, every probe. Its
sink is a `TrialSink` (metrics to the member's MLflow run, progress and
checkpoints to the scheduler through a `Session`) or, on a DDP rank other
than 0, a `ReportOnlySink`. A pack's members use `TrialSink` too
(`sweeps.packs`).

A unit's checkpoint is one format for an unpacked trial and a pack: the
training state (`STATE_FILE`) and each member's MLflow run id
(`RUN_IDS_FILE`, {member name: run id}); `CheckpointOutbox` writes it and
`load_checkpoint` reads it. A restored member re-opens the same run; the
tracking layer drops any (metric, step) the run already holds, so no step
is logged twice.

This module knows neither Ray nor MLflow by name: `sweeps.tune.trainable`
hands it a `Session` (report / last checkpoint, backed by Ray) and it
records through `sweeps.tracking`.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import torch

from dynamics_core.config import TrialConfig
from dynamics_core.imp import imp_plan, with_plan
from dynamics_core.measure import default_hooks
from dynamics_core.sink import Sink
from dynamics_core.train import RunEnv, RunResult, run
from sweeps.context import REPORTED_FILE, RUN_IDS_FILE, STATE_FILE
from sweeps.tracking.store import THREADS_TAG, TORCH_TAG
from sweeps.tracking.trial_run import TrialRun

if TYPE_CHECKING:
    from dynamics_core.measure.summary import Summary


class Session(Protocol):
    """The scheduler's side of a unit: its reports, its last checkpoint, its name."""

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None: ...
    def checkpoint_dir(self) -> str | None: ...
    def trial_name(self) -> str: ...


def trial_tags(cfg: TrialConfig, **extra: Any) -> dict[str, Any]:
    """A trial run's tags: its seed, and what its numerics ran on (torch's
    version and this process's thread count), which a judgement reports."""
    return {"seed": cfg.seed, TORCH_TAG: torch.__version__, THREADS_TAG: torch.get_num_threads(), **extra}


def train(cfg: TrialConfig, sink: Sink, env: RunEnv, resume: dict[str, Any] | None) -> RunResult:
    """Train one member with `dynamics_core.train.run`, from `resume` if given,
    with its IMP levels (when `cfg.pruning.levels > 0`) and default probes."""
    plan = imp_plan(cfg)
    return run(cfg, sink, env, hooks=with_plan(plan, default_hooks), resume=resume, plan=plan)


class TrialSink:
    """The Sink of a trial: metrics to MLflow, progress and checkpoints to Tune.

    At the end it logs, once, the summaries its probes declare
    (`dynamics_core.measure.register_probe(..., summaries=...)`, e.g. the
    break-even `<key>_max`, `<key>_argmax_step`, `<key>_breakeven_step` of
    λ_H¹ and λ_K¹), from the whole series: a resumed trial's earlier values
    come from its run's history. `summaries`: those of the trial's enabled
    probes (`measure.probe_summaries(cfg.probes)`); None, those of every
    registered probe (a summary of a series the trial never logs gives nothing).
    """

    def __init__(self, trial: TrialRun, session: Session, flush_each_report: bool = False,
                 summaries: Sequence[Summary] | None = None):
        from dynamics_core.measure import probe_summaries

        self.trial = trial
        self.session = session
        self.flush_each_report = flush_each_report
        self.latest: dict[str, float] = {}
        self.summaries = tuple(probe_summaries() if summaries is None else summaries)
        keys = dict.fromkeys(k for s in self.summaries for k in s.keys)
        self.series: dict[str, dict[int, float]] = {k: dict(trial.history.get(k, [])) for k in keys}
        self.outbox = CheckpointOutbox("dynsweep-ckpt-")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.trial.log_metrics(metrics, step)
        for key, series in self.series.items():
            if metrics.get(key) is not None:
                series[int(step)] = float(metrics[key])
        self.latest.update(metrics)
        self.latest["step"] = float(step)
        if "train/epoch" in metrics:
            self.latest["epoch"] = metrics["train/epoch"]

    def log_artifact(self, name: str, value: Any, step: int) -> None:
        self.trial.log_artifact(name, value, step)

    def checkpoint(self, state: dict[str, Any], step: int, epoch: int, reason: str) -> None:
        self.trial.flush()           # metrics up to here are stored before the checkpoint exists
        self.outbox.put(state, {self.session.trial_name(): self.trial.run_id})

    def epoch_end(self, epoch: int, step: int) -> None:
        if self.flush_each_report:
            self.trial.flush()
        self._report({"epoch": float(epoch), "step": float(step)})

    def finish(self, status: str, summary: dict[str, float]) -> None:
        peaks = self.summary()
        self.trial.log_metrics(peaks, int(self.latest.get("step", 0)))
        self.trial.set_status(status)
        self._report({**summary, **peaks, "status_" + status: 1.0})

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for summary in self.summaries:
            out.update(summary(self.series))
        return out

    def _report(self, extra: dict[str, float]) -> None:
        metrics = {**self.latest, **extra}
        self.outbox.report(self.session, metrics)


class CheckpointOutbox:
    """A unit's checkpoint folder (the state and {member name: MLflow run id})
    waiting for the next report to Tune, which takes a copy; the folder is
    deleted after it.
    The metrics of that report go into the folder too (`REPORTED_FILE`): a
    resume that finds a checkpoint Tune's saved state does not name (the
    driver died first) knows the result it came with."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._pending: str | None = None

    def put(self, state: dict[str, Any], run_ids: dict[str, str]) -> None:
        self.clear()
        self._tmp = tempfile.TemporaryDirectory(prefix=self.prefix)
        path = Path(self._tmp.name)
        torch.save(state, path / STATE_FILE)
        (path / RUN_IDS_FILE).write_text(json.dumps(run_ids))
        self._pending = str(path)

    def report(self, session: Session, metrics: dict[str, float]) -> None:
        if self._pending is not None:
            (Path(self._pending) / REPORTED_FILE).write_text(json.dumps(metrics))
        session.report(metrics, self._pending)
        self._pending = None
        self.clear()

    def clear(self) -> None:
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


def load_checkpoint(path: str | None) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The state and {member name: MLflow run id} of the checkpoint a
    `CheckpointOutbox` wrote at `path`; (None, {}) without one. The state
    holds plain tensors and containers only, so it loads `weights_only`. A
    member without a run id here is re-opened by its name (`open_trial`)."""
    if path is None:
        return None, {}
    state = torch.load(Path(path) / STATE_FILE, weights_only=True)
    ids = Path(path) / RUN_IDS_FILE
    return state, (json.loads(ids.read_text()) if ids.exists() else {})
