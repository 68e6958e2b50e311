"""Interruptions never lose work or lie: a driver killed at any point resumes
to the uninterrupted result; Ctrl-C and SIGTERM stop cleanly and say how to
resume; one driver per sweep; a missing checkpoint is survived.

Real processes: the `dynsweep` CLI in subprocesses (its own local Ray), a real
sqlite MLflow store; the reference is the same sweep run without interruption.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from sweeps import tracking
from sweeps.tracking import Store
from test_sweeps import (DYNSWEEP, _env, assert_no_step_logged_twice, checkpoints, cli, histories,
                         slow_spec, uri, wait_for)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """Histories of the uninterrupted two-trial sweep `ft`."""
    ref = tmp_path_factory.mktemp("ref")
    slow_spec(ref, "ft", seeds=[0, 1])
    done = cli(["run", str(ref / "ft.yaml"), "--storage", str(ref / "ray"), "--tracking-uri", uri(ref)], ref)
    assert done.returncode == 0, done.stderr[-3000:]
    return histories(Store(uri(ref)), "ft")


def start(cut: Path, *extra: str) -> subprocess.Popen:
    """`dynsweep run ft.yaml` in the background, in its own process group."""
    return subprocess.Popen(DYNSWEEP + ["run", str(cut / "ft.yaml"), "--storage", str(cut / "ray"),
                                        "--tracking-uri", uri(cut), *extra],
                            cwd=cut, env=_env(cut), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def kill_driver_when(cut: Path, ready, what: str) -> None:
    """`start` the sweep, wait (240 s at most) until `ready()`, then SIGKILL the
    driver and everything it started."""
    proc = start(cut)
    try:
        wait_for(ready, 240, what)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def trial_folders(exp: Path) -> list[Path]:
    return [p for p in exp.glob("*") if p.is_dir()]


def newest_checkpoint(exp: Path, trial: str = "*") -> int:
    """The highest checkpoint number of any trial, or of the one named (older ones
    are pruned), -1 if none."""
    return max((int(p.name.split("_")[1]) for p in exp.glob(f"{trial}/checkpoint_*")), default=-1)


def resume(cut: Path, *, name_the_store: bool = True) -> subprocess.CompletedProcess:
    """`dynsweep resume ft`; without `name_the_store`, the sweep's manifest names its MLflow store."""
    store = ["--tracking-uri", uri(cut)] if name_the_store else []
    return cli(["resume", "ft", "--storage", str(cut / "ray"), *store], cut)


def assert_same_as_reference(cut: Path, reference: dict) -> None:
    tracker = Store(uri(cut))
    runs = tracking.trial_runs(tracker, "ft")
    assert len(runs) == len(reference), "a resumed trial continues its own MLflow run"
    assert {r.status for r in runs} == {"finished"}
    assert_no_step_logged_twice(tracker, "ft")
    assert histories(tracker, "ft") == reference


KILL_POINTS = {
    "before_tune": lambda exp: (exp / "dynsweep.json").exists(),       # Ray still starting
    "early": lambda exp: len(trial_folders(exp)) >= 1,                 # trials started, no checkpoint
    "right_after_a_checkpoint": lambda exp: newest_checkpoint(exp) >= 0,
    "late": lambda exp: newest_checkpoint(exp) >= 4,
}


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkilled_driver_resumes_to_the_uninterrupted_result(tmp_path, reference, point):
    slow_spec(tmp_path, "ft", seeds=[0, 1])
    kill_driver_when(tmp_path, lambda: KILL_POINTS[point](tmp_path / "ray" / "ft"), point)
    res = resume(tmp_path, name_the_store=point != "late")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "taking over the stale lock" in res.stderr, "the killed driver's lock is stale"
    assert_same_as_reference(tmp_path, reference)
    assert not (tmp_path / "ray" / "ft" / "dynsweep.lock").exists(), "the lock goes with its driver"
    for trial in trial_folders(tmp_path / "ray" / "ft"):
        assert len(list(trial.glob("checkpoint_*"))) == 1, "only the checkpoint the state names is kept"


