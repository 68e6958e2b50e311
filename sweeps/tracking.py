"""MLflow tracking: the only module in the project that imports `mlflow`.

Layout (see DESIGN.md, "MLflow layout"):

- one experiment per spec name;
- one *parent* run per sweep execution (tags `dynsweep.kind=sweep`,
  `spec_hash`, `git_sha`), created by the driver with `Tracker.start_sweep`;
- one *child* run per trial (`Tracker.open_trial` -> `TrialRun`), nested
  through MLflow's standard `mlflow.parentRunId` tag, with tags `trial_id`,
  `run_hash`, `status` (running/finished/diverged/errored), `dynsweep.kind=trial`;
- params = the trial config flattened to dotted keys, values `str()`-ed;
- metrics at `step` = optimizer iteration, sent with `log_batch`; a resumed
  trial re-opens its run (the run id travels in the checkpoint) and never logs
  the same (key, step) twice;
- probe arrays as artifacts under `probes/<name>/step_<step>.npy`.

Everything goes through an explicit `MlflowClient(tracking_uri)`; nothing sets
MLflow's process-global state, because trials run in Ray workers (other
processes, other working directories). `Tracker` pickles as its URIs only.
"""
from __future__ import annotations

import ast
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweeps.table import METRIC_COLUMNS, RUN_COLUMNS, SweepTable

log = logging.getLogger(__name__)

# Tag names (MLflow's own where one exists).
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
NOTE_TAG = "mlflow.note.content"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
KIND_TAG = "dynsweep.kind"

STATUSES = ("running", "finished", "diverged", "errored")
_MLFLOW_STATUS = {"running": "RUNNING", "finished": "FINISHED",
                  "diverged": "FINISHED", "errored": "FAILED"}
_FROM_MLFLOW_STATUS = {"RUNNING": "running", "SCHEDULED": "running",
                       "FINISHED": "finished", "FAILED": "errored", "KILLED": "errored"}

# MLflow's batch limits (mlflow.utils.validation) and a param-value limit that
# also suits older tracking servers (500 chars before MLflow 2.x raised it).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
PARAM_VALUE_LIMIT = 500
_TRUNCATION_MARK = "...<truncated>"
# SQL stores replace +-inf with +-max float64; load_table maps them back.
_FLOAT_MAX = sys.float_info.max

_T = TypeVar("_T")


# ------------------------------------------------------------ environment
def default_tracking_uri(base_dir: str | Path = "runs") -> str:
    """`MLFLOW_TRACKING_URI` if set, else `sqlite:///<abs base_dir>/mlflow.db`.

    Relative sqlite paths are made absolute here, on the driver, because Ray
    workers run in other working directories. `base_dir` is created.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return _absolute_sqlite(env)
    base = Path(base_dir).expanduser().resolve()
    base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(base / 'mlflow.db').as_posix()}"


def default_artifact_root(base_dir: str | Path = "runs") -> str:
    """File URI of `<abs base_dir>/mlflow-artifacts` (created)."""
    root = Path(base_dir).expanduser().resolve() / "mlflow-artifacts"
    root.mkdir(parents=True, exist_ok=True)
    return root.as_uri()


def git_sha(cwd: str | Path | None = None) -> str | None:
    """`git rev-parse HEAD` in `cwd`, or None when that fails (no git, no repo)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha or None


def _absolute_sqlite(uri: str) -> str:
    """sqlite:///relative.db -> sqlite:////abs/relative.db; other URIs unchanged."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri
    path = uri[len(prefix):]
    if not path or path.startswith("/") or path == ":memory:" or path.startswith("file:"):
        return uri
    return prefix + Path(path).resolve().as_posix()


def _sqlite_path(uri: str) -> Path | None:
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = uri[len(prefix):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def _local_path(uri: str) -> Path | None:
    """A file:// URI or plain path as a local Path, else None."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None


# ------------------------------------------------------------ value helpers
def _param_value(value: Any) -> str:
    text = str(value)
    if len(text) > PARAM_VALUE_LIMIT:
        log.warning("param value of %d chars truncated to %d", len(text), PARAM_VALUE_LIMIT)
        text = text[: PARAM_VALUE_LIMIT - len(_TRUNCATION_MARK)] + _TRUNCATION_MARK
    return text


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


