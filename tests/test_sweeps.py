"""Integration: real local Ray Tune, real sqlite MLflow, the real `dynsweep` CLI.

Each test runs the command line in a subprocess (its own Ray), then reads the
MLflow store directly.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dynamics_core.hooks import log_spaced_steps
from dynamics_core.train import is_wall_clock, steps_per_epoch
from sweeps import experiments, tracking
from sweeps.tracking import Store

pytestmark = pytest.mark.slow
DYNSWEEP = [sys.executable, "-m", "sweeps.cli"]

TINY_BASE = {
    "data": {"dataset": "mnist1d", "train_size": 400, "test_size": 200},
    "model": {"name": "mlp", "width": 16},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {"epochs": 3, "batch_size": 50},
    "probes": {"probe_size": 32, "val_probe_size": 16, "schedule": {"kind": "log", "points": 5}},
}


def write_spec(dir: Path, name: str, **fields) -> Path:
    spec = {"name": name, "base": TINY_BASE, **fields}
    path = dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def cli(args: list[str], cwd: Path, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(DYNSWEEP + args, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=_env(cwd), **kw)


def _env(cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    return env


def uri(dir: Path) -> str:
    return f"sqlite:///{dir / 'mlflow.db'}"


def smoke_verdicts(spec: Path, tmp_path: Path, timeout: float = 600) -> list[dict]:
    """`dynsweep run SPEC --smoke`, then its verdicts as `dynsweep conjectures --json` prints them."""
    res = cli(["run", str(spec), "--smoke", "--storage", str(tmp_path / "ray"),
               "--tracking-uri", uri(tmp_path)], tmp_path, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    out = cli(["conjectures", f"{spec.stem}-smoke", "--json", "--tracking-uri", uri(tmp_path)],
              tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)["verdicts"]


def judged_run(store: Store, name: str) -> tuple[str, object]:
    """(parent run id, the one `conjectures` run under it) of experiment `name`'s latest sweep."""
    parent = tracking.find_sweep(store, name)
    exp = store.client.get_experiment_by_name(name).experiment_id
    (run,) = store.client.search_runs(
        [exp], filter_string=f"tags.`dynsweep.kind` = 'conjectures' and tags.`mlflow.parentRunId` = '{parent}'")
    return parent, run


def histories(tracker: Store, name: str, parent: str | None = None) -> dict[str, dict[str, list]]:
    table = tracking.load_table(tracker, name, parent)
    out = {}
    for run_id, trial_id in zip(table.runs["run_id"], table.runs["trial_id"]):
        m = table.metrics[table.metrics["run_id"] == run_id]
        out[trial_id] = {k: list(zip(g["step"], g["value"])) for k, g in m.groupby("key")
                         if not is_wall_clock(k)}     # wall seconds: the one thing a resume can't reproduce
    return out


def assert_no_step_logged_twice(tracker: Store, name: str) -> None:
    for run in tracking.trial_runs(tracker, name):
        for key in run.metrics:
            steps = [m.step for m in tracker.client.get_metric_history(run.run_id, key)]
            assert len(steps) == len(set(steps)), f"{key} logged twice at some step"