@pytest.mark.slow
def test_resume_survives_deleted_checkpoints(tmp_path, reference):
    """The checkpoints the saved state names are deleted (by hand, or by an older
    dynsweep's retention): resume continues from an older one or starts over."""
    slow_spec(tmp_path, "ft", seeds=[0, 1])
    kill_driver_when(tmp_path, lambda: newest_checkpoint(tmp_path / "ray" / "ft") >= 3, "checkpoints")
    import shutil
    for trial in trial_folders(tmp_path / "ray" / "ft"):
        for ckpt in sorted(trial.glob("checkpoint_*"))[1:]:     # keep at most the oldest
            shutil.rmtree(ckpt)
    res = resume(tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "is gone" in res.stderr or "starts over" in res.stderr, res.stderr[-2000:]
    assert_same_as_reference(tmp_path, reference)


@pytest.mark.slow
def test_ctrl_c_and_sigterm_stop_cleanly_and_resume_completes(tmp_path):
    spec = yaml.safe_load(slow_spec(tmp_path, "ft", seeds=[0]).read_text())
    spec["base"]["train"]["epochs"] = 48                 # long enough to stop it twice
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(spec))
    exp, tracker = tmp_path / "ray" / "ft", Store(uri(tmp_path))
    proc = start(tmp_path)
    try:
        wait_for(lambda: newest_checkpoint(exp) >= 0, 240, "a checkpoint")
        # a second driver on the same sweep is refused in one line while the first runs
        second = cli(["run", str(tmp_path / "ft.yaml"), "--storage", str(tmp_path / "ray"),
                      "--tracking-uri", uri(tmp_path)], tmp_path)
        assert proc.poll() is None, "the first driver should still run"
        assert second.returncode == 2
        (line,) = [ln for ln in second.stderr.splitlines() if "error" in ln]
        assert "running already" in line and f"pid {proc.pid}" in line, second.stderr
        proc.send_signal(signal.SIGINT)              # Ctrl-C to the driver
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert (f"interrupted: `dynsweep resume ft --storage {tmp_path / 'ray'} "
            f"--tracking-uri {uri(tmp_path)}`") in err, err[-2000:]
    parent = tracking.find_sweep(tracker, "ft")
    assert tracker.client.get_run(parent).info.status == "RUNNING", "an interrupted sweep is not FINISHED"
    assert not (exp / "dynsweep.lock").exists()

    # SIGTERM (a scheduler's preemption) stops a resume the same way: exit 143
    reached = newest_checkpoint(exp)
    again = subprocess.Popen(DYNSWEEP + ["resume", "ft", "--storage", str(tmp_path / "ray")],
                             cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: newest_checkpoint(exp) > reached, 240, "a checkpoint after resuming")
        again.send_signal(signal.SIGTERM)
        _, err = again.communicate(timeout=120)
    finally:
        if again.poll() is None:
            os.killpg(again.pid, signal.SIGKILL)
    assert again.returncode == 143, err[-3000:]
    assert f"interrupted: `dynsweep resume ft --storage {tmp_path / 'ray'}`" in err, err[-2000:]
    assert tracker.client.get_run(parent).info.status == "RUNNING"

    res = resume(tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert tracker.client.get_run(parent).info.status == "FINISHED"
    (run,) = tracking.trial_runs(tracker, "ft")
    assert run.status == "finished" and run.metrics["train/epoch"] == 48
    assert_no_step_logged_twice(tracker, "ft")


@pytest.mark.slow
def test_a_stored_sweep_is_not_shadowed_and_new_sets_it_aside(tmp_path):
    from test_sweeps import write_spec

    spec = write_spec(tmp_path, "again")
    args = ["run", str(spec), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri(tmp_path)]
    assert cli(args, tmp_path).returncode == 0
    refused = cli(args, tmp_path)
    assert refused.returncode == 2
    (line,) = [ln for ln in refused.stderr.splitlines() if "error" in ln]
    assert "dynsweep resume again" in line and "--new" in line
    fresh = cli(args + ["--new"], tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    (aside,) = (tmp_path / "ray").glob("again@*")
    assert (aside / "dynsweep.json").exists() and (tmp_path / "ray" / "again" / "dynsweep.json").exists()
    tracker = Store(uri(tmp_path))
    exp = tracker.client.get_experiment_by_name("again").experiment_id
    parents = tracker.client.search_runs([exp], "tags.`dynsweep.kind` = 'sweep'")
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}


def test_concurrent_first_use_of_a_sqlite_store(tmp_path):
    """Two processes create the schema of a fresh sqlite file at once: both succeed."""
    code = ("import sys; from sweeps import tracking; tracking.create_schema(sys.argv[1]); "
            "tracking.Store(sys.argv[1]).experiment_id('x')")
    env = _env(tmp_path)
    for attempt in range(1):
        db = f"sqlite:///{tmp_path / f'fresh{attempt}.db'}"
        procs = [subprocess.Popen([DYNSWEEP[0], "-c", code, db], env=env, cwd=tmp_path,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-2000:]
        assert Store(db).experiment_or_none("x") is not None


# ------------------------------------------------- nothing re-done after a resume
UNEVEN = "uneven"        # two trials, 1 and 9 epochs: one finishes while the other trains


def uneven_spec(dir: Path) -> Path:
    spec = yaml.safe_load(slow_spec(dir, UNEVEN, seeds=[0]).read_text())
    spec["grid"] = {"train.epochs": [1, 9]}
    path = dir / f"{UNEVEN}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def finished_runs(dir: Path) -> list[str]:
    """Trial names whose MLflow run is FINISHED (read straight from the sqlite file)."""
    import sqlite3

    if not (dir / "mlflow.db").exists():
        return []
    try:
        with sqlite3.connect(f"file:{dir / 'mlflow.db'}?mode=ro", uri=True, timeout=1) as db:
            return [name for (name,) in db.execute(
                "select t.value from runs r join tags t on t.run_uuid = r.run_uuid "
                "where t.key = 'trial_id' and r.status = 'FINISHED'")]
    except sqlite3.Error:          # being written right now
        return []


def saved_status(exp: Path, trial: str) -> str:
    """A trial's status in the experiment state a restore reads."""
    import json

    state = json.loads(max(exp.glob("experiment_state-*.json")).read_text())
    (status,) = [json.loads(t)["status"] for t, _ in state["trial_data"]
                 if json.loads(t)["custom_trial_name"] == trial]
    return status


def result_rows(trial: Path) -> list[str]:
    path = trial / "result.json"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow
def test_a_finished_trial_is_not_trained_again_after_driver_kills(tmp_path):
    """Tune saves its experiment state every 10 s or so: a driver killed right
    after a trial finished leaves a state in which that trial still runs from
    an older checkpoint. However often the driver is killed, resume leaves a
    finished trial alone (no Tune result row, checkpoint or MLflow write more)
    and the sweep ends as an undisturbed one does."""
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    ref.mkdir(), cut.mkdir()
    done = cli(["run", str(uneven_spec(ref)), "--storage", str(ref / "ray"), "--tracking-uri", uri(ref)], ref)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = histories(Store(uri(ref)), UNEVEN)

    uneven_spec(cut)
    exp = cut / "ray" / UNEVEN
    short, long = exp / "ep=1,s0", exp / "ep=9,s0"
    proc = subprocess.Popen(DYNSWEEP + ["run", str(cut / f"{UNEVEN}.yaml"), "--storage", str(cut / "ray"),
                                        "--tracking-uri", uri(cut)], cwd=cut, env=_env(cut),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:                                          # kill 1: right after the short trial finished
        wait_for(lambda: "ep=1,s0" in finished_runs(cut), 240, "the short trial's run to finish")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "ep=9,s0" not in finished_runs(cut), "the long trial should still have been training"
    # the case in point, unless Tune happened to save its state between the trial's end and the kill
    stale = saved_status(exp, "ep=1,s0") != "TERMINATED"
    tracker = Store(uri(cut))
    (run,) = [r for r in tracking.trial_runs(tracker, UNEVEN) if r.trial_id == "ep=1,s0"]
    ended = tracker.client.get_run(run.run_id).info.end_time
    rows = result_rows(short)
    final = max(short.glob("checkpoint_*"))
    final_mtime = (final / "state.pt").stat().st_mtime_ns

    long_rows = len(result_rows(long))            # kill 2: shortly after a resume started
    again = subprocess.Popen(DYNSWEEP + ["resume", UNEVEN, "--storage", str(cut / "ray"),
                                         "--tracking-uri", uri(cut)], cwd=cut, env=_env(cut),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        wait_for(lambda: len(result_rows(long)) > long_rows, 240, "the resumed sweep's first result")
    finally:
        os.killpg(again.pid, signal.SIGKILL)
        _, err = again.communicate()
    assert not stale or "ep=1,s0: ended before the driver stopped; not run again" in err, err[-3000:]

    res = cli(["resume", UNEVEN, "--storage", str(cut / "ray"), "--tracking-uri", uri(cut)], cut)
    assert res.returncode == 0, res.stderr[-3000:]
    assert result_rows(short) == rows, "no Tune result of the finished trial after the kills"
    assert [p.name for p in short.glob("checkpoint_*")] == [final.name]
    assert (final / "state.pt").stat().st_mtime_ns == final_mtime, "its final checkpoint is untouched"
    assert tracker.client.get_run(run.run_id).info.end_time == ended, "its MLflow run was not reopened"
    assert {r.status for r in tracking.trial_runs(tracker, UNEVEN)} == {"finished"}
    assert_no_step_logged_twice(tracker, UNEVEN)
    assert histories(tracker, UNEVEN) == reference


# ------------------------------------------------------------ a node lost mid-sweep
def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


@pytest.mark.slow
def test_a_lost_nodes_trial_is_retried_from_its_checkpoint(tmp_path, reference):
    """A Ray cluster on this machine: a head and a second node, one CPU each, so
    each of the sweep's two trials runs on its own node. While a trial trains
    on the second node, with epochs left, that node is lost (its raylet,
    workers and agents killed). Tune retries the trial (max_failures 2) from
    its last checkpoint on the head, the progress line says which trial, why,
    from where and which retry, and the sweep ends as the undisturbed one."""
    from test_cluster import Head, Node, alive_nodes, env_for

    slow_spec(tmp_path, "ft", seeds=[0, 1])
    exp = tmp_path / "ray" / "ft"
    # the head declares a silent node dead within seconds (Ray's default: about 30 s)
    # a lost node is noticed within seconds, yet a node slow to answer on a loaded machine is not lost
    head = Head(tmp_path / "head", auth_mode="disabled", num_cpus=1, RAY_health_check_period_ms="1000",
                RAY_health_check_timeout_ms="2000", RAY_health_check_failure_threshold="5")
    node = None
    try:
        head.wait_ready()
        node = Node(head, num_cpus=1)
        wait_for(lambda: alive_nodes(head) == 2, 180, "the second node to join")
        proc = subprocess.Popen(DYNSWEEP + ["run", str(tmp_path / "ft.yaml"), "--address", head.address,
                                            "--storage", str(tmp_path / "ray"), "--tracking-uri", uri(tmp_path)],
                                cwd=tmp_path, env=env_for(head.home, RAY_AUTH_MODE="disabled"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            def on_the_node() -> tuple[int, str] | None:
                """(pid, trial) of the trial worker on the second node (its cwd is the trial's)."""
                for pid in node.processes():
                    if "ray::ImplicitFunc" in cmdline(pid):
                        with contextlib.suppress(OSError):
                            return pid, Path(os.readlink(f"/proc/{pid}/cwd")).name
                return None

            wait_for(lambda: on_the_node() and newest_checkpoint(exp, on_the_node()[1]) >= 1, 300,
                     "a trial with a checkpoint on the second node")
            pid, lost = on_the_node()
            os.kill(pid, signal.SIGSTOP)          # no further epoch while we look
            assert newest_checkpoint(exp, lost) < 5, "the trial should have epochs left"
            time.sleep(1)                         # the driver takes in the results sent before
            node.lose()
            _, err = proc.communicate(timeout=500)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if node is not None:
            node.lose()
        head.stop()
    assert proc.returncode == 0, err[-3000:]
    import re
    retried = re.findall(r"(s[01]) lost its node \((\w+): [^\n]*\); retrying from "
                         r"checkpoint_(\d+) \(epoch (\d+)\) \(retry 1 of 2\)", err)
    assert len(retried) == 1, err[-3000:]
    (name, error, index, epoch), = retried
    assert name == lost and int(index) >= 0 and int(epoch) == int(index) + 1, "its last checkpoint, at an epoch's end"
    from ray.tune import ExperimentAnalysis
    failures = {str(t): t.run_metadata.num_failures for t in ExperimentAnalysis(str(exp)).trials}
    assert failures == {name: 1, ({"s0", "s1"} - {name}).pop(): 0}
    assert_same_as_reference(tmp_path, reference)
