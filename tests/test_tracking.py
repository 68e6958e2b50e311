"""sweeps.tracking against a real MLflow sqlite store (no mocks)."""
from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from dynamics_core.config import OptimConfig, ScheduleConfig, TrainConfig, TrialConfig
from sweeps.table import SweepTable
from sweeps import tracking
from sweeps.tracking import Store, cast_param, default_tracking_uri, git_sha
from sweeps.tracking.store import PARAM_VALUE_LIMIT


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(scope="module")
def tracker(store) -> Store:
    # One database for the module: creating the schema costs about a second.
    return Store(f"sqlite:///{store / 'mlflow.db'}")


@pytest.fixture
def exp(request) -> str:
    return f"exp-{request.node.name}"


def _artifact_dir(tracker: Store, run_id: str) -> Path:
    uri = tracker.client.get_run(run_id).info.artifact_uri
    assert uri.startswith("file://")
    return Path(uri[len("file://"):])


# ------------------------------------------------------------ environment
def test_default_tracking_uri_is_absolute_sqlite_under_base_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = default_tracking_uri("runs")
    assert uri == f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').as_posix()}"
    assert uri.startswith("sqlite:////")            # absolute path: survives a chdir
    assert (tmp_path / "runs").is_dir()
    assert Store(uri).artifact_root == (tmp_path / "runs" / "mlflow-artifacts").as_uri()


def test_env_tracking_uri_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert default_tracking_uri(tmp_path / "runs") == "http://mlflow.example:5000"
    assert not (tmp_path / "runs").exists()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///other/db.sqlite")
    assert default_tracking_uri() == f"sqlite:///{(tmp_path / 'other' / 'db.sqlite').as_posix()}"


def test_git_sha(tmp_path):
    assert git_sha(tmp_path) is None                 # not a repository
    sha = git_sha(Path(__file__).parent)
    assert sha is None or len(sha) == 40


def test_cast_param():
    assert cast_param("3") == 3 and isinstance(cast_param("3"), int)
    assert cast_param("-0.25") == -0.25
    assert cast_param("1e-05") == 1e-5
    assert cast_param("True") is True and cast_param("False") is False
    assert cast_param("None") is None
    assert cast_param("[0.5, 0.75]") == [0.5, 0.75]
    assert cast_param("['a', 'b']") == ["a", "b"]
    assert cast_param("(1, 2)") == (1, 2)
    assert cast_param("[]") == []
    assert cast_param("mnist1d") == "mnist1d"
    assert cast_param("[not a list") == "[not a list"


# ------------------------------------------------------------ layout
def test_sweep_parent_and_child_runs(tracker, exp):
    parent = tracking.start_sweep(tracker, exp, spec_hash="spec123", git_sha="a" * 40,
                                 description="four trials", params={"sweep.trials": 4})
    assert tracking.find_sweep(tracker, exp) == parent
    assert tracking.find_sweep(tracker, "no-such-experiment") is None
    prun = tracker.client.get_run(parent)
    assert prun.data.tags["dynsweep.kind"] == "sweep"
    assert prun.data.tags["spec_hash"] == "spec123"
    assert prun.data.tags["git_sha"] == "a" * 40
    assert prun.data.tags["mlflow.runName"].startswith(f"{exp}@")
    assert prun.data.params == {"sweep.trials": "4"}

    trials = [tracking.open_trial(tracker, parent, f"trial_{i}", f"hash{i}",
                                 TrialConfig(seed=i).flat()) for i in range(4)]
    assert len({t.run_id for t in trials}) == 4
    exp_id = tracker.experiment_id(exp)
    children = tracker.client.search_runs([exp_id], "tags.`mlflow.parentRunId` = '%s'" % parent)
    assert {r.info.run_id for r in children} == {t.run_id for t in trials}
    for r in children:
        tags = r.data.tags
        i = int(tags["trial_id"].split("_")[1])
        assert tags["mlflow.parentRunId"] == parent
        assert tags["run_hash"] == f"hash{i}"
        assert tags["status"] == "running"
        assert tags["dynsweep.kind"] == "trial"
        assert tags["mlflow.runName"] == f"trial_{i}" == r.info.run_name
        assert tags["spec_hash"] == "spec123"          # inherited from the parent
        assert r.info.status == "RUNNING"

    tracking.end_sweep(tracker, parent)
    assert tracker.client.get_run(parent).info.status == "FINISHED"
    # A second execution of the same spec: a new parent, found as the latest.
    parent2 = tracking.start_sweep(tracker, exp, spec_hash="spec123", git_sha=None)
    assert parent2 != parent and tracking.find_sweep(tracker, exp) == parent2
    assert "git_sha" not in tracker.client.get_run(parent2).data.tags
    assert len(tracking.load_table(tracker, exp).runs) == 0
    assert len(tracking.load_table(tracker, exp, parent_run_id=parent).runs) == 4


