"""Sweeps on object storage (`--storage s3://…`) against a real S3 API: moto's
server on a free loopback port, reached the way pyarrow and Ray reach S3 —
the standard AWS_* environment (AWS_ENDPOINT_URL), or pyarrow's URI query
(`?endpoint_override=…&scheme=http`).

A driver SIGKILLed mid-sweep resumes from the bucket to the uninterrupted
result; `list` and `status` read the bucket; racing contenders for a sweep's
lock (which has no atomic create there) admit exactly one, and a dead
driver's lock is taken over; `run --new` sets a stored sweep aside. Real
processes: the `dynsweep` CLI in subprocesses (its own local Ray), a real
sqlite MLflow store; moto's server is one process for the module, killed at
its end.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from pyarrow.fs import FileSelector, FileType, S3FileSystem

from sweeps import storage, tracking
from sweeps.tracking import Store
from test_interrupts import assert_same_as_reference, reference  # noqa: F401 (a fixture)
from test_sweeps import DYNSWEEP, _env, cli, slow_spec, uri, wait_for, write_spec

BUCKET = "dynsweep"


class S3:
    """moto's S3 server in its own process: its port, the client settings, a pyarrow view."""

    def __init__(self, port: int):
        self.port = port
        self.env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        self.fs = S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                               endpoint_override=f"127.0.0.1:{port}", scheme="http",
                               allow_bucket_creation=True)

    def keys(self, prefix: str) -> list[str]:
        """Every object under s3://<bucket>/<prefix>, relative to it."""
        base = f"{BUCKET}/{prefix}"
        return sorted(i.path[len(base) + 1:] for i in
                      self.fs.get_file_info(FileSelector(base, recursive=True, allow_not_found=True))
                      if i.type == FileType.File)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def up() -> bool:
            assert proc.poll() is None, "moto's server exited"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                return True
            except OSError:
                return False
        wait_for(up, 60, "moto's S3 server")
        server = S3(port)
        server.fs.create_dir(BUCKET)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


@pytest.fixture
def aws_env(s3, monkeypatch):
    """The AWS_* client settings in this process, so the CLI subprocesses (`cli`, `_env`) get them."""
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return s3


# ------------------------------------------------------------------ the lock
CONTEND = """
import sys, time
from sweeps import storage
print("ready", flush=True)
for exp in sys.argv[1:]:
    at = float(sys.stdin.readline())
    time.sleep(max(0.0, at - time.time()))      # every contender tries at the same moment
    try:
        with storage.held(exp, lambda line: None):
            print("held", flush=True)
            sys.stdin.readline()                # held until the test heard from everyone
    except storage.SweepBusy:
        print("busy", flush=True)
        sys.stdin.readline()
"""


