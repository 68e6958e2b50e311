"""The forking paths on the page: every verdict shows the plan it was
registered under, when, and its history among earlier sweeps of the same
conjecture (`first`, `replaces <hash> after <sweep>`, `repeats ...`; fresh or
seen seeds). A verdict on seeds an earlier sweep of its conjecture trained on
is exploratory (`seeds seen`), a plain replication on the same seeds included.
Sweeps are built through the tracking API in a real MLflow sqlite store."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from dynamics_core.config import OptimConfig, TrialConfig
from sweeps import cli, experiments, tracking
from sweeps.conjectures.plan import AnalysisPlan
from sweeps.conjectures.verdict import Verdict
from sweeps.judge import judge, verdict_label, with_history
from sweeps.tracking import Store, SweepRegistration
from sweeps.tracking.registrations import CONJECTURES_TAG, PLANS_ARTIFACT

C1 = "breakeven.c1_lr"
HESS, GRAD = f"{C1}[hessian/top]", f"{C1}[gradcov/top]"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")


def registered_sweep(store: Store, exp: str, seeds, conjectures: str | None, plans: dict | None = None) -> str:
    """A parent run registering `conjectures` (and `plans`) as the driver does,
    with trials 2 η × `seeds` whose λ rises to a peak and probe/acc reaches 0.65.
    `conjectures` None: only the plans are recorded, no registration that a
    later sweep's history would find (the small break-even sweep of `test_plans`)."""
    parent = tracking.start_sweep(store, exp, "s", None)
    if conjectures is not None:
        store.set_tags(parent, {CONJECTURES_TAG: conjectures})
    if plans is not None:
        if conjectures is not None:
            store.log_params(parent, {"plans_hash": experiments.plans_hash(plans)})
        store.log_json(parent, plans, PLANS_ARTIFACT)
    steps = [0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89]
    rise = [1.0, 1.0, 1.0, 1.0, 2.0, 4.0, 8.0, 8.1, 8.1, 6.0, 5.0]
    for i, (lr, seed) in enumerate((lr, s) for lr in (0.1, 0.2) for s in seeds):
        cfg = TrialConfig(seed=seed, optim=OptimConfig(lr=lr))
        run = tracking.open_trial(store, parent, f"t{i}", cfg.run_hash(), cfg.flat())
        for s, v, acc in zip(steps, rise, np.linspace(0.1, 0.9, len(steps))):
            run.log_metrics({"hessian/top": 3 * v / lr, "gradcov/top": v / lr,
                             "probe/acc": float(acc)}, step=s)
        run.set_status("finished")
    time.sleep(0.01)                   # the next sweep starts strictly later
    return parent


def _started(store: Store, run_id: str) -> str:
    ms = store.client.get_run(run_id).info.start_time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


# ---------------------------------------------------------------- tracking
def test_sweeps_registering_finds_earlier_sweeps_of_the_exact_conjecture(store):
    """Across experiments, oldest first, deleted runs included; a pilot that
    registers other conjectures (one whose name merely contains it) does not count."""
    plans = experiments.registered_plans(["large_lr.anneal_crossover"])      # any plans
    a = registered_sweep(store, "reg-a", [0, 1], "demo.one,demo.two", plans)
    pilot = registered_sweep(store, "reg-pilot", [5], "demo.one_pilot,demo.three")
    b = registered_sweep(store, "reg-b", [2, 3], "demo.one")
    (trial,) = [r for r in tracking.trial_runs(store, "reg-b", b) if r.trial_id == "t0"]
    store.client.delete_run(trial.run_id)                     # its seed was seen all the same
    store.client.delete_run(a)
    got = tracking.sweeps_registering(store, "demo.one")
    assert [r.run_id for r in got] == [a, b]
    first = got[0]
    assert (first.experiment, first.conjectures, first.plans) == ("reg-a", ("demo.one", "demo.two"), json.loads(json.dumps(plans)))
    assert first.seeds == {0, 1} and got[1].seeds == {2, 3} and got[1].plans is None
    assert first.plans_hash == experiments.plans_hash(plans) and first.sweep.startswith("reg-a@")
    assert first.registered_at == _started(store, a)
    assert [r.run_id for r in tracking.sweeps_registering(store, "demo.one", got[1].started_ms)] == [a]
    assert tracking.sweeps_registering(store, "demo.one", first.started_ms) == []
    assert [r.run_id for r in tracking.sweeps_registering(store, "demo.one", exclude=[a])] == [b]
    assert [r.run_id for r in tracking.sweeps_registering(store, "demo.three")] == [pilot]
    assert tracking.sweeps_registering(store, "demo") == []
    both = tracking.registrations_of(store, ["demo.one", "demo.two"])
    assert both["demo.two"] == [first] and both["demo.two"][0] is both["demo.one"][0]   # read once
    this = tracking.sweep_registration(store, pilot)
    assert this.seeds == {5} and this.plans is None and this.experiment == "reg-pilot"


# ------------------------------------------------------------ the history rule
def _reg(sweep: str, seeds, plans: dict | None, started_ms: int = 0) -> SweepRegistration:
    return SweepRegistration(f"id-{sweep}", "e", sweep, started_ms, ("x",), plans, None,
                             frozenset(seeds))


