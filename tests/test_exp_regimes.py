"""The two-stage schedule's protocol on constructed tables whose answer is
known: the paired design, the 3-step baseline chosen as the best η of the
grid, the seeds a non-inferiority margin needs, the power table; the specs
(the pilot and the main sweep share the two-regimes model) and, slow, a smoke
run of each spec that finds its verdict run, figures and tables in MLflow."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from sweeps import experiments
from sweeps.conjectures.verdict import compare_groups
from sweeps.experiments import regimes
from sweeps.spec import load_spec, smoke

from test_conjectures import EPOCH_STEPS, FAST, loss_curve, make_table, regime_trials

SPECS = Path(__file__).parents[1] / "sweeps" / "specs"
STEP = {"optim.schedule.kind": "step", "optim.schedule.milestones": "[0.5, 0.75]",
        "optim.schedule.stage1_epochs": 0}


def trial(params: dict, seed: int, acc: float) -> dict:
    return {"params": params, "seed": seed,
            "curves": {"val/acc": (EPOCH_STEPS, np.linspace(0.3, acc, len(EPOCH_STEPS)))}}


def two(T: int) -> dict:
    return {"optim.lr": 1.0, "optim.schedule.kind": "two_stage",
            "optim.schedule.milestones": "[0.5, 0.75]", "optim.schedule.stage1_epochs": T}


def seed_effect_trials(n_seeds: int = 10, shift: float = 0.0, pair_sd: float = 0.001,
                       seed_sd: float = 0.05, rng_seed: int = 0) -> list[dict]:
    """Seeds differ a lot (seed_sd), the two-stage arm tracks its seed's 3-step trial
    closely (pair_sd) with a mean shift: only a paired test sees the difference clearly."""
    rng = np.random.default_rng(rng_seed)
    out = []
    for s in range(n_seeds):
        base = 0.8 + rng.normal(0, seed_sd)
        out.append(trial({**STEP, "optim.lr": 0.1}, s, base))
        out.append(trial(two(5), s, base + shift + rng.normal(0, pair_sd)))
    return out


# ------------------------------------------------- momentum: thin strata
def boundary_trials() -> list[dict]:
    """The paper's pattern plus an η at the small-step boundary: μ 0 is small-step on
    every seed, μ 0.5 only on seed 0 (large-step on seeds 1 and 2)."""
    out = regime_trials("paper")
    for seed in range(3):
        for mu in (0.0, 0.5):
            regime = "small-step" if mu == 0.0 or seed == 0 else "large-step"
            final = 0.45 - 0.3 * mu if regime == "small-step" else 0.3
            out.append({"params": {"optim.lr": 0.1, "optim.momentum": mu}, "seed": seed,
                        "curves": {"train/loss": (EPOCH_STEPS, loss_curve(final, regime)),
                                   "val/acc": (EPOCH_STEPS, np.linspace(0.3, 0.7, 10))}})
    return out


def test_a_thin_boundary_stratum_is_excluded_and_counted():
    table = make_table(boundary_trials())
    small, _ = regimes.momentum(table, **FAST)
    assert small.verdict == "supported", small.summary()
    assert small.details["thin_strata"] == {"0.1": 4}      # seed 0's two trials + two lone μ = 0
    assert small.n == 18 and small.details["n_strata"] == 2
    # the same table under the plan without the experiment's exclusion
    plan = regimes.PLANS["regimes.momentum[small-step]"]
    strict = dataclasses.replace(plan, exclusions=tuple(e for e in plan.exclusions if e != "thin_strata"))
    (old,) = [v for v in regimes.momentum(table, {"regimes.momentum[small-step]": strict}, **FAST)
              if v.name.endswith("[small-step]")]
    # without the experiment's own exclusion the engine excludes the thin stratum before the test
    assert old.verdict == "supported" and old.details["excluded_strata"], old.summary()
    assert "(2 trials) below the plan's minimum of 3 per stratum excluded" in old.reason


# ------------------------------------------------------------ paired design
def test_pairing_by_seed_decides_where_the_unpaired_test_cannot():
    table = make_table(seed_effect_trials())
    (v,) = regimes.two_stage(table, **FAST)
    assert v.verdict == "supported", v.summary()          # d ≈ 0 > −tol per seed, tightly
    assert v.details["n_seeds"] == 10 and v.p_method == "exact" and v.p_raw == pytest.approx(2 / 1024)
    # the same numbers as two independent groups: seed spread 0.05 hides the margin
    runs = table.runs.set_index("run_id")
    acc = runs["val/acc"]
    kind = runs["optim.schedule.kind"]
    unpaired = compare_groups(acc[kind == "two_stage"], acc[kind == "step"], shift=regimes.TOL,
                              **FAST)
    assert unpaired.p_value > 0.3
    assert v.details["sd_paired_diff"] == pytest.approx(0.001, rel=0.6)


def test_a_seed_missing_from_one_arm_leaves_that_comparison():
    trials = seed_effect_trials(n_seeds=8)
    trials[-1]["status"] = "diverged"                     # seed 7's two-stage trial
    (v,) = regimes.two_stage(make_table(trials), **FAST)
    assert v.details["n_seeds"] == 7 and v.n == 14 and v.details["excluded_diverged"] == 1


def test_the_baseline_is_the_best_three_step_lr_of_the_grid():
    out = []
    for s in range(8):
        out.append(trial({**STEP, "optim.lr": 0.01}, s, 0.70 + 0.001 * s))
        out.append(trial({**STEP, "optim.lr": 0.1}, s, 0.80 + 0.001 * s))
        out.append(trial({**STEP, "optim.lr": 0.3}, s, 0.75 + 0.001 * s))
        out.append(trial(two(5), s, 0.76 + 0.001 * s))   # beats two grid points, not the best
    (v,) = regimes.two_stage(make_table(out), **FAST)
    assert v.details["three_step_lr"] == 0.1
    assert v.details["three_step_grid"] == pytest.approx({"0.01": 0.7035, "0.1": 0.8035, "0.3": 0.7535})
    assert v.details["mean_acc_three_step"] == pytest.approx(0.8035)
    assert v.effect == pytest.approx(-0.04) and v.verdict == "refuted", v.summary()


# ------------------------------------------------------------ power, table
def test_seeds_for_margin_known_values():
    # (z_.975 + z_.8)^2 = 7.849: sd = tol needs 8 seeds, twice tol 32 (4 x 7.849 = 31.4)
    assert regimes.seeds_for_margin(0.01, 0.01) == 8
    assert regimes.seeds_for_margin(0.02, 0.01) == 32
    # Holm over 4: alpha/4 = 0.0125, (z_.99375 + z_.8)^2 = 11.15
    assert regimes.seeds_for_margin(0.01, 0.01, n_tests=4) == 12
    # a tiny spread: the exact sign-flip floor, 2 / 2^n < alpha / m
    assert regimes.seeds_for_margin(1e-6, 0.01) == 6          # 2/64 < 0.05 ≤ 2/32
    assert regimes.seeds_for_margin(1e-6, 0.01, n_tests=4) == 8   # 2/256 < 0.0125 ≤ 2/128
    assert regimes.seeds_for_margin(float("nan"), 0.01) == 0


def test_power_table_rows():
    out = []
    rng = np.random.default_rng(3)
    for s in range(4):
        base = 0.8 + rng.normal(0, 0.02)
        out.append(trial({**STEP, "optim.lr": 0.03}, s, base - 0.05))
        out.append(trial({**STEP, "optim.lr": 0.1}, s, base))
        for T, d in ((5, -0.02), (10, 0.0)):
            out.append(trial(two(T), s, base + d + (0.02 if s % 2 else -0.02)))
    tab = regimes.tab_two_stage_power(make_table(out))
    grid = tab[tab["arm"] == "3-step"].set_index("lr")
    assert list(grid.index) == [0.03, 0.1] and list(grid["baseline"]) == [False, True]
    rows = tab[tab["arm"] == "two-stage"].set_index("T")
    assert rows.loc[5.0, "mean_diff"] == pytest.approx(-0.02)
    assert rows.loc[10.0, "mean_diff"] == pytest.approx(0)
    sd = np.std([-0.02, 0.02, -0.02, 0.02], ddof=1)      # 0.0231: ((z_.9875 + z_.8) sd / 0.02)^2 = 12.7
    assert rows.loc[5.0, "sd_diff"] == pytest.approx(sd) and regimes.TOL == 0.02
    assert rows.loc[5.0, "seeds_needed"] == regimes.seeds_for_margin(sd, 0.02, n_tests=2) == 13
    assert "regimes_two_stage_power.csv" in experiments.get("regimes").tables


def test_plan_is_registered_and_powered_at_the_margin():
    plan = regimes.PLANS["regimes.two_stage"]
    assert plan.statistic == "non_inferiority" and plan.effect_of_interest == plan.options["tol"]
    assert experiments.registered_plans(["regimes.two_stage"]).keys() == {"regimes.two_stage"}


# -------------------------------------------------------------------- specs
def test_two_stage_specs_share_the_two_regimes_model_and_hold_disjoint_seeds():
    regimes_spec = load_spec(SPECS / "two_regimes.yaml")
    pilot, main = load_spec(SPECS / "two_stage_pilot.yaml"), load_spec(SPECS / "two_stage.yaml")
    for spec in (pilot, main):
        assert spec.base.model == regimes_spec.base.model and spec.base.data == regimes_spec.base.data
        assert spec.base.train == regimes_spec.base.train
        assert spec.conjectures == ["regimes.two_stage"] and smoke(spec).trials()
    assert not set(pilot.seeds) & set(main.seeds)
    assert len(regimes_spec.seeds) >= 3
    for spec in (pilot, main):
        stages = [t.optim for t in spec.trials() if t.optim.schedule.kind == "two_stage"]
        assert {o.momentum for o in stages} == {0.0} and {o.schedule.momentum2 for o in stages} == {0.9}
        assert all(o.schedule.anneal_epoch is not None for o in stages)
    main_base = {t.optim.lr for t in main.trials() if t.optim.schedule.kind == "step"}
    assert len(main_base) == 1 and main_base <= {t.optim.lr for t in pilot.trials()
                                                 if t.optim.schedule.kind == "step"}


# ------------------------------------------------- end to end (slow, smoke)
@pytest.mark.slow
@pytest.mark.parametrize("name", ["two_regimes", "two_stage_pilot", "two_stage"])
def test_smoke_run_logs_verdicts_figures_and_tables(name, tmp_path):
    from test_sweeps import cli, judged_run, uri
    from sweeps.tracking import Store

    res = cli(["run", str(SPECS / f"{name}.yaml"), "--smoke", "--storage", str(tmp_path / "ray"),
               "--tracking-uri", uri(tmp_path)], tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    store = Store(uri(tmp_path))
    _, run = judged_run(store, f"{name}-smoke")
    files = {a.path for a in store.client.list_artifacts(run.info.run_id)}
    assert {"verdicts.json", "figures"} <= files
    assert any(f.path.endswith(".png") for f in store.client.list_artifacts(run.info.run_id, "figures"))
    if name != "two_regimes":
        assert "regimes_two_stage_power.csv" in files
    assert run.data.tags["dynsweep.plans_hash"] == run.data.tags["dynsweep.registered_plans_hash"]
    again = cli(["conjectures", f"{name}-smoke", "--json", "--tracking-uri", uri(tmp_path)], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {v["name"].split("[")[0] for v in json.loads(again.stdout)["verdicts"]} == set(
        load_spec(SPECS / f"{name}.yaml").conjectures)
