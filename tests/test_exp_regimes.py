"""The two-regimes experiment on constructed tables whose answer is known: the
calibration's regime map and its choice of the two effective steps, the main
sweep's arms (fixed by config, their regime the registered map's) and its
paired contrasts, the same-sign test; the two-stage protocol (paired design,
3-step baseline as the best η of the grid, seeds a margin needs, the power
table); the specs (shared model, disjoint seeds, every main arm on its
regime's cell) and, slow, a smoke run of each spec that finds its verdict run,
figures and tables in MLflow."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from sweeps import experiments
from sweeps.conjectures.verdict import compare_groups
from sweeps.experiments import regimes
from sweeps.spec import load_spec, smoke

from test_conjectures import EPOCH_STEPS, FAST, loss_curve, make_table

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


# ------------------------------------------------------ calibration, the map
CAL_STEPS = [0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4]


def calibration_trials(small_up_to: float = 0.1, trains_up_to: float = 1.6,
                       seeds=range(3), mixed: tuple[float, float] | None = None) -> list[dict]:
    """A calibration grid: small-step curves up to `small_up_to`, large-step ones up to
    `trains_up_to`, diverged above; `mixed` = (e, μ): seed 0 of that cell is small-step."""
    out = []
    for e, mu, seed in itertools.product(CAL_STEPS, [0.0, 0.5, 0.9], seeds):
        params = {"optim.lr": round(e * (1 - mu), 6), "optim.momentum": mu,
                  "data.dataset": "mnist1d", "optim.schedule.kind": "constant"}
        if e > trains_up_to:
            out.append({"params": params, "seed": seed, "status": "diverged",
                        "curves": {"train/loss": (EPOCH_STEPS[:2], [2.3, np.nan])}})
            continue
        small = e <= small_up_to or (mixed == (e, mu) and seed == 0)
        final = 0.2 + 0.1 * e + 0.01 * seed
        curve = loss_curve(final, "small-step" if small else "large-step")
        out.append({"params": params, "seed": seed,
                    "curves": {"train/loss": (EPOCH_STEPS, curve),
                               "val/acc": (EPOCH_STEPS, np.linspace(0.2, 0.6, 10))}})
    return out


def test_the_map_labels_cells_and_the_rule_picks_the_pair():
    (v,) = regimes.calibration(make_table(calibration_trials()), **FAST)
    rmap = v.details["regime_map"]
    assert rmap["0.9"]["0.1"] == "small-step" and rmap["0"]["0.2"] == "large-step"
    assert rmap["0.5"]["3.2"] == "diverged"
    assert v.details["boundaries"]["0"] == {"largest_trains": 1.6, "largest_small_step": 0.1}
    # e_L: the largest e large-step at every μ and at its same-η cell (μ 0.5: e/0.5), so
    # not 1.6 (3.2 diverges); e_S: the largest e small-step at every μ and at its same-η cell
    assert (v.details["step_large"], v.details["step_small"]) == (0.8, 0.05)
    assert all(c["passed"] for c in v.details["checks"].values())
    # the chosen large step's curves decrease less consistently: 9 (seed, μ) blocks
    assert v.verdict == "supported" and v.n == 18 and v.p_raw == pytest.approx(2 / 512), v.summary()


def test_a_mixed_cell_moves_the_pair_and_an_open_edge_fails_the_check():
    # e = 0.8 at μ = 0.9 is small-step on one seed: not large-step at every μ
    (v,) = regimes.calibration(make_table(calibration_trials(mixed=(0.8, 0.9))), **FAST)
    assert v.details["regime_map"]["0.9"]["0.8"] == "mixed"
    assert (v.details["step_large"], v.details["step_small"]) == (0.4, 0.05)
    # every e trains: the grid never reached the edge
    (w,) = regimes.calibration(make_table(calibration_trials(trains_up_to=10.0)), **FAST)
    assert w.verdict == "invalid_protocol" and "extend the grid" in w.reason, w.summary()


# ------------------------------------------------------------- main sweep
MAIN = regimes.PLANS["regimes.large_step_optimizes_worse"].options


def main_trials(seeds=range(10), momentum_loss=(-0.1, +0.1), same_lr_loss=(-0.1, +0.2),
                momentum_acc=(0.02, 0.01), anneal_gain=0.03, steps=None,
                rng_seed: int = 0) -> list[dict]:
    """Every arm of the main design at the plans' steps. Loss: 0.3 (small) and 0.6 (large)
    plus momentum's effect per regime (matched arms) or same_lr_loss (same-η arms);
    test accuracy 0.6 plus momentum's effect, annealed arms 0.65 (small) and
    0.65 + anneal_gain (large). Seed effects of sd 0.05, noise of sd 0.005."""
    e_s, e_l = steps or (MAIN["step_small"], MAIN["step_large"])
    rng = np.random.default_rng(rng_seed)
    out = []
    for seed in seeds:
        fx = rng.normal(0, 0.05)
        for k, (e, loss0) in enumerate(((e_s, 0.3), (e_l, 0.6))):
            arms = [(e * (1 - mu), mu, kind) for mu in MAIN["momenta"] for kind in ("constant", "step")]
            arms.append((e, MAIN["same_lr_momentum"], "same_lr"))
            for lr, mu, kind in arms:
                loss, acc = loss0 + fx, 0.6 + fx
                if kind == "same_lr":
                    loss += same_lr_loss[k]
                elif mu > 0:
                    loss += momentum_loss[k]
                    acc += momentum_acc[k]
                if kind == "step":
                    acc = 0.65 + fx + (anneal_gain if k else 0.0)
                loss, acc = loss + rng.normal(0, 0.005), acc + rng.normal(0, 0.005)
                params = {"optim.lr": round(lr, 8), "optim.momentum": mu,
                          "optim.schedule.kind": "step" if kind == "step" else "constant"}
                out.append({"params": params, "seed": seed,
                            "curves": {"train/loss": (EPOCH_STEPS, np.linspace(2.0, loss, 10)),
                                       "val/acc": (EPOCH_STEPS, np.linspace(0.2, acc, 10))}})
    return out


def judge_main(trials: list[dict], plans=None) -> dict:
    table = make_table(trials)
    out = {}
    for c in (regimes.large_step_optimizes_worse, regimes.momentum_matched,
              regimes.momentum_same_lr, regimes.momentum_acc_same_sign,
              regimes.large_step_generalizes):
        out.update({v.name: v for v in c(table, plans, **FAST)})
    return out


def test_the_paper_pattern_supports_every_main_conjecture():
    got = judge_main(main_trials())
    assert set(got) == {k for k in regimes.PLANS if k not in ("regimes.calibration",
                                                              "regimes.two_stage")}
    for name, v in got.items():
        assert v.verdict == "supported", v.summary()
        assert v.details["checks"]["arms_in_regime"]["passed"] and v.n == 10
        assert v.details["regimes_from"] == "calibration:regimes.calibration"
    # the contrasts' sizes: large − small 0.3 of loss (+ the mean momentum effect, 0.1 − (−0.1),
    # over the two μ > 0 of three); momentum matched ±0.1; anneal gain 0.03
    assert got["regimes.large_step_optimizes_worse"].effect == pytest.approx(0.3 + 0.2 * 2 / 3, abs=0.01)
    assert got["regimes.momentum_matched[large-step]"].effect == pytest.approx(0.1, abs=0.01)
    assert got["regimes.large_step_generalizes"].effect == pytest.approx(0.03, abs=0.01)
    same = got["regimes.momentum_acc_same_sign"]
    assert same.details["common_sign"] == 1 and same.effect == pytest.approx(0.01, abs=0.005)


def test_momentum_helping_the_large_step_refutes_and_opposite_acc_signs_refute():
    got = judge_main(main_trials(momentum_loss=(-0.1, -0.1), momentum_acc=(0.03, -0.03)))
    assert got["regimes.momentum_matched[large-step]"].verdict == "refuted"
    assert got["regimes.momentum_matched[small-step]"].verdict == "supported"
    assert got["regimes.momentum_acc_same_sign"].verdict == "refuted"
    # a momentum effect only through the larger step: the matched arms see none
    flat = judge_main(main_trials(momentum_loss=(0.0, 0.0), momentum_acc=(0.0, 0.0)))
    assert flat["regimes.momentum_same_lr[large-step]"].verdict == "supported"
    assert flat["regimes.momentum_matched[large-step]"].p_raw > 0.05


def test_an_arm_off_its_regime_is_invalid_and_a_lost_trial_drops_its_seed():
    plan = regimes.PLANS["regimes.large_step_generalizes"]
    rmap = {mu: dict(cells) for mu, cells in plan.options["regime_map"].items()}
    rmap["0.9"][regimes.step_key(MAIN["step_large"])] = "mixed"
    moved = {"regimes.large_step_generalizes": plan.with_options(regime_map=rmap)}
    (v,) = regimes.large_step_generalizes(make_table(main_trials()), moved, **FAST)
    assert v.verdict == "invalid_protocol" and "L|matched|0.9|step" in v.reason and v.exploratory
    trials = main_trials()
    trials[0]["status"] = "diverged"                    # seed 0's small-step base arm
    got = judge_main(trials)
    assert got["regimes.large_step_optimizes_worse"].n == 9
    assert got["regimes.large_step_optimizes_worse"].details["excluded_incomplete_seed"] == 1
    assert got["regimes.large_step_generalizes"].n == 10    # the annealed arms are all there
    assert got["regimes.large_step_generalizes"].details["excluded_diverged"] == 1


def test_main_plans_read_regimes_from_the_registered_map():
    for key, plan in regimes.PLANS.items():
        if key in ("regimes.calibration", "regimes.two_stage"):
            continue
        assert plan.options["regime_map"] == regimes.REGIME_MAP and regimes.REGIME_MAP
        assert plan.options["subgroups_from"] == "calibration:regimes.calibration"
        assert plan.family == "regimes" and plan.statistic in ("paired_sign_flip",
                                                               "intersection_union")
    # the pair is on the map in its regimes, at every μ and at the same-η cell
    for e, regime in ((regimes.STEP_SMALL, "small-step"), (regimes.STEP_LARGE, "large-step")):
        for mu in MAIN["momenta"]:
            assert regimes.label_at(regimes.REGIME_MAP, e * (1 - mu), mu) == regime
        assert regimes.label_at(regimes.REGIME_MAP, e, MAIN["same_lr_momentum"]) == regime


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
def test_regimes_specs_share_the_model_hold_disjoint_seeds_and_put_every_arm_on_its_cell():
    cal, pilot, main = (load_spec(SPECS / f"two_regimes{s}.yaml")
                        for s in ("_calibration", "_pilot", ""))
    for spec in (pilot, main):
        assert (spec.base.model, spec.base.data, spec.base.train) == (
            cal.base.model, cal.base.data, cal.base.train)
        assert spec.variants == main.variants and spec.resources.pack == 16
        for t in spec.trials():
            arm = regimes.arm_of(t.optim.lr, t.optim.momentum, t.optim.schedule.kind, MAIN)
            assert arm is not None, t.optim
            assert regimes.label_at(regimes.REGIME_MAP, t.optim.lr, t.optim.momentum) == arm[0]
    assert cal.conjectures == ["regimes.calibration"] and cal.resources.pack == 16
    assert not (set(cal.seeds) & set(pilot.seeds) or set(cal.seeds) & set(main.seeds)
                or set(pilot.seeds) & set(main.seeds))
    assert {c.split(".")[1] for c in main.conjectures} == {
        k.split(".")[1].split("[")[0] for k in regimes.PLANS} - {"calibration", "two_stage"}
    assert pilot.conjectures == main.conjectures


def test_two_stage_specs_share_the_two_regimes_model_and_hold_disjoint_seeds():
    regimes_spec = load_spec(SPECS / "two_regimes.yaml")
    pilot, main = load_spec(SPECS / "two_stage_pilot.yaml"), load_spec(SPECS / "two_stage.yaml")
    for spec in (pilot, main):
        assert spec.base.model == regimes_spec.base.model and spec.base.data == regimes_spec.base.data
        assert spec.base.train == regimes_spec.base.train
        assert spec.conjectures == ["regimes.two_stage"] and smoke(spec).trials()
    assert not set(pilot.seeds) & set(main.seeds)
    for spec in (pilot, main):
        stages = [t.optim for t in spec.trials() if t.optim.schedule.kind == "two_stage"]
        assert {o.momentum for o in stages} == {0.0} and {o.schedule.momentum2 for o in stages} == {0.9}
        assert all(o.schedule.anneal_epoch is not None for o in stages)
    main_base = {t.optim.lr for t in main.trials() if t.optim.schedule.kind == "step"}
    assert len(main_base) == 1 and main_base <= {t.optim.lr for t in pilot.trials()
                                                 if t.optim.schedule.kind == "step"}


def test_the_pilot_is_the_main_sweep_on_other_seeds():
    """two_regimes_pilot differs from two_regimes in its name, description and
    seeds only (so the main spec's smoke run covers its verdicts), on seeds the
    main sweep never uses."""
    pilot, main = (load_spec(SPECS / f"{n}.yaml") for n in ("two_regimes_pilot", "two_regimes"))
    same = {"name", "description", "seeds"}
    assert pilot.model_dump(exclude=same) == main.model_dump(exclude=same)
    assert not set(pilot.seeds) & set(main.seeds)


# ------------------------------------------------- end to end (slow, smoke)
@pytest.mark.slow
@pytest.mark.parametrize("name", ["two_regimes_calibration", "two_regimes", "two_stage_pilot",
                                  "two_stage"])
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
    if name.startswith("two_stage"):
        assert "regimes_two_stage_power.csv" in files
    if name == "two_regimes_calibration":
        assert "regimes_calibration.csv" in files
    assert run.data.tags["dynsweep.plans_hash"] == run.data.tags["dynsweep.registered_plans_hash"]
    again = cli(["conjectures", f"{name}-smoke", "--json", "--tracking-uri", uri(tmp_path)], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {v["name"].split("[")[0] for v in json.loads(again.stdout)["verdicts"]} == set(
        load_spec(SPECS / f"{name}.yaml").conjectures)
