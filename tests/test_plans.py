"""Registered analysis plans: every conjecture's verdicts judged under the plan
its experiment registers, the plans recorded before a sweep runs and read
back when it is judged, and overrides (`--window`, `--detector`) marked
exploratory in the table, the JSON and the MLflow tags. The store is a real
MLflow sqlite store (no mocks)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sweeps import cli, experiments
from sweeps.conjectures.plan import AnalysisPlan
from sweeps.experiments import Experiment
from sweeps.judge import judge
from sweeps.tracking import Store

from test_conjectures import FAST, breakeven_trials, make_table
from test_registrations import registered_sweep

C1 = ["breakeven.c1_lr[hessian/top]", "breakeven.c1_lr[gradcov/top]"]
C1_MB = "breakeven.c1_lr[gradcov_mb/top]"       # registered too; judged where gradcov_mb was logged


# ------------------------------------------------------------------ plans
def test_every_built_in_verdict_has_a_plan():
    """Each plan names its experiment's conjecture; α 0.05; a family; the minimum n set."""
    for name in ("breakeven", "regimes", "large_lr", "critical_periods"):
        exp = experiments.get(name)
        for key, plan in exp.plans.items():
            assert key.split("[")[0] == plan.conjecture and plan.conjecture in exp.conjectures
            # a sign-flip test of n contrasts, and an exact binomial sign test of n
            # units against 1/2, reach p = 2/2^n: 7 suffice (0.016)
            floor = 7 if plan.statistic in ("paired_sign_flip", "sign_test") else 10
            assert plan.alpha == 0.05 and plan.family and plan.min_n >= floor
        assert {p.conjecture for p in exp.plans.values()} >= set(exp.conjectures) - {
            "critical_periods.fisher_rises_then_falls"}


def test_registered_plans_and_their_hash():
    names = ["breakeven.c1_lr", "large_lr.anneal_crossover"]
    reg = experiments.registered_plans(names)
    assert list(reg) == sorted(C1 + [C1_MB]) + ["large_lr.anneal_crossover"]
    assert reg[C1[0]]["window"] == "until_probe/acc>=0.65"
    back = json.loads(json.dumps(reg))                   # what plans.json holds
    assert experiments.plans_hash(back) == experiments.plans_hash(reg)
    assert len(experiments.plans_hash(reg)) == 12
    changed = {**back, C1[0]: {**back[C1[0]], "min_n": 12}}
    assert experiments.plans_hash(changed) != experiments.plans_hash(reg)
    assert experiments.registered_plans(["regimes.momentum_matched"]).keys() == {
        "regimes.momentum_matched[small-step]", "regimes.momentum_matched[large-step]"}


def test_plans_must_be_keyed_by_their_verdict():
    plan = experiments.get("large_lr").plans["large_lr.anneal_crossover"]
    with pytest.raises(ValueError, match="keyed by its verdict"):
        Experiment("large_lr", "t", {"large_lr.anneal_crossover": lambda t: []},
                   plans={"large_lr.other": plan})


def test_a_conjecture_is_named_once_and_handed_its_plans():
    """`@conjecture(PLANS)` names it `<experiment>.<function>` and passes it its own
    plans: the registered ones, or those given over them."""
    plans = experiments.get("large_lr").plans
    seen = []

    @experiments.conjecture(plans)
    def anneal_crossover(table, plans):
        seen.append(dict(plans))
        return []

    assert anneal_crossover.name == "large_lr.anneal_crossover"
    assert list(anneal_crossover.plans) == ["large_lr.anneal_crossover"]
    other = plans["large_lr.anneal_crossover"].with_overrides(min_n=20)
    anneal_crossover(None)
    anneal_crossover(None, plans={"large_lr.anneal_crossover": other})
    assert seen == [{"large_lr.anneal_crossover": plans["large_lr.anneal_crossover"]},
                    {"large_lr.anneal_crossover": other}]
    with pytest.raises(KeyError, match="has no verdicts"):
        anneal_crossover(None, plans={"large_lr.calibration": plans["large_lr.calibration"]})

    def typo(table, plans):
        return []

    with pytest.raises(ValueError, match="no plan for conjecture 'large_lr.typo'"):
        experiments.conjecture(plans)(typo)


def test_plans_for_marks_what_differs_from_the_registered():
    reg = experiments.registered_plans(["breakeven.c1_lr"])
    same = experiments.plans_for("breakeven.c1_lr", registered=reg)
    assert not any(p.exploratory for p in same.values())
    changed = {**reg, C1[0]: {**reg[C1[0]], "effect_of_interest": 0.3}}
    got = experiments.plans_for("breakeven.c1_lr", registered=changed)
    assert got[C1[0]].exploratory and not got[C1[1]].exploratory
    assert got[C1[0]].registered_hash == AnalysisPlan.from_dict(changed[C1[0]]).hash()
    missing = experiments.plans_for("breakeven.c1_lr", registered={C1[1]: reg[C1[1]]})
    assert missing[C1[0]].registered_hash == "unregistered"
    # an override that changes nothing is no override; a detector only where a plan has one
    assert not any(p.exploratory for p in experiments.plans_for(
        "breakeven.c1_lr", {"window": "until_probe/acc>=0.65", "detector": "stability"}).values())
    c2 = experiments.plans_for("breakeven.c2_lr", {"detector": "stability"})
    assert all(p.exploratory and p.detector == "stability" for p in c2.values())


def test_evaluate_with_overrides_is_exploratory_and_holm_within_families():
    table = make_table(breakeven_trials("paper"))
    names = ["breakeven.c1_lr", "breakeven.c1_batch"]
    out = experiments.evaluate(names, table, {n: FAST for n in names},
                               overrides={"window": "whole_run"})
    assert len(out) == 4 and all(v.exploratory and v.n_family == 4 for v in out)
    assert all(v.details["window"] == "whole_run" and v.plan_hash != v.registered_hash
               for v in out)
    assert all(v.verdict == "supported" for v in out), [v.summary() for v in out]


