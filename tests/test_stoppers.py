"""Stoppers: the spec field and its errors, the Tune adapter on synthetic
reports (a restarted driver included), and a real local Ray sweep whose
trials stop at exactly the epoch the offline rule computes from the series
they logged to MLflow."""
from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from sweeps import stoppers, tracking
from sweeps.experiments import stiffness as S
from sweeps.spec import SpecError, parse_spec
from sweeps.tracking import Store
from test_sweeps import cli, uri       # the real `dynsweep` CLI in a subprocess, its sqlite store

EPOCH_PROBES = {"probes": {"stiffness": True, "schedule": {"kind": "epoch"}}}


def spec_with(stopper, base=EPOCH_PROBES, **fields):
    return parse_spec({"name": "s", "base": base, "stopper": stopper, **fields}, "s.yaml")


# -------------------------------------------------------------- the field
def test_defaults_are_the_rule_chosen_offline():
    spec = spec_with({"kind": "stiffness"})
    assert isinstance(spec.stopper, stoppers.StiffnessStopper)
    assert (spec.stopper.threshold, spec.stopper.patience, spec.stopper.relative) == (0.45, 5, True)
    assert spec.stopper.metric == "stiffness/train_val/cos_within"
    registered = S.PLANS["stiffness.stopper_vs_baselines[fixed_epoch/error]"].options["stopper"]
    assert spec.stopper == stoppers.StiffnessStopper(**registered), "the defaults are the registered rule"
    assert S.stiffness_stop_epoch is stoppers.stiffness_stop_epoch, "one rule, used offline and online"


def test_stopper_round_trips_through_the_manifest_and_changes_the_hash():
    spec = spec_with({"kind": "stiffness", "threshold": 0.5, "relative": True, "patience": 2})
    again = parse_spec(spec.model_dump(mode="json"))
    assert again.stopper == spec.stopper and again.spec_hash() == spec.spec_hash()
    assert spec_with(None).spec_hash() != spec.spec_hash()
    assert parse_spec({"name": "s", "base": EPOCH_PROBES}).model_dump(mode="json")["stopper"] is None


@pytest.mark.parametrize("stopper,message", [
    ({"kind": "patience"}, "stopper: Value error, kind: 'patience' is not a stopper; valid: stiffness"),
    ({"threshold": 0.5}, "stopper: Value error, kind: missing; valid: stiffness"),
    ("stiffness", "stopper: Value error, a mapping with `kind`"),
    ({"kind": "stiffness", "patience": 0}, "stopper.patience: Input should be greater than or equal to 1"),
    ({"kind": "stiffness", "threshold": 1.5, "relative": False}, "threshold: 1.5 is outside [-1, 1]"),
    ({"kind": "stiffness", "threshold": 1.0, "relative": True}, "threshold: 1 with relative: true"),
    ({"kind": "stiffness", "threshold": ".nan"}, "stopper.threshold:"),
    ({"kind": "stiffness", "metric": "val/loss"}, "stopper.metric: Value error, 'val/loss' is not a stiffness"),
    ({"kind": "stiffness", "bar": 0.9}, "stopper.bar: Extra inputs are not permitted"),
])
def test_bad_stopper_fields_are_named(stopper, message):
    if stopper == {"kind": "stiffness", "threshold": ".nan"}:
        stopper = {"kind": "stiffness", "threshold": math.nan}
    with pytest.raises(SpecError) as err:
        spec_with(stopper)
    assert str(err.value).startswith("s.yaml: ") and message in str(err.value)


@pytest.mark.parametrize("base,grid,message", [
    ({}, {}, "s.yaml: base.probes.schedule.kind: log, but the stopper reads "
             "stiffness/train_val/cos_within at every epoch end: set it to epoch"),
    ({"probes": {"stiffness": False, "schedule": {"kind": "epoch"}}}, {},
     "s.yaml: base.probes.stiffness: false, but the stopper reads"),
    (EPOCH_PROBES, {"probes.schedule.kind": ["epoch", "every"]}, "s.yaml: grid.probes.schedule.kind[1]: "),
    (EPOCH_PROBES, {"probes.stiffness": [True, False]}, "s.yaml: grid.probes.stiffness[1]: "),
])
def test_the_metric_must_be_logged_every_epoch(base, grid, message):
    with pytest.raises(SpecError, match=None) as err:
        spec_with({"kind": "stiffness"}, base=base, grid=grid)
    assert str(err.value).startswith(message)


def test_a_variant_that_switches_the_probe_off_is_refused():
    with pytest.raises(SpecError, match=r"variants\[1\]: probes.stiffness: false"):
        spec_with({"kind": "stiffness"}, variants=[{"optim.lr": 0.1}, {"probes.stiffness": False}])