def test_load_table_casts_params_back(tracker, exp):
    parent = tracking.start_sweep(tracker, exp, "s", None)
    configs = [
        TrialConfig(seed=7, optim=OptimConfig(lr=0.05, momentum=0.9, nesterov=True,
                                              schedule=ScheduleConfig(kind="step",
                                                                      milestones=(0.3, 0.6, 0.9)))),
        TrialConfig(seed=8, train=TrainConfig(batch_size=32, max_steps=40)),
    ]
    runs = [tracking.open_trial(tracker, parent, f"t{i}", cfg.run_hash(), cfg.flat())
            for i, cfg in enumerate(configs)]
    for i, run in enumerate(runs):
        run.log_metrics({"train/loss": 1.0 + i, "breakeven/step": 10.0 * (i + 1)}, step=5)
        run.set_status("finished")

    table = tracking.load_table(tracker, exp)
    assert isinstance(table, SweepTable)
    assert list(table.runs["trial_id"]) == ["t0", "t1"]
    for cfg, run, (_, row) in zip(configs, runs, table.runs.iterrows()):
        assert row["run_id"] == run.run_id
        assert row["run_hash"] == cfg.run_hash()
        assert row["status"] == "finished"
        assert row["seed"] == cfg.seed and isinstance(row["seed"], int)
        for key, value in cfg.flat().items():       # every field round-trips, typed
            got = row[key]
            assert got == value or (got is None and value is None), key
            assert type(got) is type(value), (key, got, value)
    assert table.runs.loc[0, "optim.schedule.milestones"] == [0.3, 0.6, 0.9]
    assert table.runs["optim.nesterov"].dtype == bool and table.runs.loc[0, "optim.nesterov"]
    assert table.runs["train.batch_size"].dtype == np.int64   # uniform columns get real dtypes
    assert table.runs["optim.lr"].dtype == np.float64
    assert table.runs.loc[0, "train.max_steps"] is None
    assert table.runs.loc[1, "train.max_steps"] == 40
    assert list(table.runs["breakeven/step"]) == [10.0, 20.0]
    assert table.max_of("train/loss").to_dict() == {runs[0].run_id: 1.0, runs[1].run_id: 2.0}


# ------------------------------------------------------------ metrics
def test_metrics_are_buffered_then_flushed_at_their_steps(tracker, exp):
    parent = tracking.start_sweep(tracker, exp, "s", None)
    run = tracking.open_trial(tracker, parent, "t0", "h", {"seed": 0})
    run.flush_every, run.flush_interval_s = 10, 1e9
    history = lambda key: [(m.step, m.value) for m in tracker.client.get_metric_history(run.run_id, key)]

    run.log_metrics({"hessian/top": 1.0, "gradcov/top": 0.5}, step=1)
    run.log_metrics({"hessian/top": 2.0, "gradcov/top": 0.25}, step=2)
    assert history("hessian/top") == []                    # still in the buffer
    run.flush()
    assert history("hessian/top") == [(1, 1.0), (2, 2.0)]
    assert history("gradcov/top") == [(1, 0.5), (2, 0.25)]

    for step in range(3, 8):                                # 10 pending -> automatic flush
        run.log_metrics({"hessian/top": float(step), "gradcov/trace": float(-step)}, step=step)
    assert [s for s, _ in history("hessian/top")] == [1, 2, 3, 4, 5, 6, 7]
    assert history("gradcov/trace") == [(s, float(-s)) for s in range(3, 8)]

    run.log_metrics({"hessian/top": 99.0}, step=2)          # same (key, step): dropped
    run.flush()
    assert dict(history("hessian/top"))[2] == 2.0
    assert len(history("hessian/top")) == 7

    many = {f"stiffness/pair/{i}": float(i) for i in range(1500)}  # > one batch's limit
    run.log_metrics(many, step=100)
    run.flush()
    assert len(tracker.client.get_run(run.run_id).data.metrics) == 3 + 1500