def test_stability_detector_window():
    """after_breakeven by λ_H¹ ≥ 2/η: the trials' λ_H¹ (30·hump) crosses 2/η only for η ≥ 0.1."""
    table = make_table(breakeven_trials("paper"))
    plans = experiments.plans_for("breakeven.c2_lr", {"detector": "stability"})
    for v in experiments.get_conjecture("breakeven.c2_lr")(table, plans=plans, **FAST):
        assert v.details["detector"] == "stability" and v.exploratory
        assert v.details["noise_term"].startswith("off")
        assert v.details["excluded_no_breakeven"] > 0


# ------------------------------------------------------------ the store
@pytest.fixture(scope="module")
def tracker(tmp_path_factory) -> Store:
    return Store(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")


def _tags(tracker: Store, run_id: str) -> dict[str, str]:
    return tracker.client.get_run(run_id).data.tags


def test_registered_plans_read_back_and_used(tracker):
    exp = "plans-registered"
    reg = experiments.registered_plans(["breakeven.c1_lr"])
    parent = registered_sweep(tracker, exp, [0, 1], None, reg)
    got = judge(exp, tracker.tracking_uri, parent, names=["breakeven.c1_lr"])
    assert not any(v.exploratory for v in got.verdicts)
    assert got.plans_hash == got.registered_plans_hash == experiments.plans_hash(reg)
    tags = _tags(tracker, got.run_id)
    assert tags["dynsweep.plans_hash"] == tags["dynsweep.registered_plans_hash"]
    assert tags["verdict.breakeven.c1_lr.hessian/top"] == got.verdicts[0].verdict
    # registered with another minimum n: the code's plan is used, marked exploratory
    changed = {**reg, C1[0]: {**reg[C1[0]], "min_n": 3}}
    parent = registered_sweep(tracker, exp + "-changed", [0, 1], None, changed)
    got = judge(exp + "-changed", tracker.tracking_uri, parent, names=["breakeven.c1_lr"])
    by = {v.name: v for v in got.verdicts}
    assert by[C1[0]].exploratory and not by[C1[1]].exploratory
    assert by[C1[0]].registered_hash == AnalysisPlan.from_dict(changed[C1[0]]).hash()
    assert by[C1[0]].plan_hash == experiments.get("breakeven").plans[C1[0]].hash()
    assert by[C1[0]].details["rule"]["min_n"] == 10                # the code's plan
    assert got.registered_plans_hash != got.plans_hash
    tags = _tags(tracker, got.run_id)
    assert tags["verdict.breakeven.c1_lr.hessian/top"].endswith(" (exploratory)")
    assert not tags["verdict.breakeven.c1_lr.gradcov/top"].endswith(" (exploratory)")


def test_cli_override_is_exploratory(tracker, capsys):
    exp = "plans-cli"
    parent = registered_sweep(tracker, exp, [0, 1], None,
                              experiments.registered_plans(["breakeven.c1_lr"]))
    argv = ["conjectures", exp, "--tracking-uri", tracker.tracking_uri,
            "--only", "breakeven.c1_lr"]
    assert cli.main(argv + ["--window", "whole_run"]) == 0
    text = capsys.readouterr().out
    assert "(exploratory)" in text and "95% CI" in text and "p adj" in text and "reason" in text
    assert cli.main(argv + ["--window", "whole_run", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["verdicts"]
    assert {r["name"] for r in rows} == set(C1)
    assert all(r["exploratory"] and r["details"]["window"] == "whole_run"
               and r["plan_hash"] != r["registered_hash"] for r in rows)
    run_id = judge(exp, tracker.tracking_uri, parent, names=["breakeven.c1_lr"]).run_id
    assert cli.main(argv + ["--window", "whole_run"]) == 0
    capsys.readouterr()
    tags = _tags(tracker, run_id)
    assert tags["verdict.breakeven.c1_lr.gradcov/top"].endswith(" (exploratory)")
    assert tags["dynsweep.plans_hash"] != tags["dynsweep.registered_plans_hash"]
    # without an override: the registered plans, nothing exploratory
    assert cli.main(argv) == 0
    assert "(exploratory)" not in capsys.readouterr().out
    assert cli.main(argv + ["--window", "sometimes"]) == 2


def test_stability_detector_takes_s_S_N_when_s_is_logged():
    """The noise term needs s, S and N; without s the full-batch rule λ_H¹ ≥ 2/η."""
    from dynamics_core.probes.breakeven import stability_breakeven

    from sweeps.experiments import breakeven

    steps, lam = np.arange(6), np.r_[1.0, 5, 10, 12, 15, 30]
    full = breakeven.stability_step(steps, lam, 0.1, 32, 1000, None)
    assert full == stability_breakeven(list(steps), lam, 0.1) == 5
    noisy = breakeven.stability_step(steps, lam, 0.1, 32, 1000, np.full(6, 60.0))
    assert noisy == stability_breakeven(list(steps), lam, 0.1, 32, 1000, np.full(6, 60.0)) == 2
    trial = {"params": {"optim.lr": 0.1, "train.batch_size": 32, "data.train_size": 1000},
             "curves": {"hessian/top": (steps, lam), "noise/s": (steps, np.full(6, 60.0))}}
    table = make_table([trial])
    row = table.runs.iloc[0]
    assert breakeven.run_stability_step(table, row) == 5                  # s not logged: off
    assert breakeven.run_stability_step(table, row, "noise/s") == 2