def test_history_text_and_the_seeds_seen_rule():
    """A conjecture whose one plan (keyed by its name) serves verdicts by part;
    the latest earlier sweep is named, the seeds of all of them are compared."""
    name = "regimes.two_stage"
    reg = experiments.registered_plans([name])
    code = AnalysisPlan.from_dict(reg[name]).hash()
    old = {name: {**reg[name], "min_n": 3}}
    verdicts = [Verdict(f"{name}[T=5]", "s", "supported", plan_hash=code, registered_hash=code),
                Verdict(f"{name}[T=9]", "s", "refuted", plan_hash="p", registered_hash=code,
                        exploratory=True)]
    this = _reg("now", [0, 1, 2, 3], reg, 30)
    out = with_history(verdicts, [name], this, "2025-01-01T00:00:00Z", {name: []})
    assert [v.history for v in out] == ["first", "first"]
    assert [v.exploratory_reason for v in out] == ["", "plan changed"]
    assert [verdict_label(v) for v in out] == ["supported", "refuted (exploratory)"]
    assert {v.registered_at for v in out} == {"2025-01-01T00:00:00Z"}

    fresh = with_history(verdicts, [name], this, "", {name: [_reg("old@1", [7, 8], old)]})
    assert fresh[0].history == f"replaces {AnalysisPlan.from_dict(old[name]).hash()} after old@1; fresh seeds"
    assert not fresh[0].exploratory and fresh[1].exploratory_reason == "plan changed"

    earlier = [_reg("older@1", [3], None), _reg("old@2", [7], reg)]
    part = with_history(verdicts, [name], this, "", {name: earlier})
    assert part[0].history == f"repeats {code} after old@2; 1 of 4 seeds seen"
    assert part[0].exploratory and part[0].exploratory_reason == "seeds seen"
    assert verdict_label(part[0]) == "supported (exploratory: seeds seen)"
    assert verdict_label(part[1]) == "refuted (exploratory: plan changed; seeds seen)"
    same = with_history(verdicts, [name], this, "", {name: [_reg("old@3", [0, 1, 2, 3, 4], None)]})
    assert same[0].history == f"replaces no plan after old@3; same seeds"
    assert json.loads(json.dumps(same[0].to_dict()))["history"] == same[0].history


# ------------------------------------------------------------ judged, on the page
@pytest.mark.slow
def test_history_in_the_verdicts_json_table_and_tags(store, capsys):
    """A (an older plan, seeds 0-1) -> `first`; a pilot of other conjectures on
    seeds 2-3 does not count; B (the code's plan, fresh seeds 2-3) replaces A's
    plan and stays confirmatory; C (the same plan again, on A's seeds 0-1) is a
    plain replication on seen seeds: exploratory (seeds seen)."""
    reg = experiments.registered_plans([C1])
    old = {**reg, HESS: {**reg[HESS], "min_n": 12}}
    a = registered_sweep(store, "hist-a", [0, 1], C1, old)
    got = {v.name: v for v in judge("hist-a", store.tracking_uri, a, names=[C1]).verdicts}
    assert {v.history for v in got.values()} == {"first"}
    assert {v.registered_at for v in got.values()} == {_started(store, a)}
    assert got[HESS].exploratory_reason == "plan changed" and not got[GRAD].exploratory

    registered_sweep(store, "hist-pilot", [2, 3], "breakeven.c1_lr_pilot,large_lr.anneal_crossover")
    b = registered_sweep(store, "hist-b", [2, 3], C1, reg)
    argv = ["conjectures", "hist-b", "--tracking-uri", store.tracking_uri, "--only", C1]
    assert cli.main(argv + ["--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["verdicts"]}
    a_name = tracking.sweep_registration(store, a).sweep
    old_hash = AnalysisPlan.from_dict(old[HESS]).hash()
    assert rows[HESS]["history"] == f"replaces {old_hash} after {a_name}; fresh seeds"
    assert rows[GRAD]["history"] == f"repeats {rows[GRAD]['registered_hash']} after {a_name}; fresh seeds"
    assert rows[HESS]["registered_hash"] == AnalysisPlan.from_dict(reg[HESS]).hash()
    assert all(r["registered_at"] == _started(store, b) and not r["exploratory"]
               and r["exploratory_reason"] == "" for r in rows.values())

    c = registered_sweep(store, "hist-b", [0, 1], C1, reg)
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "history" in text and "registered" in text and "seeds seen" in text
    assert f"registered: {experiments.plans_hash(reg)} at {_started(store, c)}" in text
    judged = judge("hist-b", store.tracking_uri, c, names=[C1])
    b_name = tracking.sweep_registration(store, b).sweep
    for v in judged.verdicts:
        assert v.history == f"repeats {v.registered_hash} after {b_name}; same seeds"
        assert v.exploratory and v.exploratory_reason == "seeds seen" and v.plan_hash == v.registered_hash
    tags = store.client.get_run(judged.run_id).data.tags
    assert tags["verdict.breakeven.c1_lr.hessian/top"].endswith(" (exploratory: seeds seen)")