def test_nonfinite_values_are_kept_as_data(tracker, exp):
    parent = tracking.start_sweep(tracker, exp, "s", None)
    run = tracking.open_trial(tracker, parent, "t0", "h", {"seed": 0})
    run.log_metrics({"train/loss": 1.0}, step=0)
    run.log_metrics({"train/loss": float("inf"), "val/loss": float("nan")}, step=3)
    run.log_metrics({"train/loss": float("-inf")}, step=4)
    run.set_status("diverged")
    table = tracking.load_table(tracker, exp)
    s = table.series(run.run_id, "train/loss")
    assert list(s.index) == [0, 3, 4]
    assert s[0] == 1.0 and s[3] == math.inf and s[4] == -math.inf
    assert math.isnan(table.series(run.run_id, "val/loss")[3])
    assert table.runs.loc[0, "train/loss"] == -math.inf
    assert table.runs.loc[0, "status"] == "diverged"


def test_resumed_run_never_logs_a_step_twice(tracker, exp):
    parent = tracking.start_sweep(tracker, exp, "s", None)
    params = TrialConfig(seed=3).flat()
    run = tracking.open_trial(tracker, parent, "t0", "h", params)
    for step in range(10):
        run.log_metrics({"train/loss": float(step), "hessian/top": 10.0 + step}, step=step)
    run.set_status("errored")                               # the worker died
    assert tracker.client.get_run(run.run_id).info.status == "FAILED"

    # Resume from a checkpoint taken at step 5: the run id travels in it.
    again = tracking.open_trial(tracker, parent, "t0", "h", {**params, "optim.lr": 0.2},
                               run_id=run.run_id)
    assert again.run_id == run.run_id
    info = tracker.client.get_run(run.run_id)
    assert info.info.status == "RUNNING" and info.data.tags["status"] == "running"
    assert info.data.params["optim.lr"] == "0.1"            # params are not re-logged
    assert again.logged("train/loss", 9) and not again.logged("train/loss", 10)
    for step in range(5, 15):
        again.log_metrics({"train/loss": float(step) + 0.5, "hessian/top": 10.0 + step}, step=step)
    again.set_status("finished")

    for key in ("train/loss", "hessian/top"):
        steps = [m.step for m in tracker.client.get_metric_history(run.run_id, key)]
        assert sorted(steps) == list(range(15)), key       # each step exactly once
    loss = tracking.load_table(tracker, exp).series(run.run_id, "train/loss")
    assert loss[4] == 4.0 and loss[9] == 9.0 and loss[10] == 10.5
    assert tracker.client.get_run(run.run_id).info.status == "FINISHED"


def test_open_trial_is_idempotent_on_trial_id(tracker, exp):
    parent = tracking.start_sweep(tracker, exp, "s", None)
    first = tracking.open_trial(tracker, parent, "t0", "h", {"seed": 0, "optim.lr": 0.1})
    first.log_metrics({"train/loss": 1.0}, step=0)
    first.flush()                                          # crashed before any checkpoint
    second = tracking.open_trial(tracker, parent, "t0", "h", {"seed": 0, "optim.lr": 0.1})
    assert second.run_id == first.run_id
    assert second.logged("train/loss", 0)
    other = tracking.open_trial(tracker, parent, "t1", "h", {"seed": 1})
    assert other.run_id != first.run_id
    # A run id unknown to this store (e.g. a checkpoint from elsewhere) falls back to trial_id.
    third = tracking.open_trial(tracker, parent, "t0", "h", {"seed": 0}, run_id="0" * 32)
    assert third.run_id == first.run_id
    # Another sweep execution gets its own child run for the same trial id.
    parent2 = tracking.start_sweep(tracker, exp, "s", None)
    assert tracking.open_trial(tracker, parent2, "t0", "h", {"seed": 0}).run_id != first.run_id
    exp_id = tracker.experiment_id(exp)
    assert len(tracker.client.search_runs([exp_id], "tags.trial_id = 't0'")) == 2


