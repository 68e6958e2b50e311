"""The tracking server on a real PostgreSQL, and tracking-server outages.

A private PostgreSQL (Debian's server binaries; `.ci/run` installs them) in a
temp dir, loopback only, on a free port, run by a non-root user; on it
`AUTH=1 mlflow/start_server.sh` with BACKEND_URI and AUTH_DB_URI given as
plain `postgresql://` URIs. A sweep through that server lands everything in
PostgreSQL (runs, params, metrics, the conjectures run; artifacts proxied to
the server's folder) and survives the server being killed mid-trial and
restarted; a server that stays down past DYNSWEEP_TRACKING_OUTAGE_S fails the
sweep in one line, and `dynsweep resume` completes it. Both end equal to the
same sweep on sqlite, nothing logged twice.
"""
from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from sweeps import tracking
from sweeps.tracking import Store
from test_cluster import env_for, error_lines, free_port
from test_interrupts import newest_checkpoint, trial_folders
from test_server import AuthServer, credentials, get  # noqa: F401  (credentials: a fixture, on this module's server)
from test_sweeps import (DYNSWEEP, assert_no_step_logged_twice, cli, histories, judged_run, slow_spec, uri,
                         wait_for)

pytestmark = pytest.mark.slow
EPOCHS = 6         # a trial blocks at its next flush (every epoch) while the server is down


# ------------------------------------------------------------------ PostgreSQL
def pg_bin() -> Path:
    """The newest Debian PostgreSQL's bin folder, else initdb's on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(re.sub(r"\D", "", p.split("/")[4]) or 0))
    if found:
        return Path(found[-1]).parent
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return Path(shutil.which("initdb")).parent
    pytest.fail("PostgreSQL's server binaries (initdb, pg_ctl) are missing: apt-get install postgresql "
                "(.ci/run installs them)")


class Postgres:
    """A private cluster: initdb in a temp dir (its socket there too), listening on
    127.0.0.1 only, password auth. PostgreSQL refuses to run as root, so as root it
    runs as Debian's `postgres` user."""

    def __init__(self):
        self.bin = pg_bin()
        self.as_user: list[str] = []
        self.dir = Path(tempfile.mkdtemp(prefix="dspg", dir="/tmp"))   # short: the socket path
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("running as root, PostgreSQL needs a non-root user: Debian's package creates "
                            "`postgres`")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password)
        if self.as_user:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        self.data = self.dir / "data"
        self._run("initdb", "-D", str(self.data), "-U", "mlflow", f"--pwfile={pwfile}", "-A", "scram-sha-256",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                   f"-c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", options, "-w", "start")
        for db in ("mlflow", "mlflow_auth"):
            self.sql(f"CREATE DATABASE {db}", db="postgres")

    def _run(self, tool: str, *args: str) -> None:
        res = subprocess.run([*self.as_user, str(self.bin / tool), *args], capture_output=True, text=True,
                             timeout=120, stdin=subprocess.DEVNULL)
        assert res.returncode == 0, f"{tool}: {res.stdout[-2000:]}{res.stderr[-2000:]}"

    def uri(self, db: str) -> str:
        return f"postgresql://mlflow:{self.password}@127.0.0.1:{self.port}/{db}"

    def store(self) -> Store:
        """The MLflow store read straight from PostgreSQL: what the server wrote, without
        a password check per request (hundreds of metric histories)."""
        return Store(self.uri("mlflow").replace("postgresql://", "postgresql+psycopg://"))

    def sql(self, query: str, db: str = "mlflow") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.uri(db), autocommit=True) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else []

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """The auth server on PostgreSQL: runs and users both there."""
    srv = AuthServer(tmp_path_factory.mktemp("pg_server"), BACKEND_URI=postgres.uri("mlflow"),
                     AUTH_DB_URI=postgres.uri("mlflow_auth"))
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


# ------------------------------------------------------------------ sweeps
def spec(dir: Path, name: str, conjectures: bool = False) -> Path:
    """slow_spec's two trials, EPOCHS long (a checkpoint and a flush every epoch), probed
    once an epoch; no stiffness probe, whose arrays would be four uploads a probe."""
    path = slow_spec(dir, name, seeds=[0, 1])
    doc = yaml.safe_load(path.read_text())
    doc["base"]["train"]["epochs"] = EPOCHS
    doc["base"]["probes"].update(stiffness=False, schedule={"kind": "every", "every": 8})
    if conjectures:
        doc["conjectures"] = ["breakeven.c1_lr"]
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """Histories of the same sweep on sqlite, uninterrupted."""
    ref = tmp_path_factory.mktemp("ref")
    spec(ref, "ref")
    done = cli(["run", str(ref / "ref.yaml"), "--storage", str(ref / "ray"), "--tracking-uri", uri(ref)], ref)
    assert done.returncode == 0, done.stderr[-3000:]
    return histories(Store(uri(ref)), "ref")


