"""Where the store is and how to write to it: URIs, the client, experiments,
tags, params and artifacts on any run. The other tracking modules build on it.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import numpy as np
from mlflow.entities import Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sweeps.errors import Unavailable
from sweeps.tracking.outage import OUTAGE_ENV, Patience, PatientClient, outage_bound, own_retries, watch

log = logging.getLogger(__name__)

# Tag names (MLflow's own where one exists).
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
NOTE_TAG = "mlflow.note.content"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
KIND_TAG = "dynsweep.kind"
TORCH_TAG = "dynsweep.torch"          # on each trial run: torch's version ...
THREADS_TAG = "dynsweep.threads"      # ... and the thread count its numerics ran on

# MLflow's batch limits (mlflow.utils.validation) and a param-value limit that
# also suits older tracking servers (500 chars before MLflow 2.x raised it).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
PARAM_VALUE_LIMIT = 500
_TRUNCATION_MARK = "...<truncated>"

# The check before a sweep starts: one try, a short wait (MLflow's own default
# is 7 retries of up to 120 s each, minutes before a wrong URI fails).
CHECK_TIMEOUT_S = 10

_T = TypeVar("_T")


# ------------------------------------------------------------ where the store is
def default_tracking_uri(base_dir: str | Path = "runs", create: bool = True) -> str:
    """`MLFLOW_TRACKING_URI` if set, else `sqlite:///<abs base_dir>/mlflow.db`.

    Relative sqlite paths are made absolute here, on the driver, because Ray
    workers run in other working directories. `base_dir` is created unless
    not `create` (a sweep's store makes it when it opens: `create_schema`).
    """
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return _absolute_sqlite(env)
    base = Path(base_dir).expanduser().resolve()
    if create:
        base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(base / 'mlflow.db').as_posix()}"


def client_env() -> dict[str, str]:
    """This process's MLflow client settings (MLFLOW_TRACKING_USERNAME / _PASSWORD /
    _TOKEN, TLS, ..., and the outage bound) that trials on other machines need to
    reach the same store the same way."""
    return {k: v for k, v in os.environ.items()
            if (k.startswith("MLFLOW_TRACKING_") and k != "MLFLOW_TRACKING_URI")
            or k in (OUTAGE_ENV, "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}


def git_sha(cwd: str | Path | None = None) -> str | None:
    """`git rev-parse HEAD` in `cwd`, or None when that fails (no git, no repo)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha or None


def code_commit() -> str | None:
    """The commit of dynsweep's own checkout (None for an installed copy): what
    a sweep ran and a judgement judged with, wherever the command ran from."""
    return git_sha(Path(__file__).resolve().parent)


def ui_command(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> list[str]:
    """argv of the MLflow UI over this store (experiments carry their artifact
    locations). One worker process by default, not MLflow's 4: it serves one
    researcher's browser (its requests run concurrently in that worker's
    threads) and starts in about half the time."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port), "--workers", str(workers)]


def create_schema(tracking_uri: str) -> None:
    """Create a sqlite store's tables once, under a file lock beside the file
    (<db>.lock), before any trial opens it: MLflow's first-use migration is not
    safe when two processes start it at once. A new file starts as a copy of
    an empty store of this MLflow version (`schema.make_from_template`), which
    MLflow then checks. Other stores: nothing to do."""
    db = _sqlite_path(tracking_uri)
    if db is None:
        return
    import fcntl

    from sweeps.tracking.schema import make_from_template

    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not db.exists():
                make_from_template(db)
            MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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


# ------------------------------------------------------------ is it usable
def open_store(tracking_uri: str, artifact_root: str | None = None,
               experiment: str | None = None) -> "Store":
    """A Store that has answered: reachable, credentials accepted and, with
    `experiment`, that experiment found or created (a write). One try with a
    short timeout, so a wrong URI fails in seconds; raises `Unavailable` with
    one line naming the URI and what to check. The store returned waits out
    later outages (`outage.Patience`)."""
    patience = outage_bound()
    own_retries()             # before the check's settings, which it restores afterwards
    with _quick_http():
        try:
            create_schema(tracking_uri)
            store = Store(tracking_uri, artifact_root, patience_s=None)
            if experiment is None:
                store.client.search_experiments(max_results=1)
            else:
                store.experiment_id(experiment)
        except Exception as exc:   # MlflowException, OSError, sqlalchemy errors: all one line
            raise Unavailable(_why_unusable(tracking_uri, exc)) from None
    store.patience.seconds = patience
    return store


@contextmanager
def _quick_http():
    """MLflow's HTTP timeout and retries set for the check only (it reads them per request)."""
    quick = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(CHECK_TIMEOUT_S), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    before = {k: os.environ.get(k) for k in quick}
    os.environ.update(quick)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _why_unusable(uri: str, exc: Exception) -> str:
    text = str(exc)
    status = {int(code) for code in re.findall(r"(?<![\d.:=])(40[13])(?!\d)", text)}   # not inside a port
    if 401 in status or "not authenticated" in text.lower():
        return (f"MLflow at {uri} wants credentials: set MLFLOW_TRACKING_USERNAME and "
                f"MLFLOW_TRACKING_PASSWORD (a wrong pair is refused the same way)")
    if 403 in status or "permission denied" in text.lower():
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "this user")
        return f"MLflow at {uri} does not let {user} write: ask its admin for EDIT permission"
    if uri.startswith(("http://", "https://")):
        cause = ("connection refused" if "refused" in text.lower() else
                 f"no reply within {CHECK_TIMEOUT_S} s" if "timed out" in text.lower() else
                 f"{type(exc).__name__}: {text.splitlines()[0][:100]}")
        return (f"MLflow at {uri} does not answer ({cause}): check the URI and that the server runs "
                f"(mlflow/start_server.sh)")
    db = _sqlite_path(uri)
    where = db.parent if db is not None else uri
    return (f"cannot write the MLflow store {uri} ({type(exc).__name__}: {text.splitlines()[0][:120]}): "
            f"check that {where} exists and is writable")