def test_status_tags_and_run_end_states(tracker, exp):
    parent = tracking.start_sweep(tracker, exp, "s", None)
    expected = {"finished": "FINISHED", "diverged": "FINISHED", "errored": "FAILED"}
    runs = {}
    for status in expected:
        runs[status] = run = tracking.open_trial(tracker, parent, status, "h", {"seed": 0})
        run.set_status(status)
        assert run.status == status
    with pytest.raises(ValueError, match="status must be one of"):
        runs["finished"].set_status("done")
    with pytest.raises(RuntimeError):
        with tracking.open_trial(tracker, parent, "crash", "h", {"seed": 0}) as crashing:
            crashing.log_metrics({"train/loss": 2.0}, step=1)
            raise RuntimeError("boom")
    runs["crash"] = crashing
    expected["crash"] = "FAILED"

    for status, run in runs.items():
        got = tracker.client.get_run(run.run_id)
        assert got.info.status == expected[status]
        assert got.info.end_time is not None
        assert got.data.tags["status"] == ("errored" if status == "crash" else status)
    assert [m.step for m in tracker.client.get_metric_history(crashing.run_id, "train/loss")] == [1]
    table = tracking.load_table(tracker, exp)
    assert dict(zip(table.runs["trial_id"], table.runs["status"])) == {
        "finished": "finished", "diverged": "diverged", "errored": "errored", "crash": "errored"}

    runs["finished"].set_tags({"breakeven/step": 12})
    assert tracker.client.get_run(runs["finished"].run_id).data.tags["breakeven/step"] == "12"


def test_long_params_are_truncated_not_rejected(tracker, exp):
    parent = tracking.start_sweep(tracker, exp, "s", None)
    steps = list(range(400))                                # str() is ~2000 chars
    run = tracking.open_trial(tracker, parent, "t0", "h", {"probes.schedule.steps": steps, "seed": 1})
    value = tracker.client.get_run(run.run_id).data.params["probes.schedule.steps"]
    assert len(value) == PARAM_VALUE_LIMIT and value.endswith("truncated>")
    row = tracking.load_table(tracker, exp).runs.iloc[0]
    assert row["probes.schedule.steps"] == value and row["seed"] == 1


