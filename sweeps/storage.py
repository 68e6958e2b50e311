"""Where a sweep lives, without Ray: the storage (a local path or a URI
pyarrow understands), the sweep's manifest and its driver lock.

<storage>/<spec name>/ is the sweep's folder (Tune's experiment folder):
dynsweep.json records what resume needs (the spec, the MLflow parent run, the
tracking URI, the data cache) and the lock names the driver running it.

Object storage (s3://, gs://) is reached the way pyarrow and Ray reach it:
credentials, region and endpoint from the standard environment (AWS_*,
AWS_ENDPOINT_URL for an S3-compatible server), or pyarrow's URI query
(`s3://bucket/path?endpoint_override=host:port&scheme=http`), kept on every
path below the root. `client_env` is what trials on other machines need.

The lock. On a local or shared filesystem it is one file, dynsweep.lock,
created atomically (`create_exclusive`). An object store has no atomic create that pyarrow can
ask for (S3's `If-None-Match: *` is not exposed), so there each contender
writes its own record under dynsweep.locks/ and then lists that folder: it
holds the sweep only if that listing shows no other live record. Two drivers
can never both hold it, whatever the delays, as long as the store's listings
show every write that finished before them (read-after-write consistency:
AWS S3, GCS, MinIO): the later of the two listings sees the other's record.
Contenders that see each other settle it by their records' names (creation
time first): the later ones withdraw, the earliest holds once they are gone.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeps.errors import Unavailable

if TYPE_CHECKING:          # imported where used: the lock and `list` need neither torch nor pydantic
    from sweeps.spec import SweepSpec
    from sweeps.context import SweepContext

MANIFEST = "dynsweep.json"


# ----------------------------------------------------------------- storage
def storage_location(location: str | Path) -> str:
    """A URI as given, or a local path made absolute (workers run elsewhere)."""
    text = str(location)
    return text.rstrip("/") if "://" in text else str(Path(text).expanduser().resolve())


def join(location: str, *names: str) -> str:
    """A path below `location`; a URI keeps its query (pyarrow's endpoint_override, ...) at the end."""
    base, sep, query = location.partition("?") if "://" in location else (location, "", "")
    return "/".join([base.rstrip("/"), *names]) + sep + query


def client_env() -> dict[str, str]:
    """This process's object-storage client settings (AWS_ACCESS_KEY_ID, _SECRET_ACCESS_KEY,
    _SESSION_TOKEN, _REGION, _ENDPOINT_URL, _PROFILE, ...) that trials on other machines
    need to reach the same storage (pyarrow reads them there as it does here)."""
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_")}


def filesystem(location: str):
    import pyarrow.fs

    if "://" in location:
        return pyarrow.fs.FileSystem.from_uri(location)
    return pyarrow.fs.LocalFileSystem(), location


def exists(location: str) -> bool:
    from pyarrow.fs import FileType

    fs, path = filesystem(location)
    return fs.get_file_info(path).type == FileType.File


def create_exclusive(path: str, text: str) -> bool:
    """Write a new local file whole; False if it exists. Written beside, then
    hard-linked to its name (atomic, fails if the name exists), so no reader
    sees it half written; O_EXCL where the filesystem has no hard links."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    draft = f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
    Path(draft).write_text(text)
    try:
        os.link(draft, path)
    except FileExistsError:
        return False
    except OSError:                  # e.g. a FUSE mount: create it in place
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
    finally:
        os.unlink(draft)
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
    """Create `location` and a file in it, or say in one line that the storage
    cannot be written. The file's name is this process's own: two drivers
    checking at once must not delete each other's."""
    probe = join(location, f".dynsweep-write-check-{os.getpid()}-{uuid.uuid4().hex[:8]}")
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
LOCK = "dynsweep.lock"            # a local or shared filesystem: one file
LOCKS = "dynsweep.locks"          # object storage: one record per contender
WITHDRAW_WAIT_S = 10.0            # the earliest contender waits this long for the others to withdraw


class SweepBusy(RuntimeError):
    """Another live driver runs this sweep."""


class SweepExists(RuntimeError):
    """The storage already holds this sweep; resume it or start a new one."""


def held(exp: str, note):
    """The sweep's lock while the block runs: a record of the pid, host and
    start of the driver that runs it (the module's docstring says how, per
    storage). A record whose process is gone (same host, pid not alive) is
    stale and taken over, with a `note`; a live one raises SweepBusy. A record
    from another host is taken to be live."""
    return _held_listed(exp, note) if "://" in exp else _held_file(exp, note)


@contextlib.contextmanager
def _held_file(exp: str, note):
    lock, mine = join(exp, LOCK), _holder_record()
    for _ in range(2):
        if create_exclusive(lock, json.dumps(mine)):
            break
        try:
            holder = json.loads(read_text(lock))
        except (OSError, ValueError):
            holder = {}
        if _alive(holder):
            raise _busy(holder, lock)
        _note_stale(note, holder)
        delete(lock)
    else:
        raise SweepBusy(f"could not take the lock {lock}")
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(read_text(lock)) == mine:
                delete(lock)


@contextlib.contextmanager
def _held_listed(exp: str, note):
    """Write our record, then list everyone's (`_contenders`): we hold the lock
    once a listing shows no other live record. A record named before ours
    (written earlier) makes us withdraw (SweepBusy); later ones withdraw when
    they see ours, and we wait for that, WITHDRAW_WAIT_S at most (a later one
    holds already if its clock is behind ours). Records are written once and
    never changed, so a read never meets one half replaced."""
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.json"
    own = join(exp, LOCKS, name)
    write_text(own, json.dumps(_holder_record()))
    try:
        deadline = time.monotonic() + WITHDRAW_WAIT_S
        while others := _contenders(exp, name, note):
            if min(others) < name or time.monotonic() > deadline:
                first = min(others)
                raise _busy(others[first], join(exp, LOCKS, first).partition("?")[0])
            time.sleep(0.2)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            delete(own)


def _contenders(exp: str, name: str, note) -> dict[str, dict[str, Any]]:
    """The live records in <exp>/dynsweep.locks other than ours, by name; stale ones are deleted."""
    from pyarrow.fs import FileSelector

    fs, folder = filesystem(join(exp, LOCKS))
    live = {}
    for info in fs.get_file_info(FileSelector(folder, allow_not_found=True)):
        if info.base_name == name:
            continue
        record = _read_record(fs, info.path)
        if record is None:                 # withdrawn since the listing
            continue
        if _alive(record):
            live[info.base_name] = record
            continue
        _note_stale(note, record)
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(info.path)
    return live


def _read_record(fs, path: str, tries: int = 3) -> dict[str, Any] | None:
    """A contender's record; None once it is gone (a read that meets the delete
    may fail in other words than FileNotFoundError). One that cannot be read
    or parsed is taken to be live: deleting it might let two drivers in."""
    from pyarrow.fs import FileType

    for attempt in range(tries):
        try:
            with fs.open_input_stream(path) as f:
                record = json.loads(f.read().decode())
            if isinstance(record, dict) and record:
                return record
        except (OSError, ValueError):
            if fs.get_file_info(path).type == FileType.NotFound:
                return None
        time.sleep(0.1 * (attempt + 1))
    return {"host": f"an unknown host (the record {path} cannot be read; "
                    f"delete it if no driver runs this sweep)"}


def _busy(holder: dict[str, Any], lock: str) -> SweepBusy:
    return SweepBusy(f"pid {holder.get('pid')} on {holder.get('host')} runs this sweep "
                     f"since {holder.get('started')} (lock {lock})")


def _note_stale(note, holder: dict[str, Any]) -> None:
    note(f"taking over the stale lock of pid {holder.get('pid')} on {holder.get('host')} "
         f"(that driver is gone)")


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
    """Move a sweep's files (all but the lock) to <exp>@<time>; returns that folder
    (a URI: without its query).
    An object store moves files only: a folder is copied, then deleted."""
    from pyarrow.fs import FileSelector, FileType, LocalFileSystem, copy_files

    fs, path = filesystem(exp)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = f"{path}@{stamp}"
    fs.create_dir(aside, recursive=True)
    for info in fs.get_file_info(FileSelector(path)):
        if info.base_name in (LOCK, LOCKS):
            continue
        if info.type == FileType.Directory and not isinstance(fs, LocalFileSystem):
            copy_files(info.path, f"{aside}/{info.base_name}", source_filesystem=fs,
                       destination_filesystem=fs)
            fs.delete_dir(info.path)
        else:
            fs.move(info.path, f"{aside}/{info.base_name}")
    return f"{exp.partition('?')[0]}@{stamp}" if "://" in exp else aside


# --------------------------------------------------------------- manifests
def experiment_path(name_or_path: str, storage: str | Path) -> str:
    """The experiment folder of a sweep given by name (under storage) or by its folder."""
    for exp in (storage_location(name_or_path), join(storage_location(storage), name_or_path)):
        if exists(join(exp, MANIFEST)):
            return exp
    raise FileNotFoundError(f"no sweep {name_or_path!r} under {storage_location(storage)} "
                            f"(no {MANIFEST} there); see `dynsweep list --storage ...`")


def read_manifest(exp: str, tracking_uri: str | None = None) -> tuple[SweepSpec, SweepContext]:
    from sweeps.spec import parse_spec
    from sweeps.context import SweepContext

    blob = json.loads(read_text(join(exp, MANIFEST)))
    ctx = SweepContext(**blob["context"])
    if tracking_uri:
        ctx = replace(ctx, tracking_uri=tracking_uri)
    return parse_spec(blob["spec"], source=join(exp, MANIFEST), stored=True), ctx


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
