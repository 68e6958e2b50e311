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


def sweep(order: str = "low_first", seeds=range(4), unreached_top: bool = False) -> list[dict]:
    rng = np.random.default_rng(0)
    base = [30.0, 120.0, 400.0, 900.0]
    if order == "high_first":
        base = base[::-1]
    out = []
    for arm, s in itertools.product(["mlp", "cnn1d"], seeds):
        rates = [r * float(np.exp(rng.normal(0, 0.1))) for r in base]
        if unreached_top:
            rates[-1] = None
        out.append(trial(s, rates, arm, rng))
    return out


def low_first(table, **kw):
    (v,) = experiments.conjecture("frequency.low_first")(table, **FAST, **kw)
    return v


# ------------------------------------------------------------ conjecture
@pytest.mark.parametrize("order,expected", [("low_first", "supported"), ("high_first", "refuted")])
def test_low_first(order, expected):
    v = low_first(make_table(sweep(order)))
    assert v.verdict == expected and v.n == 8
    assert v.statistic == pytest.approx(1.0 if order == "low_first" else -1.0)


@pytest.mark.parametrize("rule", ["last", "drop"])
def test_unreached_thresholds_are_handled_and_counted(rule):
    v = low_first(make_table(sweep(unreached_top=True)), unreached=rule)
    assert v.verdict == "supported" and v.statistic == pytest.approx(1.0)
    assert v.details["unreached_per_rank"] == {"k0": 0, "k1": 0, "k2": 0, "k3": 8}


def test_trials_where_nothing_converged_are_excluded_and_counted():
    never = [trial(s, [None] * 4) for s in range(3)]
    v = low_first(make_table(sweep() + never))
    assert v.verdict == "supported" and v.n == 8 and v.details["excluded_tau_undefined"] == 3


def test_arms_tracking_fewer_peaks_have_no_unreached_extras():
    three = [trial(s, [30.0, 120.0, 400.0], "sine") for s in range(4)]   # k3 not tracked
    v = low_first(make_table(sweep() + three))
    assert v.verdict == "supported" and v.n == 12 and v.statistic == pytest.approx(1.0)
    assert v.details["unreached_per_rank"]["k3"] == 0
    assert isinstance(F.fig_heatmap(make_table(sweep() + three)), Figure)


def test_missing_metric_is_inconclusive_with_reason():
    t = make_table([{"params": {}, "seed": 0, "curves": {"train/loss": ([1, 2], [1.0, 0.5])}}])
    v = low_first(t)
    assert v.verdict == "inconclusive" and "freq/delta_k" in v.details["reason"]


def test_too_few_trials_is_inconclusive():
    v = low_first(make_table(sweep(seeds=[0, 1])))
    assert v.verdict == "inconclusive" and "defined τ" in v.details["reason"]


# ------------------------------------------------------------ per trial
def test_convergence_step():
    assert F.convergence_step([1, 2, 3, 4], [0.5, 0.2, 0.05, 0.01], 0.1) == 3
    assert np.isnan(F.convergence_step([1, 2], [0.5, 0.2], 0.1))
    spike = ([1, 2, 3, 4, 5], [0.05, 0.5, 0.08, 0.3, 0.02])   # below at 1, for good only at 5
    assert F.convergence_step(*spike, 0.1, rule="first") == 1
    assert F.convergence_step(*spike, 0.1, rule="settled") == 5
    assert F.convergence_step([1, 2], [0.01, 0.02], 0.1) == 1
    assert np.isnan(F.convergence_step([1, 2], [0.01, 0.2], 0.1))


def test_first_crossing_rule_is_fooled_by_an_early_spike():
    trials = sweep()
    for t in trials:                      # every highest frequency dips below 0.1 at the first step
        steps, d = t["curves"]["freq/delta_k3"]
        t["curves"]["freq/delta_k3"] = (steps, np.r_[0.01, d[1:]])
    assert low_first(make_table(trials), rule="settled").verdict == "supported"
    assert low_first(make_table(trials), rule="first").statistic < 1.0


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