def test_racing_contenders_for_a_lock_on_s3_admit_exactly_one(aws_env, tmp_path):
    """Four processes take the lock of one sweep at the same moment, three times:
    exactly one holds it each time, and every record is gone afterwards."""
    rounds = [f"s3://{BUCKET}/{tmp_path.name}/race{r}" for r in range(3)]
    procs = [subprocess.Popen([sys.executable, "-c", CONTEND, *rounds], env=_env(tmp_path), text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 4
        for exp in rounds:
            at = time.time() + 0.5
            for p in procs:
                p.stdin.write(f"{at}\n")
                p.stdin.flush()
            outcomes = [p.stdout.readline().strip() for p in procs]
            assert "" not in outcomes, [p.communicate(timeout=60)[1][-2000:] for p in procs]
            assert sorted(outcomes) == ["busy", "busy", "busy", "held"], (exp, outcomes)
            for p in procs:
                p.stdin.write("\n")               # release
                p.stdin.flush()
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r in range(3):
        assert aws_env.keys(f"{tmp_path.name}/race{r}") == [], "no record outlives its driver"


def test_a_dead_drivers_lock_on_s3_is_taken_over_and_a_live_one_refuses(aws_env, tmp_path):
    exp = f"s3://{BUCKET}/{tmp_path.name}/ft"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = {"pid": int(gone.stdout), "host": socket.gethostname(), "proc_start": "1",
            "started": "2020-01-01 00:00:00"}
    storage.write_text(storage.join(exp, storage.LOCKS, "00000000000000000001-dead.json"), json.dumps(dead))
    notes: list[str] = []
    with storage.held(exp, notes.append):
        (record,) = [k for k in aws_env.keys(f"{tmp_path.name}/ft")]
        assert json.loads(storage.read_text(storage.join(exp, record)))["pid"] == os.getpid()
        with pytest.raises(storage.SweepBusy, match=f"pid {os.getpid()} on {socket.gethostname()}"):
            with storage.held(exp, notes.append):
                pass
    assert notes == [f"taking over the stale lock of pid {dead['pid']} on {dead['host']} "
                     f"(that driver is gone)"]
    assert aws_env.keys(f"{tmp_path.name}/ft") == []
    # a driver on another host is taken to be alive: its record is not touched
    other = {**dead, "host": "elsewhere"}
    storage.write_text(storage.join(exp, storage.LOCKS, "00000000000000000001-other.json"), json.dumps(other))
    with pytest.raises(storage.SweepBusy, match="on elsewhere"):
        with storage.held(exp, notes.append):
            pass
    assert aws_env.keys(f"{tmp_path.name}/ft") == ["dynsweep.locks/00000000000000000001-other.json"]


def test_a_lock_on_local_disk_is_one_file_written_whole(tmp_path):
    exp = str(tmp_path / "ft")
    with storage.held(exp, print):
        assert json.loads((tmp_path / "ft" / storage.LOCK).read_text())["pid"] == os.getpid()
        with pytest.raises(storage.SweepBusy, match=f"pid {os.getpid()}"):
            with storage.held(exp, print):
                pass
    assert list((tmp_path / "ft").iterdir()) == [], "neither the lock nor its draft is left"


# ------------------------------------------------------------ settings and paths
def test_a_bucket_that_is_not_there_is_one_line(aws_env):
    from sweeps.errors import Unavailable

    with pytest.raises(Unavailable, match=r"^cannot write the sweep storage s3://no-such-bucket/ft \(OSError\)"):
        storage.check_writable("s3://no-such-bucket/ft")


def test_two_drivers_checking_the_storage_at_once_both_pass(aws_env, monkeypatch, tmp_path):
    """The write check of one driver runs whole between the other's write and
    delete of its probe (the interleaving that made a racing `run` exit 1):
    each deletes only its own probe, and neither is left behind."""
    location = f"s3://{BUCKET}/{tmp_path.name}/ft"
    write = storage.write_text
    nested = []

    def write_then_let_the_other_check(where, text):
        write(where, text)
        if not nested:
            nested.append(where)
            storage.check_writable(location)

    monkeypatch.setattr(storage, "write_text", write_then_let_the_other_check)
    storage.check_writable(location)
    assert nested and aws_env.keys(f"{tmp_path.name}/ft") == []


def test_paths_below_a_uri_keep_its_query():
    root = "s3://b/sweeps?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.join(root, "ft", "dynsweep.json") == \
        "s3://b/sweeps/ft/dynsweep.json?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.join("/data/a?b", "ft") == "/data/a?b/ft", "a local path is only a path"


def test_trials_on_a_cluster_get_the_object_storage_settings(monkeypatch):
    """A cluster's workers do not inherit the driver's environment: the AWS_*
    settings travel in the job's runtime env, except those the job sets itself."""
    from sweeps.tune import cluster

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.0.0.9:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR",
                       json.dumps({"runtime_env": {"env_vars": {"AWS_ACCESS_KEY_ID": "job's"}}}))
    env = cluster._worker_env()["env_vars"]
    assert env["AWS_ENDPOINT_URL"] == "http://10.0.0.9:9000" and "AWS_ACCESS_KEY_ID" not in env


# ------------------------------------------------------------------- sweeps
def test_a_stored_sweep_on_s3_is_set_aside_folders_and_all(aws_env, tmp_path):
    """`run --new`: S3 moves objects only, so a trial folder is copied, then deleted."""
    exp = f"s3://{BUCKET}/{tmp_path.name}/again"
    for key in ("dynsweep.json", "trial/checkpoint_000001/state.pt", "trial/result.json"):
        storage.write_text(storage.join(exp, key), key)
    with storage.held(exp, print):
        aside = storage.set_aside(exp)
        assert [k.split("/")[0] for k in aws_env.keys(f"{tmp_path.name}/again")] == [storage.LOCKS]
    assert aside.startswith(f"{exp}@")
    moved = aws_env.keys(aside.removeprefix(f"s3://{BUCKET}/"))
    assert moved == ["dynsweep.json", "trial/checkpoint_000001/state.pt", "trial/result.json"]
    assert storage.read_text(storage.join(aside, "trial/checkpoint_000001/state.pt")) == \
        "trial/checkpoint_000001/state.pt"


# ------------------------------------------------------------------- sweeps
@pytest.mark.slow
def test_racing_drivers_on_s3_one_runs_and_list_and_status_read_the_bucket(aws_env, tmp_path):
    """Two `run`s of one sweep at once: one runs it, the other is refused in one
    line; `list` and `status` read it back from the bucket."""
    root = f"s3://{BUCKET}/{tmp_path.name}"
    spec = write_spec(tmp_path, "tiny", grid={"optim.lr": [0.05, 0.1]})
    args = ["run", str(spec), "--storage", root, "--tracking-uri", uri(tmp_path)]
    procs = [subprocess.Popen(DYNSWEEP + args, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True) for _ in range(2)]
    try:
        results = [(p.returncode, out, err) for p in procs for out, err in [p.communicate(timeout=300)]]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert sorted(code for code, _, _ in results) == [0, 2], [err[-2000:] for _, _, err in results]
    (refused,) = [err for code, _, err in results if code == 2]
    (line,) = [ln for ln in refused.splitlines() if "error" in ln]
    assert "sweep tiny is running already: pid" in line and "dynsweep.locks/" in line, refused
    keys = aws_env.keys(f"{tmp_path.name}/tiny")
    assert "dynsweep.json" in keys and not any(k.startswith("dynsweep.locks/") for k in keys)
    assert sum(k.endswith("/params.json") for k in keys) == 2

    listing = cli(["list", "--storage", root], tmp_path)
    assert listing.returncode == 0, listing.stderr[-2000:]
    (row,) = [ln for ln in listing.stdout.splitlines() if " tiny " in ln]
    assert " 2 " in row, listing.stdout
    status = cli(["status", "tiny", "--storage", root], tmp_path)
    assert status.returncode == 0, status.stderr[-2000:]
    assert status.stdout.count("TERMINATED") == 2 and status.stdout.count("finished") == 2


def newest_checkpoint(s3: S3, prefix: str) -> int:
    """The highest checkpoint number of any trial under the prefix, -1 if none."""
    found = [int(part.split("_")[1]) for key in s3.keys(prefix) for part in key.split("/")
             if part.startswith("checkpoint_")]
    return max(found, default=-1)


@pytest.mark.slow
def test_sigkilled_driver_on_s3_resumes_to_the_uninterrupted_result(aws_env, monkeypatch, tmp_path,
                                                                    reference):  # noqa: F811
    """The endpoint in the URI's query this time, not in the environment. The
    reference ran on local disk; this sweep lives in the bucket, its driver (and
    its Ray) is SIGKILLed mid-run, and `resume` takes over the dead driver's
    lock and finishes it: the same histories, bit for bit."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    slow_spec(tmp_path, "ft", seeds=[0, 1])
    root = f"s3://{BUCKET}/{tmp_path.name}?endpoint_override=127.0.0.1:{aws_env.port}&scheme=http"
    proc = subprocess.Popen(DYNSWEEP + ["run", str(tmp_path / "ft.yaml"), "--storage", root,
                                        "--tracking-uri", uri(tmp_path)],
                            cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: newest_checkpoint(aws_env, f"{tmp_path.name}/ft") >= 2, 240, "checkpoints in the bucket")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert any(r.status == "running" for r in tracking.trial_runs(Store(uri(tmp_path)), "ft")), \
        "the kill should interrupt at least one trial"
    assert any(k.startswith("dynsweep.locks/") for k in aws_env.keys(f"{tmp_path.name}/ft")), \
        "the killed driver left its lock"
    res = cli(["resume", "ft", "--storage", root, "--tracking-uri", uri(tmp_path)], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "taking over the stale lock" in res.stderr, res.stderr[-2000:]
    assert_same_as_reference(tmp_path, reference)
    keys = aws_env.keys(f"{tmp_path.name}/ft")
    assert not any(k.startswith("dynsweep.locks/") for k in keys), "the lock goes with its driver"
    trials = {k.split("/")[0] for k in keys if "/checkpoint_" in k}
    assert len(trials) == 2
    for trial in trials:
        kept = {k.split("/")[1] for k in keys if k.startswith(trial + "/checkpoint_")}
        assert len(kept) == 1, f"{trial}: only the checkpoint the state names is kept ({kept})"
    listing = cli(["list", "--storage", root], tmp_path)
    assert listing.returncode == 0 and " ft " in listing.stdout, listing.stderr[-2000:]