def test_registry_lists_kinds():
    assert stoppers.get("stiffness") is stoppers.StiffnessStopper
    with pytest.raises(KeyError, match="unknown stopper kind 'x'; valid: stiffness"):
        stoppers.get("x")


# ------------------------------------------------------ the Tune adapter
def reports(series, first_epoch=1, steps_per_epoch=10):
    """Epoch-end reports as TrialSink sends them, then the final one (status_*)."""
    out = [{"epoch": float(e), "step": float(e * steps_per_epoch), S.TV_SIGN_WITHIN: v}
           for e, v in enumerate(series, start=first_epoch)]
    return out + [{**out[-1], "status_finished": 1.0}]


SERIES = [0.3, 0.99, 0.98, 0.96, 0.97, 0.95, 0.94, 0.93, 0.99]   # low from epoch 6: stop at 8
# an absolute bar on within-class train–val sign stiffness (the metric `reports` sends)
SIGN_RULE = dict(metric=S.TV_SIGN_WITHIN, threshold=0.97, patience=3, relative=False)


def feed(stopper, trial_id, results):
    """Epochs (1-based) of the reports the stopper answered with stop."""
    return [r["epoch"] for r in results if stopper(trial_id, r)]


def test_adapter_stops_where_the_rule_fires(tmp_path):
    from sweeps.tune.stopper import SpecStopper

    rule = stoppers.StiffnessStopper(**SIGN_RULE)
    assert rule.stop_index(SERIES) == 7
    stopper = SpecStopper(rule, str(tmp_path))
    assert feed(stopper, "t0", reports(SERIES)[:8]) == [8.0]
    assert not stopper.stop_all()
    never = SpecStopper(stoppers.StiffnessStopper(**{**SIGN_RULE, "threshold": -1.0}), str(tmp_path / "never"))
    assert feed(never, "t0", reports(SERIES)) == []
    # a report without the metric is a gap (NaN), as a missing value is offline
    gaps = [0.99, None, 0.9, 0.9, 0.9]
    assert rule.stop_index([np.nan if v is None else v for v in gaps]) == 4
    assert feed(SpecStopper(rule, str(tmp_path / "gaps")), "t", [
        {k: v for k, v in r.items() if v is not None} for r in reports(gaps)]) == [5.0]


def test_adapter_state_survives_a_driver_restart(tmp_path):
    """A new driver unpickles the stopper empty; it reads each trial's series
    back, and a trial resumed from an older checkpoint reports the same values
    again: it stops at the same epoch as without the restart."""
    import pickle

    from sweeps.tune.stopper import SpecStopper, _read_stopper

    first = SpecStopper(stoppers.StiffnessStopper(**SIGN_RULE), str(tmp_path))
    results = reports(SERIES)
    assert feed(first, "t0", results[:6]) == []                  # driver killed after epoch 6
    second = pickle.loads(pickle.dumps(first))
    assert second._series == {}, "nothing but the rule and the folder is pickled"
    assert feed(second, "t0", results[4:8]) == [8.0]             # resumed from the epoch-4 checkpoint
    record = _read_stopper(str(tmp_path), "t0")
    assert record["stop"] == {"epoch": 8.0, "step": 80}
    assert [v for _, v in sorted(record["series"].values())] == SERIES[:8]


def test_a_replayed_epoch_before_a_recorded_stop_does_not_stop_early(tmp_path):
    from sweeps.tune.stopper import SpecStopper

    stopper = SpecStopper(stoppers.StiffnessStopper(**SIGN_RULE), str(tmp_path))
    results = reports(SERIES)
    assert feed(stopper, "t0", results[:8]) == [8.0]
    again = SpecStopper(stoppers.StiffnessStopper(**SIGN_RULE), str(tmp_path))
    assert feed(again, "t0", results[3:8]) == [8.0], "only the steps up to the one reported count"


# --------------------------------------------------- a real local Ray sweep
TINY = {
    "data": {"dataset": "mnist1d", "train_size": 400, "test_size": 200},
    "model": {"name": "mlp", "width": 16},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {"epochs": 6, "batch_size": 50},
    "probes": {"hessian": False, "gradcov": False, "timeline": False, "probe_size": 32,
               "val_probe_size": 16, "schedule": {"kind": "epoch"}},
}
# falls below 0.999 × its running peak within a few epochs (it moves every epoch)
FIRES = {"kind": "stiffness", "metric": "stiffness/train_val/cos_within", "threshold": 0.999,
         "relative": True, "patience": 1}
