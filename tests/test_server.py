"""The tracking store as a user meets it: `mlflow/start_server.sh` with basic
auth (a real server on 127.0.0.1, free port, its own state dir) refuses
anonymous requests, takes a sweep logged with credentials and says in one
line which variables to set when they are missing; a PostgreSQL URI whose
driver does not import is one line (tests/test_postgres.py runs the server on
a real PostgreSQL); a tracking server that does not answer, an unwritable
store and an unwritable storage path each fail in seconds with one line and
leave no RUNNING run behind.
"""
from __future__ import annotations

import base64
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sweeps import tracking
from sweeps.tracking import Store
from test_cluster import ROOT, env_for, error_lines, free_port, refusing_port, runs_in, write_spec

pytestmark = pytest.mark.slow


def dynsweep(args: list[str], cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "sweeps.cli", *args], cwd=cwd, capture_output=True,
                         text=True, timeout=400, env=env_for(cwd / "home", **env))
    return res, time.monotonic() - start


def get(url: str, user: str | None = None, password: str | None = None) -> int:
    req = urllib.request.Request(url)
    if user is not None:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {pair}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


class AuthServer:
    """`AUTH=1 mlflow/start_server.sh` on a free loopback port with its own state
    dir; `env` adds settings (BACKEND_URI, AUTH_DB_URI, ...)."""

    def __init__(self, state: Path, **env: str):
        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env_for(state, AUTH="1", PORT=str(self.port), WORKERS="1", STATE_DIR=str(state),
                           PY=sys.executable, **env)
        self.log = open(state / "server.log", "a")
        self.start()

    def start(self) -> None:
        """Start the server (again: on the same port, with the same state)."""
        self.proc = subprocess.Popen(["bash", str(ROOT / "mlflow" / "start_server.sh")], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.state / "server.log").read_text()[-3000:]
            try:
                get(self.url + "/health")
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("the MLflow server did not come up")

    @property
    def password(self) -> str:
        return (self.state / "mlflow-admin-password").read_text().strip()

    def kill(self) -> None:
        """SIGKILL the server and every process it started: a crash."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._wait_group_gone()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._wait_group_gone()
        self.log.close()

    def _wait_group_gone(self) -> None:
        try:   # its job consumers outlive it by a few seconds
            for _ in range(60):
                os.killpg(self.proc.pid, 0)
                time.sleep(0.5)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = AuthServer(tmp_path_factory.mktemp("mlflow_server"))
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def credentials(server, monkeypatch):
    """This process's MLflow client logs in as the admin."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.password)
    return {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": server.password}


def test_anonymous_requests_get_401_and_the_ui_answers_the_admin(server):
    assert get(server.url + "/") == 401
    assert get(server.url + "/api/2.0/mlflow/experiments/search?max_results=1") == 401
    assert get(server.url + "/", "admin", "wrong-password") == 401
    assert get(server.url + "/", "admin", server.password) == 200
    for name in ("mlflow-admin-password", "mlflow-server-secret", "mlflow-auth.ini"):
        assert stat.S_IMODE((server.state / name).stat().st_mode) == 0o600, name
    assert len(server.password) >= 32
    assert server.password not in (server.state / "mlflow-auth.ini").read_text()


def test_a_sweep_with_credentials_logs_its_runs(server, credentials, tmp_path):
    spec = write_spec(tmp_path)
    res, _ = dynsweep(["run", str(spec), "--storage", str(tmp_path / "ray"), "--tracking-uri", server.url],
                      tmp_path, **credentials)
    assert res.returncode == 0, res.stderr[-3000:]
    store = Store(server.url)
    trials = tracking.trial_runs(store, "tiny")
    assert [t.status for t in trials] == ["finished"]
    assert "train/loss" in trials[0].metrics
    parents = [r for r in runs_in(server.url) if r.data.tags.get("dynsweep.kind") == "sweep"]
    assert [r.info.status for r in parents] == ["FINISHED"]


def test_a_sweep_without_credentials_is_one_line_naming_the_variables(server, credentials, tmp_path):
    before = len(runs_in(server.url, "nocreds"))
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("name: tiny", "name: nocreds"))
    res, elapsed = dynsweep(["run", str(spec), "--storage", str(tmp_path / "ray"), "--tracking-uri",
                             server.url], tmp_path)
    assert res.returncode == 1
    [line] = error_lines(res.stderr)
    assert "MLFLOW_TRACKING_USERNAME" in line and "MLFLOW_TRACKING_PASSWORD" in line
    assert len(runs_in(server.url, "nocreds")) == before == 0
    assert elapsed < 60, elapsed