# ------------------------------------------------------------ the store
class Store:
    """One tracking store, addressed explicitly by URI (never global MLflow state).

    With a sqlite store and no `artifact_root`, artifacts live next to the
    database (`mlflow-artifacts/`), never relative to a worker's cwd.
    `client` waits out a store that does not answer for up to `patience_s`
    seconds (default: the outage bound; None: one try).
    """

    def __init__(self, tracking_uri: str, artifact_root: str | None = None,
                 patience_s: float | None | str = "bound") -> None:
        self.tracking_uri = tracking_uri
        db = _sqlite_path(tracking_uri)
        if db is not None and not db.exists():
            create_schema(tracking_uri)          # a new sqlite file: from the empty store's copy
        if artifact_root is None and db is not None:
            artifact_root = (db.parent / "mlflow-artifacts").resolve().as_uri()
        self.artifact_root = artifact_root
        self._raw = MlflowClient(tracking_uri=tracking_uri)
        self.patience = Patience(tracking_uri, outage_bound() if patience_s == "bound" else patience_s)
        self.client = PatientClient(self._raw, self.patience)

    # Ray ships objects by pickle: send the addresses, rebuild the client there.
    def __getstate__(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "artifact_root": self.artifact_root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["tracking_uri"], state["artifact_root"])

    def __repr__(self) -> str:
        return f"Store({self.tracking_uri!r}, artifact_root={self.artifact_root!r})"

    def watch(self, stop: Callable[[], bool]):
        """While the block runs, stop the sweep with `stop()` once the store has
        not answered for the outage bound (`outage.watch`); `.check()` afterwards
        raises TrackingDown if it did."""
        return watch(self.tracking_uri, lambda: self._raw.search_experiments(max_results=1), stop)

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
            location = f"{self.artifact_root.rstrip('/')}/{safe_relpath(name)}"
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:   # created concurrently by another process
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def experiment_or_none(self, name: str) -> str | None:
        exp = self.client.get_experiment_by_name(name)
        return None if exp is None else exp.experiment_id

    # ------------------------------------------------------------ any run
    def tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        for chunk in chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            retry(lambda: self.client.log_batch(run_id, tags=chunk))

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(str(k), param_value(v)) for k, v in params.items()]
        for chunk in chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            retry(lambda: self.client.log_batch(run_id, params=chunk))

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        retry(lambda: self.client.set_terminated(run_id, status=status))

    def log_artifact_bytes(self, run_id: str, data: bytes, artifact_file: str) -> None:
        """Store `data` as the artifact `artifact_file` (e.g. 'figures/fig1.png')."""
        self.log_via_tempfile(run_id, artifact_file, lambda path: path.write_bytes(data))

    def log_json(self, run_id: str, obj: Any, artifact_file: str) -> None:
        self.log_via_tempfile(run_id, artifact_file, lambda path: path.write_text(
            json.dumps(obj, indent=2, sort_keys=True, default=json_default)))

    def log_figure(self, run_id: str, figure: Any, artifact_file: str, **savefig_kw: Any) -> None:
        """Save a matplotlib figure (format from the file suffix) as an artifact."""
        savefig_kw.setdefault("bbox_inches", "tight")
        self.log_via_tempfile(run_id, artifact_file, lambda path: figure.savefig(path, **savefig_kw))

    def log_via_tempfile(self, run_id: str, artifact_file: str, write: Callable[[Path], Any]) -> None:
        rel = safe_relpath(artifact_file)
        directory, _, filename = rel.rpartition("/")
        with tempfile.TemporaryDirectory(prefix="dynsweep-artifact-") as tmp:
            path = Path(tmp) / filename
            write(path)
            self.client.log_artifact(run_id, str(path), artifact_path=directory or None)


# ------------------------------------------------------------ small helpers
def param_value(value: Any) -> str:
    text = str(value)
    if len(text) > PARAM_VALUE_LIMIT:
        log.warning("param value of %d chars truncated to %d", len(text), PARAM_VALUE_LIMIT)
        text = text[: PARAM_VALUE_LIMIT - len(_TRUNCATION_MARK)] + _TRUNCATION_MARK
    return text


def json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def chunks(items: list[_T], size: int) -> Iterable[list[_T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def now_ms() -> int:
    return int(time.time() * 1000)


def safe_relpath(name: str) -> str:
    """An artifact sub-path without absolute prefixes or '..' components."""
    parts = [p for p in re.split(r"[\\/]+", str(name)) if p not in ("", ".", "..")]
    if not parts:
        raise ValueError(f"empty artifact name {name!r}")
    return "/".join(re.sub(r"[^\w.\-]+", "_", p) for p in parts)


def retry(fn: Callable[[], _T], attempts: int = 6) -> _T:
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


def is_missing(exc: MlflowException) -> bool:
    return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def quote(value: str) -> str:
    """A value for an MLflow filter string between single quotes."""
    return str(value).replace("\\", "\\\\").replace("'", "\\'")
