"""Frequency principle on constructed tables whose answer is known: Δ_F that
falls first at low frequencies -> supported, first at high ones -> refuted,
no Δ_F logged -> inconclusive with the reason; unreached thresholds handled
and counted; Kendall τ_b against scipy; every spec validates."""
from __future__ import annotations

import itertools
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