def test_a_tracking_server_that_does_not_answer_fails_in_seconds(tmp_path):
    with refusing_port() as port:
        uri = f"http://127.0.0.1:{port}"
        res, elapsed = dynsweep(["run", str(write_spec(tmp_path)), "--storage", str(tmp_path / "ray"),
                                 "--tracking-uri", uri], tmp_path)
    assert res.returncode == 1
    [line] = error_lines(res.stderr)
    assert uri in line and "mlflow/start_server.sh" in line
    assert elapsed < 60, elapsed          # was 252 s with MLflow's default retries; mostly imports now


def test_a_store_that_stays_down_is_given_up_after_the_bound(monkeypatch):
    """Every call waits out an outage up to DYNSWEEP_TRACKING_OUTAGE_S, then one line
    naming the store; a later call that finds it still down gives up at once."""
    monkeypatch.setenv("DYNSWEEP_TRACKING_OUTAGE_S", "2")
    with refusing_port() as port:
        url = f"http://127.0.0.1:{port}"
        store = Store(url)
        start = time.monotonic()
        with pytest.raises(tracking.TrackingDown) as down:
            store.client.search_experiments(max_results=1)
        assert 2 <= time.monotonic() - start < 10
        assert str(down.value).startswith(f"MLflow at {url} has not answered for 2 s") and "\n" not in str(down.value)
        start = time.monotonic()
        with pytest.raises(tracking.TrackingDown):
            store.client.get_run("0" * 32)
        assert time.monotonic() - start < 2


def test_a_bad_outage_bound_is_one_line_before_anything_starts(tmp_path):
    res, elapsed = dynsweep(["run", str(write_spec(tmp_path)), "--storage", str(tmp_path / "ray"),
                             "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], tmp_path,
                            DYNSWEEP_TRACKING_OUTAGE_S="soon")
    assert res.returncode == 2
    [line] = error_lines(res.stderr)
    assert "DYNSWEEP_TRACKING_OUTAGE_S='soon'" in line
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray" / "tiny" / "dynsweep.json").exists()


def test_an_unwritable_tracking_store_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    uri = f"sqlite:///{blocker / 'mlflow.db'}"
    res, _ = dynsweep(["run", str(write_spec(tmp_path)), "--storage", str(tmp_path / "ray"),
                       "--tracking-uri", uri], tmp_path)
    assert res.returncode == 1
    [line] = error_lines(res.stderr)
    assert uri in line and "writable" in line


def test_an_unwritable_storage_leaves_no_run(tmp_path):
    """Root writes through read-only modes, so the storage sits under a file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res, elapsed = dynsweep(["run", str(write_spec(tmp_path)), "--storage", str(blocker / "ray"),
                             "--tracking-uri", uri], tmp_path)
    assert res.returncode == 1
    [line] = error_lines(res.stderr)
    assert str(blocker / "ray") in line and "writable" in line
    assert [r for r in runs_in(uri) if r.info.status == "RUNNING"] == []
    assert elapsed < 60, elapsed


def test_trials_on_a_cluster_log_with_the_drivers_credentials(server, credentials, tmp_path):
    """The head and its workers have no MLflow credentials in their
    environment; the driver's reach them through the job's runtime env."""
    from test_cluster import Head

    head = Head(tmp_path / "head", auth_mode="token")
    try:
        head.wait_ready()
        spec = write_spec(tmp_path)
        spec.write_text(spec.read_text().replace("name: tiny", "name: oncluster"))
        res = subprocess.run(
            [sys.executable, "-m", "sweeps.cli", "run", str(spec), "--address", head.address,
             "--storage", str(tmp_path / "ray"), "--tracking-uri", server.url],
            cwd=tmp_path, capture_output=True, text=True, timeout=400,
            env=env_for(head.home, **credentials))
        assert res.returncode == 0, res.stderr[-3000:]
        trials = tracking.trial_runs(Store(server.url), "oncluster")
        assert [t.status for t in trials] == ["finished"]
    finally:
        head.stop()


def test_a_postgresql_backend_without_its_driver_is_one_line(tmp_path):
    """The interpreter the script runs, without site-packages: psycopg does not import."""
    bare = tmp_path / "python-without-site"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    bare.chmod(0o755)
    res = subprocess.run(["bash", str(ROOT / "mlflow" / "start_server.sh")], capture_output=True, text=True,
                         timeout=60, env=env_for(tmp_path, STATE_DIR=str(tmp_path), PY=str(bare),
                                                 BACKEND_URI="postgresql://u:secret@127.0.0.1:1/mlflow"))
    assert res.returncode == 1
    assert res.stderr.strip() == ("error: a PostgreSQL store (postgresql+psycopg://u:***@127.0.0.1:1/mlflow) "
                                  "needs the psycopg driver: pip install -e '.[postgres]'")