def start_sweep(dir: Path, name: str, server: AuthServer, credentials: dict, **env: str) -> subprocess.Popen:
    return subprocess.Popen(DYNSWEEP + ["run", str(dir / f"{name}.yaml"), "--storage", str(dir / "ray"),
                                        "--tracking-uri", server.url],
                            cwd=dir, env=env_for(dir, **credentials, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def both_trials_checkpointed(exp: Path) -> bool:
    """Both trials have logged and checkpointed an epoch: the moment to kill the server."""
    return sum(1 for f in trial_folders(exp) if any(f.glob("checkpoint_*"))) >= 2


def assert_equal_to_reference(store: Store, name: str, reference: dict) -> list:
    runs = tracking.trial_runs(store, name)
    assert len(runs) == 2, "a resumed trial continues its own MLflow run"
    assert {r.status for r in runs} == {"finished"}
    assert {store.client.get_run(r.run_id).info.status for r in runs} == {"FINISHED"}
    assert_no_step_logged_twice(store, name)
    assert histories(store, name) == reference
    return runs


def test_a_sweep_through_postgresql_survives_a_server_restart(postgres, server, credentials, tmp_path,
                                                             reference):
    assert get(server.url + "/api/2.0/mlflow/experiments/search?max_results=1") == 401
    spec(tmp_path, "pgft", conjectures=True)
    proc = start_sweep(tmp_path, "pgft", server, credentials)
    try:
        wait_for(lambda: both_trials_checkpointed(tmp_path / "ray" / "pgft"), 240, "both trials' checkpoints")
        killed = time.time()
        server.kill()
        time.sleep(8)
        server.start()
        server.wait_ready()
        back = time.time()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    from ray.tune import ExperimentAnalysis
    trials = ExperimentAnalysis(str(tmp_path / "ray" / "pgft")).trials
    assert [t.run_metadata.num_failures for t in trials] == [0, 0], "the trials wait the outage out"
    store = postgres.store()
    runs = assert_equal_to_reference(store, "pgft", reference)
    stamps = {run.trial_id: [m.timestamp / 1000 for m in store.client.get_metric_history(run.run_id, "train/loss")]
              for run in runs}
    # a trial that logged before the kill and after the restart was mid-trial: both are, unless
    # a loaded machine started one trial's worker so late that the other had already ended
    assert [t for t, s in stamps.items() if min(s) < killed < back < max(s)], (killed, back, stamps)

    # all of it in PostgreSQL: the sweep's runs, params, metrics, the conjectures run, the users
    parent = tracking.find_sweep(store, "pgft")
    kinds = dict(postgres.sql(f"SELECT t.value, count(*) FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
                              f"WHERE t.key = 'dynsweep.kind' GROUP BY t.value"))
    assert kinds == {"sweep": 1, "trial": 2, "conjectures": 1}
    for run in runs:
        (params,), = postgres.sql(f"SELECT count(*) FROM params WHERE run_uuid = '{run.run_id}'")
        assert params == len(run.params) > 10
        (losses,), = postgres.sql(f"SELECT count(*) FROM metrics WHERE run_uuid = '{run.run_id}' "
                                  f"AND key = 'train/loss'")
        assert losses == EPOCHS
    (users,), = postgres.sql("SELECT count(*) FROM users WHERE username = 'admin'", db="mlflow_auth")
    assert users == 1
    # artifacts went through the server into its folder: the plans on the parent, the verdicts
    store = Store(server.url)
    _, judged = judged_run(store, "pgft")
    assert {"verdicts.json", "verdicts.csv"} <= {a.path for a in store.client.list_artifacts(judged.info.run_id)}
    assert "plans.json" in {a.path for a in store.client.list_artifacts(parent)}
    stored = {p.name for p in (server.state / "mlflow-artifacts").rglob("*") if p.is_file()}
    assert {"verdicts.json", "plans.json"} <= stored


def test_a_long_outage_fails_in_one_line_and_resume_completes(postgres, server, credentials, tmp_path,
                                                              reference):
    """The server stays down past DYNSWEEP_TRACKING_OUTAGE_S: exit 1 and one line
    naming it and the resume command, soon after the bound; back up, the resume ends
    equal to the reference."""
    bound = 6
    spec(tmp_path, "pgdown")
    proc = start_sweep(tmp_path, "pgdown", server, credentials, DYNSWEEP_TRACKING_OUTAGE_S=str(bound))
    try:
        wait_for(lambda: both_trials_checkpointed(tmp_path / "ray" / "pgdown"), 240, "both trials' checkpoints")
        server.kill()
        killed = time.monotonic()
        _, err = proc.communicate(timeout=120)
        stopped_after = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if server.proc.poll() is not None:
            server.start()
    assert proc.returncode == 1, err[-3000:]
    [line] = error_lines(err)
    assert f"MLflow at {server.url} has not answered for" in line, line
    assert f"dynsweep resume pgdown --storage {tmp_path / 'ray'} --tracking-uri {server.url}" in line, line
    assert bound <= stopped_after < bound + 60, stopped_after
    assert newest_checkpoint(tmp_path / "ray" / "pgdown") < EPOCHS - 1, "the outage should stop it mid-trial"

    server.wait_ready()
    res = subprocess.run(DYNSWEEP + ["resume", "pgdown", "--storage", str(tmp_path / "ray"),
                                     "--tracking-uri", server.url],
                         cwd=tmp_path, env=env_for(tmp_path, **credentials), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    store = postgres.store()
    assert_equal_to_reference(store, "pgdown", reference)
    assert store.client.get_run(tracking.find_sweep(store, "pgdown")).info.status == "FINISHED"