def _restore_float(value: float) -> float:
    if abs(value) >= _FLOAT_MAX:
        return math.copysign(math.inf, value)
    return float(value)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _chunks(items: list[_T], size: int) -> Iterable[list[_T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _safe_relpath(name: str) -> str:
    """An artifact sub-path without absolute prefixes or '..' components."""
    parts = [p for p in re.split(r"[\\/]+", str(name)) if p not in ("", ".", "..")]
    if not parts:
        raise ValueError(f"empty artifact name {name!r}")
    return "/".join(re.sub(r"[^\w.\-]+", "_", p) for p in parts)


def _retry(fn: Callable[[], _T], attempts: int = 6) -> _T:
    """Retry a store write while sqlite says the database is locked (concurrent trials)."""
    delay = 0.1
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # sqlalchemy / MlflowException wrap the sqlite error
            if attempt == attempts - 1 or "locked" not in str(exc).lower():
                raise
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _is_missing(exc: MlflowException) -> bool:
    return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


# ------------------------------------------------------------ tracker
class Tracker:
    """One tracking store, addressed explicitly by URI (never global MLflow state)."""

    def __init__(self, tracking_uri: str, artifact_root: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        if artifact_root is None:
            db = _sqlite_path(tracking_uri)
            if db is not None:   # next to the database, never relative to a worker's cwd
                artifact_root = (db.parent / "mlflow-artifacts").resolve().as_uri()
        self.artifact_root = artifact_root
        self.client = MlflowClient(tracking_uri=tracking_uri)

    # Ray ships objects by pickle: send the addresses, rebuild the client there.
    def __getstate__(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "artifact_root": self.artifact_root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["tracking_uri"], state["artifact_root"])

    def __repr__(self) -> str:
        return f"Tracker({self.tracking_uri!r}, artifact_root={self.artifact_root!r})"

    # ------------------------------------------------------------ experiments
    def experiment_id(self, name: str) -> str:
        """Id of the experiment `name`, created (artifacts under artifact_root) if absent."""
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage != "active":
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        location = None
        if self.artifact_root is not None:
            local = _local_path(self.artifact_root)
            if local is not None:
                local.mkdir(parents=True, exist_ok=True)
            location = f"{self.artifact_root.rstrip('/')}/{_safe_relpath(name)}"
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:   # created concurrently by another process
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def _experiment_or_none(self, name: str) -> str | None:
        exp = self.client.get_experiment_by_name(name)
        return None if exp is None else exp.experiment_id

    # ------------------------------------------------------------ sweeps
    def start_sweep(self, name: str, spec_hash: str, git_sha: str | None,
                    description: str = "", params: dict[str, Any] | None = None) -> str:
        """Create the parent run of one sweep execution; returns its run id."""
        exp_id = self.experiment_id(name)
        run_name = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        tags = {KIND_TAG: "sweep", "spec_hash": spec_hash, RUN_NAME_TAG: run_name}
        if git_sha:
            tags["git_sha"] = git_sha
            tags[GIT_COMMIT_TAG] = git_sha
        if description:
            tags[NOTE_TAG] = description
        run = _retry(lambda: self.client.create_run(exp_id, tags=tags, run_name=run_name))
        if params:
            self._log_params(run.info.run_id, params)
        return run.info.run_id

    def find_sweep(self, name: str) -> str | None:
        """Run id of the latest parent run of experiment `name`, or None."""
        exp_id = self._experiment_or_none(name)
        if exp_id is None:
            return None
        runs = self.client.search_runs(
            [exp_id], filter_string=f"tags.`{KIND_TAG}` = 'sweep'",
            max_results=1, order_by=["attributes.start_time DESC"])
        return runs[0].info.run_id if runs else None

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        _retry(lambda: self.client.set_terminated(run_id, status=status))

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def log_verdicts(self, experiment_name: str, parent_run_id: str, verdicts: list[dict[str, Any]],
                     figures: dict[str, Any], tables: dict[str, pd.DataFrame] | None = None) -> str:
        """A `conjectures` child run under the sweep's parent: the verdict table
        (JSON and CSV), one metric per verdict (+1 supported, 0 inconclusive,
        -1 refuted), the figures as PNG artifacts and each of `tables` as a CSV
        artifact under its name (e.g. 'breakeven_steps.csv'). Returns its run id."""
        exp_id = self.experiment_id(experiment_name)
        tags = {PARENT_TAG: parent_run_id, KIND_TAG: "conjectures", RUN_NAME_TAG: "conjectures"}
        run = _retry(lambda: self.client.create_run(exp_id, tags=tags, run_name="conjectures"))
        rid = run.info.run_id
        self.log_json(rid, verdicts, "verdicts.json")
        self.log_artifact_bytes(rid, pd.DataFrame(verdicts).to_csv(index=False).encode(), "verdicts.csv")
        score = {"supported": 1.0, "inconclusive": 0.0, "refuted": -1.0}
        metrics = [Metric(f"verdict/{v['name']}"[:250].replace("[", "_").replace("]", ""),
                          score[v["verdict"]], _now_ms(), 0) for v in verdicts]
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            _retry(lambda: self.client.log_batch(rid, metrics=chunk))
        for name, fig in figures.items():
            self.log_figure(rid, fig, f"figures/{name}")
        for name, frame in (tables or {}).items():
            self.log_table_csv(rid, frame, name)
        _retry(lambda: self.client.set_terminated(rid, status="FINISHED"))
        return rid

    def end_sweep(self, run_id: str, status: str = "FINISHED") -> None:
        _retry(lambda: self.client.set_terminated(run_id, status=status))

    # ------------------------------------------------------------ trials
    def open_trial(self, experiment_name: str, parent_run_id: str, trial_id: str,
                   run_hash: str, params: dict[str, Any], run_id: str | None = None,
                   tags: dict[str, Any] | None = None) -> TrialRun:
        """The child run of one trial: re-opened by `run_id` (from a checkpoint) or by
        `trial_id` under this parent (a trial that crashed before checkpointing), else
        created. Params already on the run are not logged again."""
        run = self._existing_trial_run(run_id, parent_run_id, trial_id)
        if run is None:
            exp_id = self.experiment_id(experiment_name)
            all_tags = self._inherited_tags(parent_run_id)
            all_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
            all_tags.update({PARENT_TAG: parent_run_id, KIND_TAG: "trial",
                             "trial_id": trial_id, "run_hash": run_hash,
                             "status": "running", RUN_NAME_TAG: trial_id})
            run = _retry(lambda: self.client.create_run(exp_id, tags=all_tags,
                                                        run_name=trial_id))
            self._log_params(run.info.run_id, params)
            return TrialRun(self.client, run.info.run_id)

        rid = run.info.run_id
        have = run.data.params
        missing = {k: v for k, v in params.items() if k not in have}
        changed = sorted(k for k, v in params.items()
                         if k in have and have[k] != _param_value(v))
        if changed:
            log.warning("run %s: params %s differ from the logged ones; kept the logged",
                        rid, changed[:10])
        self._log_params(rid, missing)
        extra = {str(k): str(v) for k, v in (tags or {}).items()}
        extra.update({"status": "running", "trial_id": trial_id, "run_hash": run_hash})
        self._set_tags(rid, extra)
        if run.info.status != "RUNNING":
            _retry(lambda: self.client.update_run(rid, status="RUNNING"))
        seen = {(key, m.step) for key in run.data.metrics
                for m in self.client.get_metric_history(rid, key)}
        return TrialRun(self.client, rid, seen=seen)

    def _existing_trial_run(self, run_id: str | None, parent_run_id: str, trial_id: str):
        if run_id is not None:
            try:
                run = self.client.get_run(run_id)
            except MlflowException as exc:
                if not _is_missing(exc):
                    raise
                log.warning("run %s (from a checkpoint) is not in %s; looking up trial %s",
                            run_id, self.tracking_uri, trial_id)
            else:
                if run.info.lifecycle_stage == "active":
                    return run
                log.warning("run %s was deleted; looking up trial %s", run_id, trial_id)
        parent = self.client.get_run(parent_run_id)
        found = self.client.search_runs(
            [parent.info.experiment_id],
            filter_string=(f"tags.`{PARENT_TAG}` = '{parent_run_id}' "
                           f"and tags.trial_id = '{_quote(trial_id)}'"),
            max_results=1, order_by=["attributes.start_time DESC"])
        return found[0] if found else None

    def _inherited_tags(self, parent_run_id: str) -> dict[str, str]:
        ptags = self.client.get_run(parent_run_id).data.tags
        return {k: ptags[k] for k in ("spec_hash", "git_sha", GIT_COMMIT_TAG) if k in ptags}

    # ------------------------------------------------------------ generic logging
    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        """Log scalars on any run (e.g. verdicts on the parent) at `step`."""
        ts = _now_ms()
        batch = [Metric(str(k), float(v), ts, int(step)) for k, v in metrics.items()
                 if v is not None]
        for chunk in _chunks(batch, MAX_METRICS_PER_BATCH):
            _retry(lambda: self.client.log_batch(run_id, metrics=chunk))

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self._set_tags(run_id, {str(k): str(v) for k, v in tags.items()})

    def log_artifact_bytes(self, run_id: str, data: bytes, artifact_file: str) -> None:
        """Store `data` as the artifact `artifact_file` (e.g. 'figures/fig1.png')."""
        _log_via_tempfile(self.client, run_id, artifact_file,
                          lambda path: path.write_bytes(data))

    def load_probe_arrays(self, run_id: str, name: str) -> dict[int, np.ndarray]:
        """The arrays a trial logged with TrialRun.log_artifact(name, array, step), by step."""
        folder = f"probes/{_safe_relpath(name)}"
        out: dict[int, np.ndarray] = {}
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")   # one bar per file
        with tempfile.TemporaryDirectory() as tmp:
            for item in self.client.list_artifacts(run_id, folder):
                stem = Path(item.path).name
                if stem.startswith("step_") and stem.endswith(".npy"):
                    local = self.client.download_artifacts(run_id, item.path, tmp)
                    out[int(stem[5:-4])] = np.load(local, allow_pickle=False)
        return dict(sorted(out.items()))

    def log_table_csv(self, run_id: str, frame: pd.DataFrame, artifact_file: str) -> None:
        """Store a DataFrame as a CSV artifact (no index column)."""
        self.log_artifact_bytes(run_id, frame.to_csv(index=False).encode(), artifact_file)

    def log_json(self, run_id: str, obj: Any, artifact_file: str) -> None:
        _log_via_tempfile(self.client, run_id, artifact_file, lambda path: path.write_text(
            json.dumps(obj, indent=2, sort_keys=True, default=_json_default)))

    def log_figure(self, run_id: str, figure: Any, artifact_file: str, **savefig_kw: Any) -> None:
        """Save a matplotlib figure (format from the file suffix) as an artifact."""
        savefig_kw.setdefault("bbox_inches", "tight")
        _log_via_tempfile(self.client, run_id, artifact_file,
                          lambda path: figure.savefig(path, **savefig_kw))

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(str(k), _param_value(v)) for k, v in params.items()]
        for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            _retry(lambda: self.client.log_batch(run_id, params=chunk))

    def _set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        _set_tags(self.client, run_id, tags)

    # ------------------------------------------------------------ reading
    def trial_runs(self, experiment_name: str, parent_run_id: str | None = None) -> list:
        """The child (trial) runs of the latest, or the given, sweep parent."""
        exp_id = self._experiment_or_none(experiment_name)
        if exp_id is None:
            raise LookupError(f"no MLflow experiment named {experiment_name!r} "
                              f"in {self.tracking_uri}")
        parent = parent_run_id or self.find_sweep(experiment_name)
        if parent is None:
            raise LookupError(f"experiment {experiment_name!r} has no sweep run")
        flt = f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{KIND_TAG}` = 'trial'"
        runs, token = [], None
        while True:
            page = self.client.search_runs([exp_id], filter_string=flt, max_results=1000,
                                           run_view_type=ViewType.ACTIVE_ONLY,
                                           page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def load_table(self, experiment_name: str, parent_run_id: str | None = None,
                   metric_keys: Iterable[str] | None = None) -> SweepTable:
        """The tidy table of one sweep (see sweeps.table): one row per trial run with
        params cast back and the last value of every metric, plus every metric's
        full history in long format. `metric_keys` restricts the histories read."""
        wanted = None if metric_keys is None else set(metric_keys)
        rows, long_rows = [], []
        param_cols, metric_cols = set(), set()
        for run in self.trial_runs(experiment_name, parent_run_id):
            rid, tags = run.info.run_id, run.data.tags
            params = {k: cast_param(v) for k, v in run.data.params.items()}
            last = {k: _restore_float(v) for k, v in run.data.metrics.items()}
            row: dict[str, Any] = {
                "run_id": rid,
                "trial_id": tags.get("trial_id"),
                "run_hash": tags.get("run_hash"),
                "status": tags.get("status") or _FROM_MLFLOW_STATUS.get(run.info.status),
                "seed": params.get("seed"),
            }
            row.update({k: v for k, v in params.items() if k not in row})
            row.update(last)
            param_cols.update(params)
            metric_cols.update(last)
            rows.append(row)
            for key in sorted(last):
                if wanted is not None and key not in wanted:
                    continue
                for m in self.client.get_metric_history(rid, key):
                    long_rows.append((rid, key, int(m.step), _restore_float(m.value),
                                      m.timestamp))

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


def _quote(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def _set_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    items = [RunTag(k, v) for k, v in tags.items()]
    for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
        _retry(lambda: client.log_batch(run_id, tags=chunk))


def _log_via_tempfile(client: MlflowClient, run_id: str, artifact_file: str,
                      write: Callable[[Path], Any]) -> None:
    rel = _safe_relpath(artifact_file)
    directory, _, filename = rel.rpartition("/")
    with tempfile.TemporaryDirectory(prefix="dynsweep-artifact-") as tmp:
        path = Path(tmp) / filename
        write(path)
        client.log_artifact(run_id, str(path), artifact_path=directory or None)


# ------------------------------------------------------------ one trial's run
class TrialRun:
    """One trial's child run, written from inside the trial worker.

    Metrics are buffered and sent with `log_batch` when `flush_every` are
    pending, when `flush_interval_s` has passed, on `flush()` and on
    `set_status`. A (key, step) pair already on the run is never sent again.
    Non-finite values are data (divergence): NaN is stored as NaN, +-inf as
    +-max float64 by SQL stores (`load_table` turns those back into +-inf).
    """

    def __init__(self, client: MlflowClient, run_id: str, seen: set[tuple[str, int]] | None = None,
                 flush_every: int = 500, flush_interval_s: float = 15.0) -> None:
        self.client = client
        self.run_id = run_id
        self.flush_every = flush_every
        self.flush_interval_s = flush_interval_s
        self.status = "running"
        self._seen: set[tuple[str, int]] = set(seen or ())
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()

    def __repr__(self) -> str:
        return f"TrialRun({self.run_id!r}, status={self.status!r})"

    def logged(self, key: str, step: int) -> bool:
        """Whether (key, step) is already on the run or in the buffer."""
        return (key, int(step)) in self._seen

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        step, ts = int(step), _now_ms()
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
        for chunk in _chunks(pending, MAX_METRICS_PER_BATCH):
            _retry(lambda: self.client.log_batch(self.run_id, metrics=chunk))

    def log_artifact(self, name: str, value: Any, step: int) -> None:
        """A probe's bulky output: arrays as probes/<name>/step_<step>.npy, dicts as .json."""
        base = f"probes/{_safe_relpath(name)}/step_{int(step)}"
        if isinstance(value, dict):
            text = json.dumps(value, indent=2, sort_keys=True, default=_json_default)
            _log_via_tempfile(self.client, self.run_id, base + ".json",
                              lambda path: path.write_text(text))
            return
        array = np.asarray(value)
        _log_via_tempfile(self.client, self.run_id, base + ".npy",
                          lambda path: np.save(path, array, allow_pickle=False))

    def set_tags(self, tags: dict[str, Any]) -> None:
        _set_tags(self.client, self.run_id, {str(k): str(v) for k, v in tags.items()})

    def set_status(self, status: str) -> None:
        """Tag `status`; finished/diverged end the run FINISHED, errored ends it FAILED."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.flush()
        self.set_tags({"status": status})
        if status == "running":
            _retry(lambda: self.client.update_run(self.run_id, status="RUNNING"))
        else:
            _retry(lambda: self.client.set_terminated(self.run_id,
                                                      status=_MLFLOW_STATUS[status]))
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


def ui_command(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """argv of the MLflow UI over this store (experiments carry their artifact locations)."""
    import sys

    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port)]
