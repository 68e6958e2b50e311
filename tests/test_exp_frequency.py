"""Frequency principle on constructed tables whose answer is known: Δ_F that
falls first at low frequencies -> supported, first at high ones -> refuted,
no Δ_F logged -> inconclusive with the reason; unreached thresholds handled
and counted; Kendall τ_b against scipy; v2's relative convergence, censoring
and manipulation checks; every spec validates; a smoke run of the v2 spec
gives a verdict per arm (slow)."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy import stats

from sweeps import experiments
from sweeps.experiments import frequency as F
from sweeps.spec import load_spec
from test_conjectures import make_table      # the shared constructed-table builder

FAST = dict(n_perm=999, n_boot=300)
STEPS = np.unique(np.geomspace(1, 3000, 30).astype(int))
SPECS = Path(__file__).resolve().parents[1] / "sweeps" / "specs"


def trial(seed: int, rates, arm: str = "mlp", rng=None) -> dict:
    """Δ_F(k_i) = exp(−step / rate_i) (+ noise): frequency i converges at about
    rate_i · ln 10 steps; a rate of None never converges (stays at 0.5)."""
    rng = rng or np.random.default_rng(seed)
    curves = {}
    for i, rate in enumerate(rates):
        d = np.full(len(STEPS), 0.5) if rate is None else np.exp(-STEPS / rate)
        curves[f"freq/delta_k{i}"] = (STEPS, d * np.exp(rng.normal(0, 0.05, len(STEPS))))
    return {"params": {"model.name": arm}, "seed": seed, "curves": curves}


def sweep(order: str = "low_first", seeds=range(8), unreached_top: bool = False,
          arms=("mlp",)) -> list[dict]:
    rng = np.random.default_rng(0)
    base = [30.0, 120.0, 400.0, 900.0]
    if order == "high_first":
        base = base[::-1]
    out = []
    for arm, s in itertools.product(arms, seeds):
        rates = [r * float(np.exp(rng.normal(0, 0.1))) for r in base]
        if unreached_top:
            rates[-1] = None
        out.append(trial(s, rates, arm, rng))
    return out


def low_first(table, **options):
    """The one verdict, under the registered plan or (with `options`) an overridden one."""
    plans, plan = None, F.PLANS["frequency.low_first"]
    if {**plan.options, **options} != plan.options:
        plans = {"frequency.low_first": plan.with_overrides(options={**plan.options, **options})}
    (v,) = experiments.get_conjecture("frequency.low_first")(table, plans, **FAST)
    return v


# ------------------------------------------------------------ conjecture
@pytest.mark.parametrize("order,expected", [("low_first", "supported"), ("high_first", "refuted")])
def test_low_first(order, expected):
    v = low_first(make_table(sweep(order)))
    assert v.verdict == expected and v.n == 8 and v.p_raw == pytest.approx(2 / 256)
    assert v.plan_hash == F.PLANS["frequency.low_first"].hash() and not v.exploratory
    assert v.statistic == pytest.approx(1.0 if order == "low_first" else -1.0)


@pytest.mark.parametrize("rule", ["last", "drop"])
def test_unreached_thresholds_are_handled_and_counted(rule):
    v = low_first(make_table(sweep(unreached_top=True)), unreached=rule)
    assert v.verdict == "supported" and v.statistic == pytest.approx(1.0)
    assert v.details["unreached_per_rank"] == {"k0": 0, "k1": 0, "k2": 0, "k3": 8}
    assert v.exploratory == (rule != "last")      # "last" is the registered rule


def test_trials_where_nothing_converged_are_excluded_and_counted():
    never = [trial(s, [None] * 4) for s in range(3)]
    v = low_first(make_table(sweep() + never))
    assert v.verdict == "supported" and v.n == 8 and v.details["excluded_tau_undefined"] == 3


def test_one_verdict_per_arm_and_arms_tracking_fewer_peaks():
    three = [trial(s, [400.0, 120.0, 30.0], "sine") for s in range(8)]   # high first; no k3
    vs = experiments.get_conjecture("frequency.low_first")(make_table(sweep() + three), **FAST)
    assert [v.name for v in vs] == ["frequency.low_first[mlp]", "frequency.low_first[sine]"]
    assert [v.verdict for v in vs] == ["supported", "refuted"]
    # the arms are the Holm family `frequency`: 2/256 each, adjusted to 2 x 2/256 < 0.05
    fin = experiments.evaluate(["frequency.low_first"], make_table(sweep() + three),
                               {"frequency.low_first": FAST})
    assert [(v.verdict, v.family, v.n_family) for v in fin] == [
        ("supported", "frequency", 2), ("refuted", "frequency", 2)]
    assert fin[0].p_adjusted == pytest.approx(2 * 2 / 256)
    assert vs[1].details["unreached_per_rank"]["k3"] == 0 and vs[1].details["frequencies"] == 3
    assert isinstance(F.fig_heatmap(make_table(sweep() + three)), Figure)
    assert isinstance(F.fig_heatmap(make_table(sweep() + three)), Figure)


def test_missing_metric_is_underpowered_with_reason():
    # nothing to test: n = 0 is below the plan's minimum, and the reason says why
    t = make_table([{"params": {}, "seed": 0, "curves": {"train/loss": ([1, 2], [1.0, 0.5])}}])
    v = low_first(t)
    assert v.verdict == "underpowered" and "freq/delta_k" in v.details["reason"] and v.n == 0


def test_too_few_trials_is_underpowered():
    # 6 seeds: 6/6 positive gives p = 2/64, which Holm over the shipped specs' arms cannot pass
    v = low_first(make_table(sweep(seeds=range(6))))
    assert v.verdict == "underpowered" and "n=6 < min 7" in v.reason
    assert v.p_raw == pytest.approx(2 / 64) and v.statistic == pytest.approx(1.0)


# ------------------------------------------------------------ per trial
def test_convergence_step():
    assert F.convergence_step([1, 2, 3, 4], [0.5, 0.2, 0.05, 0.01], 0.1) == 3
    assert np.isnan(F.convergence_step([1, 2], [0.5, 0.2], 0.1))
    dips = ([1, 2, 3, 4, 5, 6, 7, 8], [0.05, 0.5, 0.08, 0.09, 0.07, 0.3, 0.02, 0.01])
    assert F.convergence_step(*dips, 0.1, hold=1) == 1        # the first crossing
    assert F.convergence_step(*dips, 0.1, hold=3) == 3        # 3 in a row from step 3
    assert F.convergence_step(*dips, 0.1, hold=None) == 7     # below until the end
    assert F.convergence_step([1, 2], [0.01, 0.02], 0.1) == 1   # fewer than hold left, all below
    assert np.isnan(F.convergence_step([1, 2], [0.01, 0.2], 0.1))


def test_first_crossing_is_fooled_by_a_dip_and_until_the_end_by_a_late_spike():
    trials = sweep()
    for t in trials:       # the highest frequency dips at step 1, the lowest spikes at the end
        steps, d3 = t["curves"]["freq/delta_k3"]
        t["curves"]["freq/delta_k3"] = (steps, np.r_[0.01, d3[1:]])
        _, d0 = t["curves"]["freq/delta_k0"]
        t["curves"]["freq/delta_k0"] = (steps, np.r_[d0[:-2], 0.5, d0[-1]])
    assert low_first(make_table(trials)).statistic == pytest.approx(1.0)
    assert low_first(make_table(trials), hold=1).statistic < 1.0
    assert low_first(make_table(trials), hold=None).statistic < 1.0


@pytest.mark.parametrize("seed", range(5))
def test_kendall_tau_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, 12).astype(float)      # with ties
    y = rng.integers(0, 5, 12).astype(float)
    assert F.kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
    assert F.kendall_tau(np.arange(5), np.arange(5)) == pytest.approx(1.0)
    assert np.isnan(F.kendall_tau(np.arange(4), np.ones(4)))


# ------------------------------------------------------- figures, tables
def test_figures_and_table():
    t = make_table(sweep())
    assert isinstance(F.fig_heatmap(t), Figure) and isinstance(F.fig_curves(t), Figure)
    assert F.fig_low_high(t) is None
    lh = sweep()
    lh[0]["curves"].update({"freq/e_low_w0": (STEPS, np.exp(-STEPS / 50)),
                            "freq/e_high_w0": (STEPS, np.exp(-STEPS / 500))})
    assert isinstance(F.fig_low_high(make_table(lh)), Figure)
    df = F.convergence_table(t)
    assert len(df) == 8 and {"step_k0", "step_k3", "n_unreached", "tau"} <= set(df)


@pytest.mark.parametrize("name", ["frequency.yaml", "frequency-cluster.yaml"])
def test_specs_validate(name):
    spec = load_spec(SPECS / name)
    assert spec.conjectures == ["frequency.low_first"]
    assert spec.base.probes.frequency and spec.base.probes.frequencies >= 3


# ------------------------------------------------ v2: relative, paired contrast
BIN = 0.05
V2 = F.PLANS["frequency.high_after_low"]


def v2_trial(seed: int, rates, arm: str = "mlp", gap_bins: int = 10, rng=None) -> dict:
    """Δ_F(k_i) = exp(−step / rate_i) from 1 at step 0: it halves (the plan's
    fraction 0.5) at rate_i · ln 2; None never falls. Peaks `gap_bins` apart."""
    rng = rng or np.random.default_rng(seed)
    curves = {"freq/bin": (STEPS0, np.full(len(STEPS0), BIN))}
    for i, rate in enumerate(rates):
        d = np.ones(len(STEPS0)) if rate is None else np.exp(-STEPS0 / rate)
        curves[f"freq/delta_k{i}"] = (STEPS0, d * np.exp(rng.normal(0, 0.02, len(STEPS0))))
        curves[f"freq/k{i}"] = (STEPS0, np.full(len(STEPS0), BIN * (1 + gap_bins * i)))
    return {"params": {"data.dataset": "mnist1d", "model.name": arm,
                       "probes.frequency_centring": "mean"}, "seed": seed, "curves": curves}


STEPS0 = np.r_[0, STEPS]


def v2_sweep(order: str = "low_first", seeds=range(10), arms=("mlp",), **kw) -> list[dict]:
    rng = np.random.default_rng(1)
    base = [30.0, 60.0, 200.0, 600.0]
    base = base[::-1] if order == "high_first" else base
    return [v2_trial(s, [r * float(np.exp(rng.normal(0, 0.1))) for r in base], arm, rng=rng, **kw)
            for arm, s in itertools.product(arms, seeds)]


def high_after_low(table, **options):
    plans = None
    if options:
        plans = {"frequency.high_after_low": V2.with_overrides(options={**V2.options, **options})}
    return experiments.get_conjecture("frequency.high_after_low")(table, plans, **FAST)


@pytest.mark.parametrize("order,expected", [("low_first", "supported"), ("high_first", "refuted")])
def test_high_after_low(order, expected):
    (v,) = high_after_low(make_table(v2_sweep(order)))
    assert v.verdict == expected and v.n == 10 and v.p_raw == pytest.approx(2 / 1024)
    assert v.plan_hash == V2.hash() and not v.exploratory
    # d = ln(600 ln2 · e^ε) − ln(30 ln2 · e^ε'): about ln 20 either way, up to the probe grid
    assert abs(v.statistic) == pytest.approx(math.log(20), abs=0.35)
    assert all(c["passed"] for c in v.details["checks"].values())


def test_relative_convergence_step():
    steps = np.array([0, 10, 20, 30, 40, 50])
    vals = np.array([2.0, 1.5, 0.9, 0.8, 0.7, 0.6])
    assert F.relative_convergence_step(steps, vals, 0.5) == 20      # below 1.0 from step 20
    assert np.isnan(F.relative_convergence_step(steps, vals, 0.25))
    assert F.relative_convergence_step(steps, vals / 10, 0.5) == 20  # scale-free
    assert np.isnan(F.relative_convergence_step(steps, np.r_[0.0, vals[1:]], 0.5))


def test_censoring_at_the_budget_is_counted_and_pulls_toward_zero():
    trials = v2_sweep()
    for t in trials[:3]:           # the high frequency never halves: censored at the budget
        steps, _ = t["curves"]["freq/delta_k3"]
        t["curves"]["freq/delta_k3"] = (steps, np.ones(len(steps)))
    never = v2_trial(99, [None, 60.0, 200.0, None])      # both censored: d = 0
    table = make_table(trials + [never])
    c = F.trial_contrast(table, 0.5, 3).set_index("seed")
    assert c.loc[99, "d"] == 0.0 and c.loc[99, "censored_low"] and c.loc[99, "censored_high"]
    censored = c[c["censored_high"] & ~c["censored_low"]]
    assert len(censored) == 3 and (censored["t_high"] == STEPS0.max()).all()
    (v,) = high_after_low(table)
    assert v.details["censored_high"] == 4 and v.details["censored_both"] == 1 and v.n == 11


def test_failed_manipulation_checks_make_the_protocol_invalid():
    (close,) = high_after_low(make_table(v2_sweep(gap_bins=4)))      # plan asks 10 bins
    assert close.verdict == "invalid_protocol" and not close.details["checks"]["peaks_separated"]["passed"]
    raw = v2_sweep()
    raw[0]["params"]["probes.frequency_centring"] = "none"
    (v,) = high_after_low(make_table(raw))
    assert v.verdict == "invalid_protocol" and not v.details["checks"]["centred"]["passed"]
    stuck = v2_sweep()
    for t in stuck[:6]:            # the low frequency never halves in 6 of 10 trials
        steps, _ = t["curves"]["freq/delta_k0"]
        t["curves"]["freq/delta_k0"] = (steps, np.ones(len(steps)))
    (v,) = high_after_low(make_table(stuck))
    assert v.verdict == "invalid_protocol" and not v.details["checks"]["low_converges"]["passed"]


def test_v2_one_verdict_per_arm_with_holm_over_the_arms():
    trials = v2_sweep(arms=("mlp", "cnn1d")) + [
        {**t, "params": {**t["params"], "data.dataset": "digits", "model.name": "cnn2d"}}
        for t in v2_sweep("high_first")]
    fin = experiments.evaluate(["frequency.high_after_low"], make_table(trials),
                               {"frequency.high_after_low": FAST})
    assert [(v.name, v.verdict, v.n_family) for v in fin] == [
        ("frequency.high_after_low[digits/cnn2d]", "refuted", 3),
        ("frequency.high_after_low[mnist1d/cnn1d]", "supported", 3),
        ("frequency.high_after_low[mnist1d/mlp]", "supported", 3)]
    assert fin[0].p_adjusted == pytest.approx(3 * 2 / 1024)
    t = make_table(trials)
    assert isinstance(F.fig_contrast(t), Figure) and isinstance(F.fig_relative_curves(t), Figure)
    assert len(F.contrast_table(t)) == 30


@pytest.mark.parametrize("name", ["frequency_v2_pilot.yaml", "frequency_v2.yaml"])
def test_v2_specs_validate_and_pilot_seeds_are_not_reused(name):
    spec, pilot = load_spec(SPECS / name), load_spec(SPECS / "frequency_v2_pilot.yaml")
    assert spec.base.probes.frequency_min_sep == V2.options["min_sep_bins"]
    assert spec.base.probes.frequency_centring == V2.options["centring"]
    assert {(t.data.dataset, t.model.name) for t in spec.trials()} == {
        ("mnist1d", "mlp"), ("mnist1d", "cnn1d"), ("digits", "mlp"), ("digits", "cnn2d")}
    if name == "frequency_v2.yaml":
        assert spec.conjectures == ["frequency.high_after_low"]
        assert not set(spec.seeds) & set(pilot.seeds) and len(spec.seeds) >= max(10, V2.min_n)


@pytest.mark.slow
def test_v2_smoke_run_gives_a_verdict_per_arm(tmp_path):
    from test_sweeps import smoke_verdicts

    verdicts = smoke_verdicts(SPECS / "frequency_v2.yaml", tmp_path, timeout=600)
    assert sorted(v["name"] for v in verdicts) == [
        f"frequency.high_after_low[{a}]" for a in
        ("digits/cnn2d", "digits/mlp", "mnist1d/cnn1d", "mnist1d/mlp")]
    assert all(v["verdict"] for v in verdicts) and all(v["n"] >= 1 for v in verdicts)
