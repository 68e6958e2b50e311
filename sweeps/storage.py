"""Where a sweep lives, without Ray: the storage (a local path or a URI
pyarrow understands), the sweep's manifest and its driver lock.

<storage>/<spec name>/ is the sweep's folder (Tune's experiment folder):
dynsweep.json records what resume needs (the spec, the MLflow parent run, the
tracking URI, the data cache) and dynsweep.lock names the driver running it.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sweeps.errors import Unavailable
from sweeps.spec import SweepSpec, parse_spec
from sweeps.trial import SweepContext

MANIFEST = "dynsweep.json"


# ----------------------------------------------------------------- storage
def storage_location(location: str | Path) -> str:
    """A URI as given, or a local path made absolute (workers run elsewhere)."""
    text = str(location)
    return text.rstrip("/") if "://" in text else str(Path(text).expanduser().resolve())


def join(location: str, *names: str) -> str:
    return "/".join([location.rstrip("/"), *names])


def filesystem(location: str):
    import pyarrow.fs

    if "://" in location:
        return pyarrow.fs.FileSystem.from_uri(location)
    return pyarrow.fs.LocalFileSystem(), location


def exists(location: str) -> bool:
    from pyarrow.fs import FileType

    fs, path = filesystem(location)
    return fs.get_file_info(path).type == FileType.File


def create_exclusive(location: str, text: str) -> bool:
    """Write a new file; False if it exists (atomic on local paths)."""
    if "://" in location:
        if exists(location):
            return False
        write_text(location, text)
        return True
    Path(location).parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(location, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


def delete(location: str) -> None:
    fs, path = filesystem(location)
    fs.delete_file(path)


def write_text(location: str, text: str) -> None:
    fs, path = filesystem(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def check_writable(location: str) -> None:
    """Create `location` and a file in it, or say in one line that the storage cannot be written."""
    probe = join(location, ".dynsweep-write-check")
    try:
        write_text(probe, "")
        fs, path = filesystem(probe)
        fs.delete_file(path)
    except Exception as exc:   # OSError locally, pyarrow's errors for s3:// and gs://
        raise Unavailable(f"cannot write the sweep storage {location} ({type(exc).__name__}): "
                          f"check that it exists and is writable (on a cluster: shared by every node)"
                          ) from None


def read_text(location: str) -> str:
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


# ------------------------------------------------------- one driver a sweep
LOCK = "dynsweep.lock"


class SweepBusy(RuntimeError):
    """Another live driver runs this sweep."""


class SweepExists(RuntimeError):
    """The storage already holds this sweep; resume it or start a new one."""


@contextlib.contextmanager
def held(exp: str, note):
    """The sweep's lock file, <experiment>/dynsweep.lock: pid, host and start
    of the driver that runs it. A lock whose process is gone (same host, pid
    not alive) is stale and taken over; any other raises SweepBusy."""
    lock, mine = join(exp, LOCK), _holder_record()
    for _ in range(2):
        if create_exclusive(lock, json.dumps(mine)):
            break
        try:
            holder = json.loads(read_text(lock))
        except (OSError, ValueError):
            holder = {}
        if _alive(holder):
            raise SweepBusy(f"pid {holder.get('pid')} on {holder.get('host')} runs this sweep "
                            f"since {holder.get('started')} (lock {lock})")
        note(f"taking over the stale lock of pid {holder.get('pid')} on {holder.get('host')} "
             f"(that driver is gone)")
        delete(lock)
    else:
        raise SweepBusy(f"could not take the lock {lock}")
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(read_text(lock)) == mine:
                delete(lock)


def _holder_record() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": _proc_start(os.getpid()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def _alive(holder: dict[str, Any]) -> bool:
    """Whether a lock's driver may still run (another host's: assumed so)."""
    if holder.get("host") != socket.gethostname():
        return bool(holder)
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = _proc_start(int(holder["pid"]))
    return start is None or holder.get("proc_start") in (None, start)   # not a reused pid


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), else None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def set_aside(exp: str) -> str:
    """Move a sweep's files (all but the lock) to <exp>@<time>; returns that folder."""
    from pyarrow.fs import FileSelector

    fs, path = filesystem(exp)
    aside = f"{path}@{time.strftime('%Y%m%d-%H%M%S')}"
    fs.create_dir(aside, recursive=True)
    for info in fs.get_file_info(FileSelector(path)):
        if info.base_name != LOCK:
            fs.move(info.path, f"{aside}/{info.base_name}")
    return aside


# --------------------------------------------------------------- manifests
def experiment_path(name_or_path: str, storage: str | Path) -> str:
    """The experiment folder of a sweep given by name (under storage) or by its folder."""
    for exp in (storage_location(name_or_path), join(storage_location(storage), name_or_path)):
        if exists(join(exp, MANIFEST)):
            return exp
    raise FileNotFoundError(f"no sweep {name_or_path!r} under {storage_location(storage)} "
                            f"(no {MANIFEST} there); see `dynsweep list --storage ...`")


def read_manifest(exp: str, tracking_uri: str | None = None) -> tuple[SweepSpec, SweepContext]:
    blob = json.loads(read_text(join(exp, MANIFEST)))
    ctx = SweepContext(**blob["context"])
    if tracking_uri:
        ctx = replace(ctx, tracking_uri=tracking_uri)
    return parse_spec(blob["spec"], source=join(exp, MANIFEST)), ctx


def list_sweeps(storage: str | Path) -> list[dict[str, Any]]:
    from pyarrow.fs import FileSelector, FileType

    fs, root = filesystem(storage_location(storage))
    if fs.get_file_info(root).type != FileType.Directory:
        return []
    rows = []
    for info in sorted(fs.get_file_info(FileSelector(root)), key=lambda i: i.base_name):
        manifest = fs.get_file_info(f"{info.path}/{MANIFEST}")
        if info.type != FileType.Directory or manifest.type != FileType.File:
            continue
        trials = [t for t in fs.get_file_info(FileSelector(info.path))
                  if fs.get_file_info(f"{t.path}/params.json").type == FileType.File]
        blob = json.loads(read_text(join(storage_location(storage), info.base_name, MANIFEST)))
        rows.append({"name": info.base_name, "trials": len(trials),
                     "modified": manifest.mtime.strftime("%Y-%m-%d %H:%M") if manifest.mtime else "-",
                     "description": blob["spec"].get("description", "").strip()[:60]})
    return rows