# ------------------------------------------------------------ artifacts
def test_artifacts_are_files_under_the_artifact_root(tracker, store, exp, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                             # a Ray worker's cwd is elsewhere
    parent = tracking.start_sweep(tracker, exp, "s", None)
    run = tracking.open_trial(tracker, parent, "t0", "h", {"seed": 0})
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    run.log_artifact("stiffness/class_matrix", matrix, step=40)
    run.log_artifact("fisher/summary", {"trace": np.float64(1.5), "top": [1, 2]}, step=7)

    root = _artifact_dir(tracker, run.run_id)
    assert root.is_relative_to(store / "mlflow-artifacts")  # next to the db, not the cwd
    npy = root / "probes" / "stiffness" / "class_matrix" / "step_40.npy"
    np.testing.assert_array_equal(np.load(npy), matrix)
    saved = json.loads((root / "probes" / "fisher" / "summary" / "step_7.json").read_text())
    assert saved == {"trace": 1.5, "top": [1, 2]}

    tracker.log_json(parent, {"verdict": "holds", "n": 4}, "conjectures/c1.json")
    tracker.log_artifact_bytes(parent, b"\x00\x01", "raw/blob.bin")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    tracker.log_figure(parent, fig, "figures/fig1.png")
    plt.close(fig)
    proot = _artifact_dir(tracker, parent)
    assert json.loads((proot / "conjectures" / "c1.json").read_text())["n"] == 4
    assert (proot / "raw" / "blob.bin").read_bytes() == b"\x00\x01"
    assert (proot / "figures" / "fig1.png").read_bytes()[:4] == b"\x89PNG"

    assert list(tmp_path.iterdir()) == []                  # nothing written relative to cwd


def test_tracker_pickles_as_its_addresses(tracker, exp):
    clone = pickle.loads(pickle.dumps(tracker))
    assert clone.tracking_uri == tracker.tracking_uri
    assert clone.artifact_root == tracker.artifact_root
    parent = tracking.start_sweep(clone, exp, "s", None)
    assert tracking.find_sweep(tracker, exp) == parent


def test_load_table_errors_name_the_experiment(tracker):
    with pytest.raises(LookupError, match="nope"):
        tracking.load_table(tracker, "nope")


# ------------------------------------------------------------ judging
def test_judge_logs_breakeven_steps_csv(tracker, exp):
    """A breakeven.* conjecture judged: the conjectures run carries breakeven_steps.csv."""
    import pandas as pd

    from sweeps.experiments.breakeven import BREAKEVEN_STEPS_CSV
    from sweeps.judge import judge

    parent = tracking.start_sweep(tracker, exp, "s", None)
    steps = [0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89]
    for i, (lr, seed) in enumerate([(0.1, 0), (0.1, 1), (0.2, 0), (0.2, 1)]):
        cfg = TrialConfig(seed=seed, optim=OptimConfig(lr=lr))
        run = tracking.open_trial(tracker, parent, f"t{i}", cfg.run_hash(), cfg.flat())
        rise = [1.0, 1.0, 1.0, 1.0, 2.0, 4.0, 8.0, 8.1, 8.1, 6.0, 5.0]
        for s, v in zip(steps, rise):
            run.log_metrics({"hessian/top": 3 * v, "gradcov/top": v,
                             "gradcov/trace": 5 * v}, step=s)
        run.set_status("finished")
    result = judge(exp, tracker.tracking_uri, parent, names=["breakeven.c1_lr"])
    files = {a.path for a in tracker.client.list_artifacts(result.run_id)}
    assert BREAKEVEN_STEPS_CSV in files and "verdicts.csv" in files
    got = pd.read_csv(_artifact_dir(tracker, result.run_id) / BREAKEVEN_STEPS_CSV)
    assert len(got) == 4 and list(got["saturation_step_gradcov"]) == [13.0] * 4   # rise from step 5, stalls at 8 → 8.1
    # λ_H¹ = 3·v reaches 2/η = 20 at step 13 for η = 0.1, 2/η = 10 at step 8 for η = 0.2
    assert got.groupby("optim.lr")["stability_step"].apply(list).to_dict() == {0.1: [13.0, 13.0],
                                                                               0.2: [8.0, 8.0]}
    assert len(result.tables[BREAKEVEN_STEPS_CSV]) == 4
    # no break-even conjecture judged: no break-even table in that judgement (the regimes
    # experiment's own table only); judged again, the sweep still has one conjectures run,
    # now with two versions
    other = judge(exp, tracker.tracking_uri, parent, names=["regimes.momentum_matched"])
    assert set(other.tables) == {"regimes_calibration.csv"}
    assert other.run_id == result.run_id and (result.version, other.version) == (1, 2)
    versions = {a.path for a in tracker.client.list_artifacts(other.run_id, "judgements")}
    assert versions == {"judgements/v1.json", "judgements/v2.json"}
    v2 = json.loads((_artifact_dir(tracker, other.run_id) / "judgements" / "v2.json").read_text())
    assert BREAKEVEN_STEPS_CSV not in v2["tables"] and [v["name"] for v in v2["verdicts"]] == [
        "regimes.momentum_matched[small-step]", "regimes.momentum_matched[large-step]"]
    tags = tracker.client.get_run(other.run_id).data.tags
    assert tags["dynsweep.judgement_version"] == "2"
    assert "verdict.regimes.momentum_matched.small-step" in tags


@pytest.mark.parametrize("flush_each_report", [True, False])
def test_a_trial_that_may_be_stopped_stores_its_metrics_before_each_report(tracker, exp, tmp_path,
                                                                          flush_each_report):
    """Under ASHA or a stopper Tune may end the worker right after a report,
    before the trial flushes: each report then finds its epoch in the store.
    Without the flag (FIFO) the epochs are stored with the next checkpoint."""
    from sweeps.context import SweepContext
    from sweeps.worker import run_unit

    parent = tracking.start_sweep(tracker, exp, "s", None)
    base = TrialConfig(train=TrainConfig(epochs=3, batch_size=50))
    base = base.model_copy(update={"data": base.data.model_copy(update={"train_size": 200, "test_size": 100}),
                                   "probes": base.probes.model_copy(update={
                                       "hessian": False, "gradcov": False, "stiffness": False,
                                       "timeline": False})})
    ctx = SweepContext(spec_name=exp, base=base.model_dump(mode="json"), tracking_uri=tracker.tracking_uri,
                       artifact_root=tracker.artifact_root, parent_run_id=parent,
                       cache_dir=str(tmp_path / "data"), storage=str(tmp_path / "ray"),
                       checkpoint_every_epochs=5, flush_each_report=flush_each_report)
    seen = []

    class Session:
        def report(self, metrics, checkpoint_dir):
            if "epoch" in metrics and "status_finished" not in metrics:
                (run,) = tracking.trial_runs(tracker, exp, parent)
                history = tracker.client.get_metric_history(run.run_id, "train/epoch")
                seen.append(sorted(m.value for m in history))

        def checkpoint_dir(self):
            return None

        def trial_name(self):
            return "trial_0"

    run_unit({}, ctx, Session())
    if flush_each_report:
        assert seen == [[1.0], [1.0, 2.0], [1.0, 2.0, 3.0]]
    else:
        assert seen[0] == [], "FIFO trials keep buffering until the next checkpoint"


def test_opening_a_store_leaves_mlflow_retries_to_our_outage_loop(tmp_path, monkeypatch):
    """MLflow's own per-request retries (minutes each) stay off after a store opened
    (its quick check sets and restores them), unless the user set them."""
    from sweeps.tracking import open_store

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    open_store(f"sqlite:///{tmp_path / 'a.db'}", experiment="x")
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    open_store(f"sqlite:///{tmp_path / 'b.db'}", experiment="x")
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"


def _schema(db: Path) -> tuple[dict[str, list[str]], list[tuple[str]]]:
    """Each table's and index's definition (its lines sorted: MLflow's own
    migrations list a table's constraints in a different order from run to run)
    and the migration head."""
    import sqlite3

    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
        version = con.execute("SELECT version_num FROM alembic_version").fetchall()
    return {name: sorted(line.strip().rstrip(",") for line in sql.splitlines()) for name, sql in rows}, version


def test_a_new_sqlite_store_is_a_copy_of_the_cached_empty_one(tmp_path, monkeypatch):
    """The copy has MLflow's own schema and migration head (compared with a store
    MLflow migrated itself), is written to like one, and where the cache cannot
    be written the store is migrated in place instead."""
    from mlflow.tracking import MlflowClient

    from sweeps.tracking.schema import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    migrated = tmp_path / "mlflow_own.db"
    MlflowClient(tracking_uri=f"sqlite:///{migrated}").search_experiments(max_results=1)
    copies = [tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"]
    for db in copies:
        store = Store(f"sqlite:///{db}")
        assert _schema(db) == _schema(migrated)
        run = tracking.open_trial(store, tracking.start_sweep(store, "copied", "h", None), "t0", "rh", {"x": 1})
        run.log_metrics({"m": 1.0}, step=0)
        run.flush()
        assert tracking.trial_runs(store, "copied")[0].metrics["m"] == 1.0
    (template,) = (tmp_path / "cache").glob("mlflow-*.db")
    assert _schema(template) == _schema(migrated)
    monkeypatch.setenv(CACHE_ENV, str(migrated))         # a file: no cache folder can be made there
    db = tmp_path / "c" / "mlflow.db"
    Store(f"sqlite:///{db}").experiment_id("in-place")
    assert _schema(db) == _schema(migrated)


def test_a_port_with_403_or_401_in_it_is_not_read_as_a_refusal_of_rights():
    """A refused connection to port 54037 once read as 'ask for EDIT permission'."""
    from sweeps.tracking.store import _why_unusable
    for port in (54037, 40123, 14013):
        uri = f"http://127.0.0.1:{port}"
        exc = OSError(f"HTTPConnectionPool(host='127.0.0.1', port={port}): Max retries exceeded with url: "
                      f"{uri}/api/2.0/mlflow/experiments/search (Caused by NewConnectionError: "
                      f"Connection refused)")
        assert _why_unusable(uri, exc) == (f"MLflow at {uri} does not answer (connection refused): check the "
                                           f"URI and that the server runs (mlflow/start_server.sh)")
    uri = "http://127.0.0.1:5000"
    refused = "API request to endpoint /api/2.0/mlflow/experiments/search failed with error code {} != 200"
    assert "EDIT permission" in _why_unusable(uri, OSError(refused.format(403)))
    assert "MLFLOW_TRACKING_USERNAME" in _why_unusable(uri, OSError(refused.format(401)))