NEVER = {"kind": "stiffness", "threshold": -1.0, "relative": False}     # no stiffness is below -1


@pytest.mark.slow
def test_sweep_stops_trials_at_the_epoch_the_offline_rule_computes(tmp_path):
    store = Store(uri(tmp_path))
    for name, stopper, seeds in (("fires", FIRES, [0, 1]), ("never", NEVER, [0])):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(
            {"name": name, "base": TINY, "seeds": seeds, "stopper": stopper}))
        res = cli(["run", f"{name}.yaml", "--storage", str(tmp_path / "ray"), "--tracking-uri",
                   uri(tmp_path)], tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]

    table = tracking.load_table(store, "fires")
    rule = stoppers.parse(FIRES)
    records = {r.run_id: r for r in tracking.trial_runs(store, "fires")}
    assert len(records) == 2
    for run_id, record in records.items():
        val = table.per_epoch(run_id, "val/loss")
        series = table.per_epoch(run_id, rule.metric).reindex(val.index).to_numpy(float)
        offline = rule.stop_index(series)
        assert offline is not None and offline + 1 < 6, "the rule fires before the last epoch"
        assert record.tags["stopper/epoch"] == str(offline + 1)
        assert table.series(run_id, "train/epoch").iloc[-1] == offline + 1, "no epoch after the stop"
        assert record.status == "finished" and record.tags.get("stopped_early") == "true"
        assert "final/steps" not in record.metrics
    df, summary = S.evaluate_stopper(table, stopper=rule)
    assert summary["n_stopped"] == 2
    online = {rid: float(r.tags["stopper/epoch"]) for rid, r in records.items()}
    assert dict(zip(df["run_id"], df["stop_epoch"])) == online

    (never,) = tracking.trial_runs(store, "never")
    assert "stopper/epoch" not in never.tags and "stopped_early" not in never.tags
    assert never.status == "finished" and never.metrics["final/steps"] == 6 * 8


@pytest.mark.slow
def test_a_killed_driver_resumes_the_stopper_where_it_was(tmp_path):
    """The driver is killed once the stopper has seen 3 epochs of the trial
    and not stopped it. Relative bar 0.97, patience 2 on cos_within stops
    seed 0 later (epoch 6 here: its peak at epoch 4, two lower values after
    it); the resumed stopper reads the series back and stops it exactly
    where the offline rule does on everything the trial logged."""
    import json
    import os
    import signal
    import subprocess

    from test_sweeps import DYNSWEEP, _env, wait_for

    rule = {"kind": "stiffness", "metric": "stiffness/train_val/cos_within", "threshold": 0.97,
            "relative": True, "patience": 2}
    # Hutchinson's trace over many vectors only slows each epoch (probes never change training or
    # the stiffness series), so that the kill can land between epochs 3 and 6
    base = {**TINY, "train": {"epochs": 8, "batch_size": 50},
            "probes": {**TINY["probes"], "hessian_trace": True, "hutchinson_samples": 1000}}
    (tmp_path / "rs.yaml").write_text(yaml.safe_dump({"name": "rs", "base": base, "seeds": [0],
                                                      "stopper": rule,
                                                      "fault_tolerance": {"checkpoint_every_epochs": 1}}))
    folder = tmp_path / "ray" / "rs" / "stopper"

    def reported(n):
        for f in folder.glob("*.json"):
            try:
                record = json.loads(f.read_text())
            except ValueError:
                continue
            if len(record["series"]) >= n and "stop" not in record:
                return True
        return False

    proc = subprocess.Popen(DYNSWEEP + ["run", "rs.yaml", "--storage", str(tmp_path / "ray"),
                                        "--tracking-uri", uri(tmp_path)], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: reported(3), 240, "three epochs seen by the stopper")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    res = cli(["resume", "rs", "--storage", str(tmp_path / "ray")], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]

    store = Store(uri(tmp_path))
    (record,) = tracking.trial_runs(store, "rs")
    table = tracking.load_table(store, "rs")
    run_id = table.runs["run_id"].item()
    val = table.per_epoch(run_id, "val/loss")
    offline = stoppers.parse(rule).stop_index(
        table.per_epoch(run_id, rule["metric"]).reindex(val.index).to_numpy(float))
    assert offline is not None and 3 < offline + 1 < 8
    assert record.tags["stopper/epoch"] == str(offline + 1) and record.tags["stopped_early"] == "true"
    assert table.series(run_id, "train/epoch").iloc[-1] == offline + 1
    (saved,) = folder.glob("*.json")
    assert sorted(e for e, _ in json.loads(saved.read_text())["series"].values()) == \
        [float(e) for e in range(1, offline + 2)]
