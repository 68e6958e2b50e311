"""A new sqlite store's tables, copied from an empty store instead of migrated.

MLflow makes a new sqlite store by running every one of its schema
migrations, about 2 s of a sweep's start on two cores (and of every test
that opens a new store). The result is the same file for one MLflow and
SQLAlchemy version, so it is made once per version, in the user's cache
(`$DYNSWEEP_SCHEMA_CACHE`, else `$XDG_CACHE_HOME/dynsweep`, else
`~/.cache/dynsweep`), and each new store starts as a copy of it. MLflow
still opens the copy itself and checks that its schema is current.

The one row the copy carries is MLflow's `Default` experiment (id 0), whose
artifact location is wherever the first store was made, as it is anyway
(MLflow's `./mlruns` under that process's working directory); dynsweep
never uses it: each sweep's experiment names its own artifact location.

Where the cache cannot be made or written, the store is migrated in place
as MLflow does it (and reports its own errors).
"""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import mlflow
import sqlalchemy
from mlflow.tracking import MlflowClient

CACHE_ENV = "DYNSWEEP_SCHEMA_CACHE"


def make_from_template(db: Path) -> bool:
    """Copy the empty store of this MLflow version to `db`, a file that does not
    exist yet (the caller holds the store's lock); False where no template can
    be made (then MLflow migrates `db` itself)."""
    tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(_template(), tmp)   # a new file: the umask's mode, as MLflow's own
        os.replace(tmp, db)                 # a store is either absent or whole
        return True
    except Exception:           # no cache folder, no HOME, a failed migration: MLflow migrates `db` itself
        tmp.unlink(missing_ok=True)
        return False


def _template() -> Path:
    """The cached empty store of this MLflow and SQLAlchemy version, made once
    (under a lock: two processes may start together)."""
    root = _cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"mlflow-{mlflow.__version__}-sqlalchemy-{sqlalchemy.__version__}.db"
    if path.exists():
        return path
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not path.exists():
                _make(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


def _make(path: Path) -> None:
    with tempfile.TemporaryDirectory(dir=path.parent) as work:
        fresh = Path(work) / "fresh.db"
        MlflowClient(tracking_uri=f"sqlite:///{fresh}").search_experiments(max_results=1)
        os.replace(fresh, path)


def _cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dynsweep"