def test_grid_sweep_lands_finished_child_runs_with_probe_series(tmp_path):
    spec = write_spec(tmp_path, "grid4", grid={"optim.lr": [0.05, 0.1], "train.batch_size": [50, 100]})
    res = cli(["run", str(spec), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri(tmp_path)], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    tracker = Store(uri(tmp_path))
    parent = tracking.find_sweep(tracker, "grid4")
    runs = tracking.trial_runs(tracker, "grid4")
    assert len(runs) == 4
    assert all(r.tags["mlflow.parentRunId"] == parent for r in runs)
    assert all(r.status == "finished" and tracker.client.get_run(r.run_id).info.status == "FINISHED" for r in runs)
    table = tracking.load_table(tracker, "grid4")
    assert sorted(zip(table.runs["optim.lr"], table.runs["train.batch_size"])) == \
        [(0.05, 50), (0.05, 100), (0.1, 50), (0.1, 100)]
    for _, row in table.runs.iterrows():
        total = 3 * steps_per_epoch(400, int(row["train.batch_size"]))
        for key in ("hessian/top", "gradcov/top", "gradcov/trace", "stiffness/train_train/sign"):
            steps = list(table.series(row["run_id"], key).index)
            assert steps == log_spaced_steps(total, 5), key
        assert list(table.series(row["run_id"], "train/loss").index) == \
            [total // 3, 2 * total // 3, total]
    assert "grid4" in res.stdout and "finished" in res.stdout   # the summary table
    # names carry the swept values: trial folders, MLflow run names and the table
    assert sorted(r.trial_id for r in runs) == ["lr=0.05,bs=100,s0", "lr=0.05,bs=50,s0",
                                                "lr=0.1,bs=100,s0", "lr=0.1,bs=50,s0"]
    assert all(tracker.client.get_run(r.run_id).info.run_name == r.trial_id for r in runs)
    assert (tmp_path / "ray" / "grid4" / "lr=0.1,bs=50,s0").is_dir() and "lr=0.1,bs=50,s0" in res.stdout
    assert tracker.client.get_run(parent).info.run_name.startswith("grid4@")
    # one summary per trial, from the series it logged
    for run in runs:
        for key in ("hessian/top", "gradcov/top"):
            history = tracker.client.get_metric_history(run.run_id, key)
            top = max(history, key=lambda m: m.value)
            assert run.metrics[f"{key}_max"] == top.value
            assert run.metrics[f"{key}_argmax_step"] == top.step
            assert len(tracker.client.get_metric_history(run.run_id, f"{key}_max")) == 1
    # the hint: the command serving the UI and a link to this sweep's runs table
    assert f"dynsweep ui --tracking-uri {uri(tmp_path)}" in res.stdout
    exp_id = tracker.client.get_experiment_by_name("grid4").experiment_id
    assert f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?searchFilter=" in res.stdout
    assert tracker.client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert "4/4 done" in res.stderr
    # status and list read the same sweep back
    status = cli(["status", "grid4", "--storage", str(tmp_path / "ray")], tmp_path)
    assert status.returncode == 0 and status.stdout.count("TERMINATED") == 4
    listing = cli(["list", "--storage", str(tmp_path / "ray")], tmp_path)
    assert listing.returncode == 0 and "grid4" in listing.stdout


def test_optuna_search_with_asha_runs(tmp_path):
    spec = write_spec(tmp_path, "opt", search={
        "kind": "optuna", "num_samples": 3, "metric": "val/acc", "mode": "max",
        "space": {"optim.lr": {"kind": "loguniform", "low": 0.01, "high": 0.3}}},
        scheduler={"kind": "asha", "metric": "val/acc", "mode": "max", "grace_period": 1,
                   "reduction_factor": 2})
    res = cli(["run", str(spec), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri(tmp_path)], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    table = tracking.load_table(Store(uri(tmp_path)), "opt")
    assert len(table.runs) == 3
    lrs = table.runs["optim.lr"].tolist()
    assert all(0.01 <= lr <= 0.3 for lr in lrs) and len(set(lrs)) == 3
    assert set(table.runs["status"]) == {"finished"}, "ASHA-stopped trials end finished too"
    epochs_run = [table.series(r, "train/epoch").iloc[-1] for r in table.runs["run_id"]]
    assert max(epochs_run) == 3
    stopped = [r for r in tracking.trial_runs(Store(uri(tmp_path)), "opt") if r.tags.get("stopped_early")]
    assert len(stopped) == sum(e < 3 for e in epochs_run), "early stops are tagged"


def test_two_worker_trial_runs_under_ddp(tmp_path):
    spec = write_spec(tmp_path, "ddp", resources={"cpus_per_trial": 1, "workers_per_trial": 2})
    res = cli(["run", str(spec), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri(tmp_path)],
              tmp_path, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    table = tracking.load_table(Store(uri(tmp_path)), "ddp")
    (run_id,) = table.runs["run_id"]
    assert table.runs["status"].item() == "finished"
    total = 3 * steps_per_epoch(400, 50)
    assert list(table.series(run_id, "hessian/top").index) == log_spaced_steps(total, 5)
    assert table.series(run_id, "final/steps").iloc[-1] == total
    assert table.series(run_id, "final/world_size").iloc[-1] == 2, "two DDP ranks trained it"


# -------------------------------------------------------------- fault tolerance
SLOW = {"train": {"epochs": 6, "batch_size": 50},
        "probes": {"probe_size": 128, "val_probe_size": 64, "hessian_trace": True,
                   "schedule": {"kind": "every", "every": 2}}}


def slow_spec(dir: Path, name: str, seeds: list[int]) -> Path:
    base = {**TINY_BASE, **SLOW}
    path = dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": base, "seeds": seeds,
                                    "fault_tolerance": {"max_failures": 2, "checkpoint_every_epochs": 1}}))
    return path


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def checkpoints(exp: Path) -> list[Path]:
    return sorted(exp.glob("*/checkpoint_*"))


def test_killed_worker_is_retried_from_its_checkpoint(tmp_path):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    ref.mkdir(), cut.mkdir()
    for d in (ref, cut):
        slow_spec(d, "wk", seeds=[0])
    done = cli(["run", str(ref / "wk.yaml"), "--storage", str(ref / "ray"), "--tracking-uri", uri(ref)], ref)
    assert done.returncode == 0, done.stderr[-3000:]

    proc = subprocess.Popen(DYNSWEEP + ["run", str(cut / "wk.yaml"), "--storage", str(cut / "ray"),
                                        "--tracking-uri", uri(cut)], cwd=cut, env=_env(cut),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        wait_for(lambda: len(checkpoints(cut / "ray" / "wk")) >= 1, 180, "a checkpoint")
        workers = subprocess.run(["pgrep", "-f", "-s", str(proc.pid), "ray::ImplicitFunc"],
                                 capture_output=True, text=True).stdout.split()
        assert workers, "the trial's worker process should be running"
        for pid in workers:
            os.kill(int(pid), signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    from ray.tune import ExperimentAnalysis
    (trial,) = ExperimentAnalysis(str(cut / "ray" / "wk")).trials
    assert trial.run_metadata.num_failures >= 1, "the kill should have failed the trial once"
    tracker = Store(uri(cut))
    (run,) = tracking.trial_runs(tracker, "wk")
    assert run.status == "finished"
    assert_no_step_logged_twice(tracker, "wk")
    assert histories(tracker, "wk") == histories(Store(uri(ref)), "wk")


def test_smoke_breakeven_sweep_logs_verdicts_and_figures(tmp_path):
    spec = Path(__file__).parents[1] / "sweeps" / "specs" / "breakeven.yaml"
    res = cli(["run", str(spec), "--smoke", "--storage", str(tmp_path / "ray"),
               "--tracking-uri", uri(tmp_path)], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "breakeven.c1_lr" in res.stdout          # the verdict table is printed
    tracker = Store(uri(tmp_path))
    assert tracker.client.get_experiment_by_name("breakeven") is None, "smoke runs are kept apart"
    assert (tmp_path / "ray" / "breakeven-smoke").is_dir()
    parent, verdict_run = judged_run(tracker, "breakeven-smoke")
    files = {a.path for a in tracker.client.list_artifacts(verdict_run.info.run_id)}
    assert {"verdicts.json", "verdicts.csv", "breakeven_steps.csv", "figures"} <= files
    figures = tracker.client.list_artifacts(verdict_run.info.run_id, "figures")
    assert any(f.path.endswith(".png") and f.file_size > 1000 for f in figures)
    # the plans were registered on the parent run before the trials, and judged under
    registered = tracker.client.get_run(parent).data.params["plans_hash"]
    assert "plans.json" in {a.path for a in tracker.client.list_artifacts(parent)}
    assert verdict_run.data.tags["dynsweep.registered_plans_hash"] == registered
    assert verdict_run.data.tags["dynsweep.plans_hash"] == registered
    names = set(verdict_run.data.tags)
    assert {"verdict.breakeven.c1_lr.hessian/top", "verdict.breakeven.c2_batch.gradcov/trace"} <= names
    # the same verdicts again, as JSON, from the stored sweep
    again = cli(["conjectures", "breakeven-smoke", "--json", "--tracking-uri", uri(tmp_path)], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    import json

    import torch
    judged = json.loads(again.stdout)
    assert judged["sweep"] == "breakeven-smoke" and judged["ran_on"]["torch"] == [torch.__version__]
    assert judged["ran_on"]["threads"] == [1] and judged["ran_on"]["commit"]   # one CPU per trial
    assert judged["judged_with"]["commit"] == judged["ran_on"]["commit"]
    # every registered plan but those of probes the spec does not run (Tr(H)) has its verdict
    want = {k for k in experiments.get("breakeven").plans if "hessian/trace" not in k}
    verdicts = judged["verdicts"]
    assert {v["name"] for v in verdicts} == want and all(v["reason"] for v in verdicts)
    assert {v["verdict"] for v in verdicts} <= {"supported", "negligible", "refuted", "inconclusive",
                                             "underpowered", "invalid_protocol"}


def test_ui_serves_the_same_store_on_localhost(tmp_path):
    spec = write_spec(tmp_path, "uitest")
    assert cli(["run", str(spec), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri(tmp_path)],
               tmp_path).returncode == 0
    import json
    import socket
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(DYNSWEEP + ["ui", "--port", str(port), "--tracking-uri", uri(tmp_path)],
                            cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def names():
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
                                         data=b'{"max_results": 10}', method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=2) as r:
                return {e["name"] for e in json.load(r)["experiments"]}

        def up():
            try:
                return "uitest" in names()
            except OSError:
                return False
        wait_for(up, 90, "the MLflow UI")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_gpus_the_cluster_lacks_are_refused_before_any_run(tmp_path):
    """gpus_per_trial: 1 on a machine without GPUs: exit 2 in one line naming the
    field, before any MLflow run exists (Tune would wait forever)."""
    spec = write_spec(tmp_path, "gpu", resources={"gpus_per_trial": 1})
    res = cli(["run", str(spec), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri(tmp_path)],
              tmp_path, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    (error,) = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert "resources.gpus_per_trial" in error and "Traceback" not in res.stderr
    store = Store(uri(tmp_path))
    assert tracking.find_sweep(store, "gpu") is None
