"""Stages alignment on constructed tables whose markers are known: each reader
on a series with a hand-checkable answer; units assembled from reference,
onset and rewind runs; markers that line up -> supported, one at 8x -> refuted,
t_fit far away -> the control refuted and the contrast supported; a marker
never reached -> invalid protocol (censored, counted, not dropped); every
stages spec validates and the pilot and main sweeps share no seed."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from sweeps import experiments
from sweeps.experiments import stages as ST
from sweeps.experiments.stages import markers as M
from sweeps.spec import load_spec
from test_conjectures import make_table

FAST = dict(n_perm=999, n_boot=200)
SPECS = Path(__file__).resolve().parents[1] / "sweeps" / "specs"
BUDGET = 2000
STEPS = np.unique(np.r_[0, np.geomspace(1, BUDGET, 60).astype(int)])
N = 4000
ONSETS = {32: [0, 1, 2, 4, 8], 128: [0, 1, 2, 4, 8, 16, 32]}
KS = [0, 25, 50, 100, 200, 400, 800]


# ---------------------------------------------------------------- readers
def test_first_reaching_and_censoring():
    assert M.first_reaching([0, 10, 20, 30], [0.1, 0.5, 0.95, 0.99], 0.9, 30) == (20.0, M.SEEN)
    assert M.first_reaching([0, 10, 20], [0.1, 0.5, 0.6], 0.9, 20) == (20.0, M.BUDGET)


def test_half_change_smoothed_either_direction_and_flat():
    steps = [0, 1, 2, 3, 4, 5, 6]
    v = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]      # smoothed: 0, 0, 1/3, 2/3, 1, 1, 1
    assert M.half_change(steps, v, 6, frac=0.5, smooth=3) == (3.0, M.SEEN)
    assert M.half_change(steps, v, 6, frac=0.5, smooth=1) == (3.0, M.SEEN)
    fall = [0.8, 0.8, 0.8, 0.5, 0.4, 0.3, 0.2]   # falls by 0.6: half-way is 0.5, at step 3
    assert M.half_change(steps, fall, 6, frac=0.5, smooth=1) == (3.0, M.SEEN)
    assert M.half_change([0, 1, 2], [1, 1, 1], 2) == (2.0, M.BUDGET)


def test_interior_peak_and_unpassed_peak():
    assert M.interior_peak([0, 1, 2, 3, 4], [1, 2, 5, 2, 1], 4, smooth=1) == (2.0, M.SEEN)
    assert M.interior_peak([0, 1, 2, 3], [1, 2, 3, 4], 3, smooth=1) == (3.0, M.BUDGET)


def test_crossing_interpolates_on_the_log_axis():
    grid = [0, 100, 200, 400]
    # gap 0.06 at 100, 0.00 at 200: crosses 0.02 two thirds of the way in log
    t, how = M.crossing(grid, [0.08, 0.06, 0.0, 0.01], 0.02, 2000)
    assert how == M.SEEN and t == pytest.approx(math.exp(math.log(100) + (2 / 3) * math.log(2)))
    # a dip below the margin that does not last is not the crossing
    t, how = M.crossing(grid, [0.08, 0.0, 0.05, 0.01], 0.02, 2000)
    assert how == M.SEEN and 200 < t < 400
    assert M.crossing(grid, [0.0, 0.0, 0.01, 0.0], 0.02, 2000) == (50.0, M.BEFORE)
    assert M.crossing(grid, [0.1, 0.1, 0.1, 0.1], 0.02, 2000) == (2000.0, M.BUDGET)
    # the k = 0 point sits at half the first positive one on the log axis
    t, _ = M.crossing(grid, [0.04, 0.0, 0.0, 0.0], 0.02, 2000)
    assert t == pytest.approx(math.exp((math.log(50) + math.log(100)) / 2))


# ------------------------------------------------------ constructed sweep
def curves_at(tau: dict[str, float], eta: float) -> dict:
    """Reference-run series whose markers sit at tau[m] steps."""
    t = STEPS.astype(float)
    lam_k = 5.0 * np.minimum(np.maximum(t, 1) / tau["be"], 1.0) ** 2 + 1.0
    lam_h = (2.0 / eta) * t / tau["stab"]                 # ηλ_H reaches 2 at tau: unstable
    fisher = np.maximum(t, 1) / tau["fisher"] * np.exp(1 - np.maximum(t, 1) / tau["fisher"])
    within = 1 - 2.0 ** (-t / tau["stiff"])
    delta = np.exp(-t * math.log(2) / tau["hf"])
    acc = np.minimum(1.0, 0.5 + 0.4 * t / tau["fit"])
    return {"gradcov/top": (STEPS, lam_k), "hessian/top": (STEPS, lam_h),
            "sgd_noise/s2": (STEPS, np.zeros_like(t)), "fisher/trace": (STEPS, fisher),
            "stiffness/train_train/cos_within": (STEPS, within),
            "stiffness/train_train/cos_between": (STEPS, np.zeros_like(t)),
            "freq/delta_k0": (STEPS, np.exp(-t / 5.0)), "freq/delta_k3": (STEPS, delta),
            "probe/acc": (STEPS, acc), "final/val_acc": ([BUDGET], [0.9])}


def unit_trials(eta: float, S: int, seed: int, tau: dict[str, float]) -> list[dict]:
    """The reference run, its onset sweep (a 0.06 cost before tau['cp'], none after) and
    its rewind sweep (a 0.06 shortfall for k below tau['imp'])."""
    base = {"optim.lr": eta, "train.batch_size": S, "data.train_size": N}
    out = [{"params": {**base, "data.deficit.kind": "none", "pruning.levels": 0}, "seed": seed,
            "curves": curves_at(tau, eta)}]
    spe = math.ceil(N / S)
    for o in ONSETS[S]:
        cost = 0.06 if o * spe < tau["cp"] else 0.0
        out.append({"params": {**base, "data.deficit.kind": "blur", "data.deficit.start_epoch": o,
                               "pruning.levels": 0},
                    "seed": seed, "curves": {"final/val_acc": ([BUDGET], [0.9 - cost])}})
    for k in KS:
        short = 0.06 if k < tau["imp"] else 0.0
        out.append({"params": {**base, "pruning.levels": 1, "pruning.rewind_step": k,
                               "data.deficit.kind": "none"}, "seed": seed,
                    "curves": {"level/0/final/val_acc": ([BUDGET], [0.9]),
                               "level/1/final/val_acc": ([2 * BUDGET], [0.9 - short])}})
    return out


def sweep(scale: dict[str, float] | None = None, seeds=range(3), jitter: float = 0.15):
    """Units on a 3 η × 2 S grid; marker m at scale[m] × the unit's own t_BE."""
    scale = {m: 1.0 for m in ("be", *ST.MARKERS)} | {"fit": 8.0} | (scale or {})
    rng = np.random.default_rng(0)
    trials = []
    for eta, S, seed in itertools.product([0.04, 0.1, 0.25], [32, 128], seeds):
        t_be = 8.0 / eta * math.sqrt(S / 32)
        tau = {m: t_be * s * float(np.exp(rng.normal(0, jitter))) for m, s in scale.items()}
        tau["be"] = t_be
        trials += unit_trials(eta, S, seed, tau)
    return make_table(trials)


