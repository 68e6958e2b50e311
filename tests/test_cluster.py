"""A sweep on a real Ray cluster: a head started with `ray start --head` on this
machine (its own temp dir, free ports, dashboard on 127.0.0.1), joined with
`dynsweep run --address` and through the Jobs API (`ray job submit`), with and
without Ray token auth; a cluster that cannot be joined is one line and exit 1
with no MLflow run left behind; a local Ray wants a token; ray_cluster.yaml
is valid for the cluster launcher.

Each head gets its own HOME, so its token (~/.ray/auth_token) is the test's,
and is stopped by killing its processes (never `ray stop`, which would stop
every Ray on the machine).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from sweeps import tracking
from sweeps.tracking import Store

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")

TINY = {
    "name": "tiny",
    "base": {
        "data": {"dataset": "mnist1d", "train_size": 400, "test_size": 200},
        "model": {"name": "mlp", "width": 16},
        "optim": {"name": "sgd", "lr": 0.1},
        "train": {"epochs": 1, "batch_size": 50},
        "probes": {"probe_size": 32, "val_probe_size": 16, "schedule": {"kind": "log", "points": 3}},
    },
    "seeds": [0],
}


# ------------------------------------------------------------------ helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def refusing_port():
    """A loopback port that refuses connections for the block: bound, never
    listening, so no server of a test running beside this one can take it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def env_for(home: Path, **extra: str) -> dict[str, str]:
    """This interpreter's tools first on PATH, the repo importable, a HOME of our
    own, and no Ray or MLflow settings from the caller."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "MLFLOW_")) and k not in ("HOME",)}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def write_spec(dir: Path) -> Path:
    path = dir / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def dynsweep(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 400):
    return subprocess.run([sys.executable, "-m", "sweeps.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def runs_in(uri: str, name: str = "tiny") -> list:
    store = Store(uri)
    exp = store.experiment_or_none(name)
    return [] if exp is None else store.client.search_runs([exp])


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Head:
    """`ray start --head --block` in its own session; stop() ends it and every
    process it started, by id."""

    def __init__(self, root: Path, auth_mode: str, num_cpus: int = 2, **extra_env: str):
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.temp = tempfile.mkdtemp(prefix="dsr", dir="/tmp")   # short: Ray's socket paths
        self.port, self.dashboard = free_port(), free_port()
        # its temp dir through RAY_TMPDIR: a driver with the same RAY_TMPDIR finds it
        # as this machine's running Ray (<temp>/ray/ray_current_cluster), others do not
        self.env = env_for(self.home, RAY_AUTH_MODE=auth_mode, RAY_TMPDIR=self.temp,
                           AUTOSCALER_METRIC_PORT=str(free_port()), DASHBOARD_METRIC_PORT=str(free_port()),
                           **extra_env)
        if auth_mode == "token":
            subprocess.run([RAY, "get-auth-token", "--generate"], env=self.env, check=True,
                           capture_output=True, timeout=120)
        self.proc = subprocess.Popen(
            [RAY, "start", "--head", "--block", "--port", str(self.port),
             "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
             "--dashboard-port", str(self.dashboard), "--include-dashboard", "true",
             "--ray-client-server-port", str(free_port()),      # Ray starts one anyway; not 10001
             "--dashboard-agent-listen-port", str(free_port()),
             "--num-cpus", str(num_cpus), "--disable-usage-stats"],
            env=self.env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.address = f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180) -> None:
        import urllib.error
        import urllib.request
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "ray start --head exited"
            # `ray start` writes the address file a few seconds after the dashboard answers
            if (Path(self.temp) / "ray" / "ray_current_cluster").exists():
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{self.dashboard}/api/version", timeout=2)
                    return
                except urllib.error.HTTPError:
                    return            # it answers (401 without a token is an answer)
                except OSError:
                    pass
            time.sleep(1)
        raise TimeoutError("the Ray head did not come up")

    def stop(self) -> None:
        pids = descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        kill_all(pids)
        shutil.rmtree(self.temp, ignore_errors=True)


class Node:
    """A second Ray node on this machine joined to `head` (`ray start --address
    --block` in its own session, the head's temp dir and HOME). `lose()` kills
    its raylet, workers and agents at once, as a machine that goes away would
    leave them: only the processes this `ray start` started, found by id."""

    def __init__(self, head: Head, num_cpus: int):
        self.proc = subprocess.Popen(
            [RAY, "start", "--address", head.address, "--block", "--node-ip-address", "127.0.0.1",
             "--num-cpus", str(num_cpus), "--disable-usage-stats",
             "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port()),
             "--runtime-env-agent-port", str(free_port())],
            env=head.env, cwd=head.home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def processes(self) -> list[int]:
        return descendants(self.proc.pid)

    def lose(self) -> None:
        kill_all([*self.processes(), self.proc.pid])      # the whole tree first: no orphan is missed
        self.proc.wait(timeout=30)


def kill_all(pids: list[int]) -> None:
    for pid in [p for p in pids if Path(f"/proc/{p}").exists()]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def alive_nodes(head: Head) -> int:
    """How many nodes the head's GCS counts alive (no dashboard needed); -1 while
    the GCS does not answer (a wait retries: on a loaded machine it can refuse a
    connection for a moment after the dashboard answered)."""
    import grpc
    from ray.core.generated import gcs_pb2, gcs_service_pb2, gcs_service_pb2_grpc

    try:
        with grpc.insecure_channel(head.address) as channel:
            reply = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetAllNodeInfo(
                gcs_service_pb2.GetAllNodeInfoRequest(), timeout=10)
    except grpc.RpcError:
        return -1
    return sum(n.state == gcs_pb2.GcsNodeInfo.ALIVE for n in reply.node_info_list)


@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    head = Head(tmp_path_factory.mktemp("token_head"), auth_mode="token")
    try:
        head.wait_ready()
        yield head
    finally:
        head.stop()


# -------------------------------------------------------------------- tests
def test_ray_cluster_yaml_is_valid_for_the_launcher():
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "RAY_AUTH_MODE=token" in head_start
    assert "ray-client-server-port" not in head_start      # no ray:// (README: Jobs API or GCS address)


@pytest.mark.slow
def test_run_joins_a_token_head_by_its_address(token_head, tmp_path):
    """Same HOME as the head, RAY_AUTH_MODE unset: the driver finds that the
    cluster wants a token and sends the one it has."""
    spec = write_spec(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = dynsweep(["run", str(spec), "--address", token_head.address, "--storage", str(tmp_path / "ray"),
                    "--tracking-uri", uri], tmp_path, env_for(token_head.home))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "InvalidAuthToken" not in res.stderr and "Token authentication is" not in res.stderr
    trials = tracking.trial_runs(Store(uri), "tiny")
    assert [t.status for t in trials] == ["finished"]


def test_run_without_an_address_starts_its_own_ray_beside_a_running_one(token_head, tmp_path):
    """`ray.init()` without an address joins the Ray that `ray start` left
    running on this machine, and refuses `num_cpus` there (a traceback before
    this was fixed); `dynsweep run` without --address or RAY_ADDRESS starts its
    own local Ray, as documented, and leaves the running one alone."""
    spec = write_spec(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = env_for(token_head.home, RAY_TMPDIR=token_head.temp)
    assert (Path(token_head.temp) / "ray" / "ray_current_cluster").exists(), "the driver can see the head"
    before = head_jobs(token_head)
    res = dynsweep(["run", str(spec), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri], tmp_path, env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert [t.status for t in tracking.trial_runs(Store(uri), "tiny")] == ["finished"]
    assert head_jobs(token_head) == before, "no driver joined the head"


def head_jobs(head: Head) -> list[str]:
    res = subprocess.run([RAY, "list", "jobs", "--address", f"http://127.0.0.1:{head.dashboard}",
                          "--format", "json"], env=head.env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    if res.stdout.strip() == "No resource in the cluster":     # what `ray list` prints for none
        return []
    return sorted(job["job_id"] for job in json.loads(res.stdout))


@pytest.mark.slow
def test_job_submit_runs_a_sweep_on_the_head(token_head, tmp_path):
    spec = write_spec(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = env_for(token_head.home, RAY_AUTH_MODE="token")
    res = subprocess.run(
        [RAY, "job", "submit", "--address", f"http://127.0.0.1:{token_head.dashboard}", "--",
         "dynsweep", "run", str(spec), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "succeeded" in res.stdout + res.stderr
    trials = tracking.trial_runs(Store(uri), "tiny")
    assert [t.status for t in trials] == ["finished"]


@pytest.mark.slow
def test_gpus_the_cluster_lacks_are_refused_before_anything_exists(token_head, tmp_path):
    """A CPU-only head and gpus_per_trial: 1: exit 2 in one line naming the spec
    file and the field, with no storage folder and no MLflow store made."""
    spec = tmp_path / "gpu.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "resources": {"gpus_per_trial": 1}}))
    res = dynsweep(["run", str(spec), "--address", token_head.address, "--storage", str(tmp_path / "ray"),
                    "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], tmp_path,
                   env_for(token_head.home))
    assert res.returncode == 2, res.stderr[-3000:]
    [line] = error_lines(res.stderr)
    assert line.startswith(f"error: {spec}: resources.gpus_per_trial: 1 GPU per trial, "
                           f"but the Ray cluster has none"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu.yaml"]


@pytest.mark.slow
@pytest.mark.parametrize("token", [None, "not-the-heads-token"])
def test_a_head_that_wants_a_token_we_lack_is_one_line(token_head, tmp_path, token):
    spec = write_spec(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    extra = {"RAY_AUTH_TOKEN": token} if token else {}
    start = time.monotonic()
    res = dynsweep(["run", str(spec), "--address", token_head.address, "--storage", str(tmp_path / "ray"),
                    "--tracking-uri", uri], tmp_path, env_for(tmp_path / "empty_home", **extra))
    assert res.returncode == 1
    [line] = error_lines(res.stderr)
    assert "RAY_AUTH_MODE=token" in line and "ray get-auth-token" in line
    assert "InvalidAuthToken" not in res.stderr
    assert time.monotonic() - start < 60
    assert runs_in(uri) == []                  # no parent run was created


@pytest.mark.slow
def test_an_address_where_no_cluster_runs_is_one_line(tmp_path):
    spec = write_spec(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = time.monotonic()
    with refusing_port() as port:
        res = dynsweep(["run", str(spec), "--address", f"127.0.0.1:{port}", "--storage",
                        str(tmp_path / "ray"), "--tracking-uri", uri], tmp_path, env_for(tmp_path / "home"))
    elapsed = time.monotonic() - start
    assert res.returncode == 1
    [line] = error_lines(res.stderr)
    assert "no Ray cluster answers at 127.0.0.1:" in line
    assert elapsed < 60, elapsed
    assert runs_in(uri) == []


@pytest.mark.slow
def test_run_joins_a_head_without_token_auth_while_holding_a_token(tmp_path):
    """A head started with RAY_AUTH_MODE=disabled; the driver's HOME has a
    token (as after any local run): the driver follows the head and sends none."""
    head = Head(tmp_path / "head", auth_mode="disabled")
    try:
        head.wait_ready()
        home = tmp_path / "driver_home"
        subprocess.run([RAY, "get-auth-token", "--generate"], env=env_for(home), check=True,
                       capture_output=True, timeout=120)
        spec = write_spec(tmp_path)
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        res = dynsweep(["run", str(spec), "--address", head.address, "--storage", str(tmp_path / "ray"),
                        "--tracking-uri", uri], tmp_path, env_for(home))
        assert res.returncode == 0, res.stderr[-3000:]
        assert [t.status for t in tracking.trial_runs(Store(uri), "tiny")] == ["finished"]
    finally:
        head.stop()


LOCAL_RAY = """
import json, os, re, subprocess, sys
from sweeps.tune import cluster
from sweeps.spec import parse_spec
from test_cluster import descendants
cluster.init_ray(None, parse_spec(json.loads(sys.argv[1]), source="test"))
import ray
gcs = ray.get_runtime_context().gcs_address
mine = {os.getpid(), *descendants(os.getpid())}
listeners = [line.split()[3] for line in subprocess.run(["ss", "-ltnpH"], capture_output=True,
                                                         text=True).stdout.splitlines()
             if {int(p) for p in re.findall(r"pid=(\\d+)", line)} & mine]
print(json.dumps({"wants_token": not cluster._gcs_answers(gcs, with_token=False),
                  "answers_with_token": cluster._gcs_answers(gcs, with_token=True),
                  "mode": os.environ.get("RAY_AUTH_MODE"), "listeners": listeners}))
ray.shutdown()
"""


@pytest.mark.slow
def test_local_ray_wants_a_token_and_serves_no_dashboard(tmp_path):
    """Ray 2.x binds its gRPC servers (GCS, raylet, workers) to every interface
    and cannot be told otherwise; a local dynsweep Ray therefore runs with
    token auth, so those ports refuse anyone without the token, and starts
    no HTTP dashboard."""
    res = subprocess.run([sys.executable, "-c", LOCAL_RAY, json.dumps(TINY)], cwd=tmp_path,
                         env=env_for(tmp_path / "home", PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["mode"] == "token"
    assert report["wants_token"] and report["answers_with_token"]
    assert report["listeners"]                                      # we did see Ray's ports ...
    assert not any(local.endswith(":8265") for local in report["listeners"])   # ... and no dashboard
    assert "Token authentication is enabled" not in res.stderr     # no banner on every run