def verdicts(table, name: str) -> dict:
    return {v.name: v for v in experiments.get_conjecture(f"stages.{name}")(table, **FAST)}


def test_units_and_roles():
    table = sweep()
    units, _ = ST.unit_frame(table)
    assert len(units) == 18 and set(units["n_onsets"]) == {5, 7} and set(units["n_rewinds"]) == {7}
    row = units.iloc[0]
    # the reference's markers read near the constructed times (log grid of 60 points)
    assert row["how_be"] == M.SEEN and row["how_fit"] == M.SEEN
    assert abs(math.log(row["t_stiff"] / row["t_be"])) < 0.6
    roles = ST.trial_frame(table)[0]["role"].value_counts().to_dict()
    assert roles == {"reference": 18, "onset": 9 * (5 + 7), "rewind": 18 * 7}


def test_aligned_markers_supported_and_far_one_refuted():
    table = sweep({"fisher": 8.0})
    v = verdicts(table, "aligned")
    assert v["stages.aligned[stiff]"].verdict == "supported"
    assert v["stages.aligned[hf]"].verdict == "supported"
    assert v["stages.aligned[fisher]"].verdict == "refuted"
    assert v["stages.aligned[fisher]"].effect == pytest.approx(math.log(8), abs=0.35)


def test_control_and_contrast():
    table = sweep()
    fit = verdicts(table, "aligned_with_fit")
    assert fit["stages.aligned_with_fit[be]"].verdict == "refuted"       # t_fit at 8x t_BE
    (c,) = verdicts(table, "closer_than_fit").values()
    assert c.verdict == "supported" and c.effect > math.log(2)


def test_slopes_equivalent_when_markers_scale_with_be():
    v = verdicts(sweep(), "moves_together")
    assert v["stages.moves_together[stiff/lr]"].verdict in ("supported", "inconclusive")
    assert v["stages.moves_together[stiff/batch]"].details["n_strata"] == 9
    assert abs(v["stages.moves_together[stiff/lr]"].effect) < 0.2


def test_never_reached_marker_is_censored_not_dropped():
    table = sweep({"hf": 1e6})          # the high frequency never converges
    units, _ = ST.unit_frame(table)
    assert (units["how_hf"] == M.BUDGET).all() and (units["t_hf"] == units["budget"]).all()
    v = verdicts(table, "aligned")["stages.aligned[hf]"]
    assert v.verdict == "invalid_protocol" and not v.details["checks"]["occurs"]["passed"]


def test_figures_and_table_draw():
    table = sweep()
    assert isinstance(ST.fig_markers(table), Figure)
    assert isinstance(ST.fig_correlation(table), Figure)
    t = ST.marker_table(table)
    assert {"t_be", "how_imp", "t_fit"} <= set(t.columns)


def test_specs_validate_and_seeds_are_fresh():
    specs = {p.name: load_spec(p) for p in SPECS.glob("stages*.yaml")}
    assert {"stages.yaml", "stages_pilot.yaml"} <= set(specs)
    assert not set(specs["stages.yaml"].seeds) & set(specs["stages_pilot.yaml"].seeds)
    main = specs["stages.yaml"]
    assert set(main.conjectures) == {"stages.aligned", "stages.aligned_with_fit",
                                     "stages.closer_than_fit", "stages.moves_together"}


def test_joint_slope_test_sees_a_marker_that_drifts_with_eta():
    from sweeps.experiments.stages.analysis import joint_slope_test
    units, _ = ST.unit_frame(sweep())
    probed = ("stab", "fisher", "stiff", "hf")     # read on the log probe grid, not on a coarse one
    together = joint_slope_test(units, probed, "optim.lr", n_perm=199)
    drift = units.assign(t_stiff=units["t_stiff"] * (units["lr"] / 0.04) ** 1.5)
    apart = joint_slope_test(drift, probed, "optim.lr", n_perm=199)
    assert together["p"] > 0.05 and apart["p"] <= 0.01


@pytest.mark.slow
def test_smoke_run_gives_every_registered_verdict(tmp_path):
    from test_sweeps import smoke_verdicts

    verdicts = smoke_verdicts(SPECS / "stages.yaml", tmp_path, timeout=900)
    assert sorted(v["name"] for v in verdicts) == sorted(ST.PLANS)


def test_the_protocol_is_one_design_across_batch_sizes():
    """Every run of stages.yaml has the same step budget; the blur windows last about the
    same number of steps at both S (500 and 512: epochs of 125 and 32 steps); every unit
    has its reference, onsets and rewinds."""
    main = load_spec(SPECS / "stages.yaml")
    trials = main.trials()
    budgets, windows = set(), set()
    for t in trials:
        spe = math.ceil(t.data.train_size / t.train.batch_size)
        assert t.train.epochs * spe >= t.train.max_steps
        budgets.add(t.train.max_steps)
        if t.data.deficit.kind != "none":
            windows.add((t.data.deficit.end_epoch - t.data.deficit.start_epoch) * spe)
    assert budgets == {3000} and min(windows) >= 500 and max(windows) / min(windows) < 1.03
    roles = {}
    for t in trials:
        row = t.flat()
        roles.setdefault((row["optim.lr"], row["train.batch_size"], t.seed), set()).add(ST.role_of(row))
    assert len(roles) == 18 and all(r == {"reference", "onset", "rewind"} for r in roles.values())


def test_a_plan_option_changes_the_reading():
    """The readers take their levels from the plan: a higher fit level reads t_fit later."""
    table = sweep()
    plan = ST.PLANS["stages.aligned_with_fit[be]"]
    higher = plan.with_overrides(options={**plan.options, "fit_level": 0.95})
    judge = experiments.get_conjecture("stages.aligned_with_fit")
    name = "stages.aligned_with_fit[be]"
    v0 = {v.name: v for v in judge(table, {name: plan}, **FAST)}[name]
    v1 = {v.name: v for v in judge(table, {name: higher}, **FAST)}[name]
    assert v1.effect < v0.effect and v1.exploratory and not v0.exploratory
