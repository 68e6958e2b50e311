"""The verdict engine on constructed data whose answers are known by hand:
exact permutation p, Monte-Carlo p against a closed form, seed blocks,
the CI of the tested rho, Holm, analysis plans and every verdict kind."""
from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from sweeps.conjectures.plan import AnalysisPlan, Check, parse_window
from sweeps.conjectures.inference import sign_flip_test
from sweeps.conjectures.stats import (design, gehan_scores, holm, n_arrangements, spearman_mde,
                                      spearman_n_eff)
from sweeps.conjectures.verdict import (VERDICTS, TestResult, Verdict, compare_groups, decide,
                                        decide_with_reason, finalize, intersection_union,
                                        trend_test, verdict_of)


def plan(**kw) -> AnalysisPlan:
    base = dict(conjecture="demo.trend", statement="y rises with x", metric="final/val_acc",
                statistic="stratified_spearman", predicted_sign=+1, min_n=6, min_per_stratum=3,
                effect_of_interest=0.5,
                checks=(Check("arms_differ", "the arms reached different train accuracy"),))
    return AnalysisPlan(**{**base, **kw})


PASSED = {"arms_differ": (True, "train acc 0.76 vs 0.99")}


# ------------------------------------------------------------ exact p
def test_exact_p_equals_hand_enumeration():
    x = np.r_[1.0, 2, 3, 1, 2, 3]
    y = np.r_[0.3, 0.1, 0.9, 0.2, 0.8, 0.5]
    strata = np.r_[["a"] * 3, ["b"] * 3]
    r = trend_test(x, y, strata, n_boot=50)
    observed = np.mean([sps.spearmanr(x[:3], y[:3])[0], sps.spearmanr(x[3:], y[3:])[0]])
    null = [np.mean([sps.spearmanr(x[:3], pa)[0], sps.spearmanr(x[3:], pb)[0]])
            for pa in itertools.permutations(y[:3]) for pb in itertools.permutations(y[3:])]
    p = np.mean(np.abs(null) >= abs(observed) - 1e-12)
    assert len(null) == 36
    assert r.p_method == "exact" and r.n_perm == 36 and r.details["n_arrangements"] == 36
    assert r.statistic == pytest.approx(observed) and r.effect == r.statistic
    assert r.p_value == pytest.approx(p, abs=1e-12)
    assert math.isnan(r.p_mc_se)


def test_exact_difference_of_means_equals_hand_enumeration():
    a, b = np.r_[1.2, 0.4, 0.9, 1.5], np.r_[0.3, 0.8, 0.1]
    pooled = np.r_[a, b]
    obs = a.mean() - b.mean()
    null = [pooled[list(c)].mean() - np.delete(pooled, list(c)).mean()
            for c in itertools.combinations(range(7), 4)]
    r = compare_groups(a, b, n_boot=50)
    assert r.p_method == "exact" and r.n_perm == 35
    assert r.p_value == pytest.approx(np.mean(np.abs(null) >= abs(obs) - 1e-12), abs=1e-12)


def test_arrangement_count_is_the_product_of_multinomials():
    x = np.r_[1, 1, 2, 2, 3, 3, 1, 2, 3]         # stratum a: 6!/(2!2!2!) = 90; b: 3! = 6
    cells = design(9, np.r_[["a"] * 6, ["b"] * 3])
    assert n_arrangements(x, cells) == 90 * 6


def hypergeometric_p(k_obs: int, total: int = 20, ones: int = 10, drawn: int = 10) -> float:
    """Two-sided p of |K - E K| >= |k_obs - E K| for K ~ Hypergeometric: the exact
    permutation p of any statistic monotone in the ones among the drawn trials."""
    h = sps.hypergeom(total, ones, drawn)
    e = drawn * ones / total
    ks = np.arange(0, drawn + 1)
    return float(h.pmf(ks)[np.abs(ks - e) >= abs(k_obs - e) - 1e-12].sum())


def test_monte_carlo_above_the_exact_limit_matches_the_closed_form():
    # two levels of 10 trials, binary outcome with 8 of the 10 ones at the high level:
    # 20!/(10!10!) = 184 756 arrangements > 1e5, so Monte Carlo
    x = np.r_[np.zeros(10), np.ones(10)]
    y = np.r_[np.ones(2), np.zeros(8), np.ones(8), np.zeros(2)]
    exact = hypergeometric_p(8)
    r = trend_test(x, y, n_boot=50)
    assert r.p_method == "monte_carlo" and r.n_perm >= 20_000
    assert r.details["n_arrangements"] == 184_756
    assert r.p_mc_se == pytest.approx(math.sqrt(r.p_value * (1 - r.p_value) / r.n_perm))
    assert abs(r.p_value - exact) < 4 * r.p_mc_se + 1e-4
    g = compare_groups(y[10:], y[:10], n_boot=50)
    assert g.p_method == "monte_carlo" and abs(g.p_value - exact) < 4 * g.p_mc_se + 1e-4
    # 7 + 7 trials: 3432 arrangements, enumerated, equal to the closed form
    x7 = np.r_[np.zeros(7), np.ones(7)]
    y7 = np.r_[np.ones(2), np.zeros(5), np.ones(5), np.zeros(2)]
    r7 = trend_test(x7, y7, n_boot=50)
    assert r7.p_method == "exact" and r7.p_value == pytest.approx(hypergeometric_p(5, 14, 7, 7))


def test_same_table_same_p():
    x = np.tile([1.0, 2, 3, 4], 6)
    y = x + np.random.default_rng(0).normal(0, 3, 24)
    r1, r2 = trend_test(x, y, n_boot=100), trend_test(x, y, n_boot=100)
    assert r1.p_method == "monte_carlo" and (r1.p_value, r1.ci_low) == (r2.p_value, r2.ci_low)


# ------------------------------------------------------------ paired designs
def paired(noise: float = 0.05, seed: int = 0):
    """Six seeds x three levels; the seed (shared initialisation) moves y far more than x."""
    rng = np.random.default_rng(seed)
    seeds = np.repeat(np.arange(6), 3)
    level = np.tile([0.0, 1.0, 2.0], 6)
    y = 10 * rng.normal(size=6)[seeds] + 0.3 * level + noise * rng.normal(size=18)
    return level, y, seeds


def test_blocking_on_seeds_changes_the_p():
    x, y, seeds = paired()
    pooled = trend_test(x, y, n_boot=200)
    blocked = trend_test(x, y, blocks=seeds, n_boot=200)
    assert pooled.p_value > 0.2                        # seed noise swamps the trend
    assert blocked.p_method == "exact" and blocked.n_perm == 6 ** 6
    assert blocked.p_value == pytest.approx(2 / 6 ** 6)   # only all-up or all-down is as extreme
    assert blocked.details["n_cells"] == 6 and "within seed blocks" in blocked.details["test"]
    hi, lo = y[x == 2], y[x == 0]
    unpaired = compare_groups(hi, lo, n_boot=200)
    pairs = compare_groups(hi, lo, blocks_a=seeds[x == 2], blocks_b=seeds[x == 0], n_boot=200)
    assert unpaired.p_value > 0.5
    assert pairs.p_method == "exact" and pairs.n_perm == 2 ** 6
    assert pairs.p_value == pytest.approx(2 / 2 ** 6)     # sign flips of six paired differences
    assert pairs.ci_low > 0 and unpaired.ci_low < 0


# ------------------------------------------------------------ the CI
def test_ci_is_of_the_tested_rho_at_its_stated_level():
    for blocks, noise in ((None, 0.05), (True, 0.5)):
        x, y, seeds = paired(noise, seed=3)
        y = y - 10 * np.repeat(np.random.default_rng(3).normal(size=6), 3) if blocks is None else y
        r = trend_test(x, y, blocks=seeds if blocks else None, n_boot=500)
        assert r.ci_low <= r.statistic <= r.ci_high and -1 <= r.ci_low and r.ci_high <= 1
        assert r.ci_level == 0.95 and r.effect == r.statistic
    r90 = trend_test(x, y, blocks=seeds, n_boot=500, ci_level=0.9)
    assert r90.ci_level == 0.9 and r90.ci_high - r90.ci_low <= r.ci_high - r.ci_low
    one_sided = compare_groups([1.0, 1.2, 0.9], [0.5, 0.4, 0.6], alternative="greater", n_boot=100)
    assert one_sided.ci_level == pytest.approx(0.9)    # its lower end is the one-sided 95% bound


# ------------------------------------------------------------ multiplicity
def test_holm_textbook_example():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # a registered test that could not be computed counts in m as p = 1
    out = holm([0.02, float("nan"), 0.5])
    assert out[0] == pytest.approx(0.06) and math.isnan(out[1]) and out[2] == pytest.approx(1.0)
    assert holm([0.3, 0.4]) == pytest.approx([0.6, 0.6])      # made non-decreasing
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])      # capped at 1


def result(rho: float, p: float, n: int = 40, n_eff: float = 40.0) -> TestResult:
    return TestResult(rho, rho, rho - 0.2, rho + 0.2, p, n, {}, p_method="exact", n_perm=100,
                      ci_level=0.95, n_eff=n_eff, min_stratum=n)


def test_finalize_adjusts_within_families():
    pl = {name: plan(conjecture=f"demo.{name}", family="demo", min_n=6)
          for name in ("a", "b", "c", "d")}
    other = plan(conjecture="other.e")
    raw = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005}
    vs = [verdict_of(pl[k], result(0.6, p), checks=PASSED) for k, p in raw.items()]
    vs.append(verdict_of(other, result(0.6, 0.04), checks=PASSED))
    assert all(v.verdict == "supported" and v.n_family == 1 for v in vs)
    out = finalize(vs, [*pl.values(), other])
    got = {v.name: v for v in out}
    assert [got[f"demo.{k}"].p_adjusted for k in "abcd"] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [got[f"demo.{k}"].p_raw for k in "abcd"] == pytest.approx(list(raw.values()))
    assert got["demo.a"].verdict == "supported" and got["demo.a"].p_value == pytest.approx(0.03)
    assert got["demo.a"].reason.startswith("adj p=0.03 < 0.05 (Holm over 4)")
    assert got["demo.b"].verdict != "supported" and "(Holm over 4)" in got["demo.b"].reason
    assert got["other.e"].verdict == "supported" and got["other.e"].n_family == 1
    assert [v.verdict for v in finalize(out)] == [v.verdict for v in out]   # idempotent
    with pytest.raises(ValueError, match="not among the given plans"):
        finalize(vs, [other])


# ------------------------------------------------------------ plans
def test_plan_hash_json_and_overrides():
    p = plan(window="until_train_acc>=0.65", exclusions=["diverged", "non_training"],
             options={"peak_eps": 0.05})
    assert p.hash() == plan(window="until_train_acc>=0.65", exclusions=("diverged", "non_training"),
                            options={"peak_eps": 0.05}).hash()
    assert len(p.hash()) == 12 and p.hash() != plan().hash()
    d = json.loads(json.dumps(p.to_dict()))
    assert AnalysisPlan.from_dict(d) == p and AnalysisPlan.from_dict(d).hash() == p.hash()
    w = p.parsed_window
    assert (w.kind, w.metric, w.op, w.value) == ("until", "train_acc", ">=", 0.65)
    assert w.holds(0.7) and not w.holds(0.6) and str(w) == "until_train_acc>=0.65"
    assert str(parse_window("after_breakeven")) == "after_breakeven"
    for bad in ("sometimes", "until_acc=0.5", "until_>=1"):
        with pytest.raises(ValueError):
            parse_window(bad)
    with pytest.raises(ValueError):
        plan(statistic="t_test")
    with pytest.raises(ValueError):
        plan(predicted_sign=0)
    ex = p.with_overrides(window="whole_run")
    assert ex.exploratory and ex.registered_hash == p.hash() and ex.hash() != p.hash()
    assert ex.with_overrides(alpha=0.01).registered_hash == p.hash()   # still the registered one
    v = verdict_of(ex, result(0.6, 0.001), checks=PASSED)
    assert v.exploratory and v.plan_hash == ex.hash() and v.registered_hash == p.hash()
    assert "EXPLORATORY" in v.summary()
    reg = verdict_of(p, result(0.6, 0.001), checks=PASSED)
    assert not reg.exploratory and reg.plan_hash == reg.registered_hash == p.hash()


# ------------------------------------------------------------ the rules
def test_failed_or_missing_manipulation_check_is_invalid_protocol():
    failed = {"arms_differ": (False, "train acc 0.76 vs 0.99")}
    v = verdict_of(plan(), result(0.6, 0.001), checks=failed)
    assert v.verdict == "invalid_protocol"
    assert v.reason == "manipulation check arms_differ failed: train acc 0.76 vs 0.99"
    assert v.details["checks"]["arms_differ"]["passed"] is False
    assert verdict_of(plan(), result(0.6, 0.001)).verdict == "invalid_protocol"      # not evaluated
    with pytest.raises(ValueError, match="not in the plan"):
        verdict_of(plan(), result(0.6, 0.001), checks={**PASSED, "other": (True, "")})


def test_too_few_trials_is_underpowered():
    v = verdict_of(plan(min_n=10), result(0.9, 0.001, n=4), checks=PASSED)
    assert v.verdict == "underpowered" and v.reason == "n=4 < min 10"
    small = TestResult(0.9, 0.9, 0.5, 1.0, 0.001, 20, {}, n_eff=10, min_stratum=2)
    v = verdict_of(plan(min_per_stratum=3), small, checks=PASSED)
    assert v.verdict == "underpowered" and v.reason == "smallest stratum 2 < min 3 per stratum"
    none = verdict_of(plan(), None, checks=PASSED, n=2, reason="only 2 trials passed their peak")
    assert none.verdict == "underpowered" and none.n == 2
    assert none.reason == "n=2 < min 6 (only 2 trials passed their peak)"
    flat = verdict_of(plan(min_n=1, min_per_stratum=1), trend_test(np.ones(5), np.arange(5.0)),
                 checks=PASSED)
    assert flat.verdict == "underpowered"         # no trial entered a usable stratum
    assert flat.reason == "n=0 < min 1 (no stratum with >= 3 trials and >= 2 levels)"


def test_decide_uses_the_tested_effects_sign():
    assert decide(0.01, -0.3, -1) == "supported" and decide(0.01, 0.3, -1) == "refuted"
    # non-inferiority: a - b = -0.005 against a margin of 0.01 is a tested effect of +0.005
    ni = TestResult(-0.005, -0.005, -0.008, -0.002, 0.001, 12, {}, null_value=-0.01, se=0.001)
    assert ni.tested_effect == pytest.approx(0.005)
    v = verdict_of(plan(statistic="non_inferiority", effect_of_interest=0.01), ni, checks=PASSED)
    assert v.verdict == "supported", v.reason
    # a statistic and an effect of opposite signs: the verdict follows the tested effect
    kind, why = decide_with_reason(0.01, 0.2, -1)
    assert kind == "refuted" and "opposite sign" in why


def test_every_kind_reachable_with_a_reason():
    rng = np.random.default_rng(1)
    x = np.repeat([1.0, 2, 3, 4], 30)
    cases = {"supported": (x, x + rng.normal(0, 1, 120), {}),
             "negligible": (x, 0.3 * x + rng.normal(0, 1, 120), {}),
             "refuted": (x, -x + rng.normal(0, 1, 120), {}),
             "inconclusive": (x, rng.normal(0, 1, 120), {}),
             "underpowered": (x[::10], rng.normal(0, 1, 12), {"min_n": 6}),
             "invalid_protocol": (x, x, {"checks": (Check("arms_differ", "…"),)})}
    seen = {}
    for kind, (xs, ys, kw) in cases.items():
        r = trend_test(xs, ys, n_perm=2000, n_boot=200)
        checks = {"arms_differ": (kind != "invalid_protocol", "train acc 0.76 vs 0.99")}
        v = verdict_of(plan(**kw), r, checks=checks)
        seen[kind] = v
        assert v.verdict == kind, (kind, v.summary())
        assert v.reason and "\n" not in v.reason
    assert "no effect detected at adequate power" in seen["inconclusive"].reason
    assert "minimum detectable effect" in seen["underpowered"].reason
    assert set(VERDICTS) == set(seen)


def test_minimum_detectable_rho():
    assert spearman_n_eff([40]) == pytest.approx(40)
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    assert spearman_mde(40, 0.05) == pytest.approx(math.tanh(z * math.sqrt(1.06 / 37)))
    assert spearman_mde(3, 0.05) == 1.0
    assert spearman_n_eff([9, 9]) == pytest.approx(17)    # 1 + 1 / (2 * 0.25 / 8)


def test_verdict_is_backwards_compatible_and_json_complete():
    v = Verdict("x", "s", "supported", 0.5, 0.5, 0.1, 0.9, 0.01, 10, {"alpha": 0.05})
    assert v.p_raw == v.p_adjusted == 0.01 and v.reason == "p=0.01 < 0.05"
    d = json.loads(json.dumps(verdict_of(plan(), result(0.6, 0.001), checks=PASSED).to_dict()))
    for f in ("name", "statement", "verdict", "statistic", "effect", "ci_low", "ci_high", "p_value",
              "n", "details", "reason", "p_raw", "p_adjusted", "p_method", "n_perm", "p_mc_se",
              "ci_level", "family", "n_family", "plan_hash", "registered_hash", "exploratory"):
        assert f in d
    assert d["details"]["plan"]["conjecture"] == "demo.trend"
    with pytest.raises(ValueError):
        Verdict("x", "s", "maybe")


def test_intersection_union():
    before = compare_groups([0.62, 0.63, 0.61, 0.62], [0.45, 0.46, 0.44, 0.45], n_boot=50)
    after = compare_groups([0.72, 0.71, 0.73, 0.72], [0.82, 0.81, 0.83, 0.82], n_boot=50)
    both = intersection_union([before, after], [+1, -1])
    assert both.statistic > 0 and both.p_value == max(before.p_value, after.p_value)
    assert verdict_of(plan(statistic="intersection_union", min_n=4, effect_of_interest=0.05), both,
                 checks=PASSED).verdict == "supported"
    with pytest.raises(ValueError, match="names stratified_spearman"):
        verdict_of(plan(), both, checks=PASSED)
    with pytest.raises(ValueError, match="names non_inferiority"):
        verdict_of(plan(statistic="non_inferiority"), before, checks=PASSED)
    reversed_ = intersection_union([before, after], [+1, +1])
    assert reversed_.statistic < 0 and reversed_.p_value == pytest.approx(2 * after.p_value)
    assert len(reversed_.details["parts"]) == 2


# ------------------------------------------------- one-sample statistics
def test_sign_flip_exact_p_equals_hand_enumeration():
    from sweeps.conjectures.inference import sign_flip_test
    d = np.r_[0.4, -0.1, 0.3, 0.2, 0.5]
    null = [np.mean(np.array(s) * d) for s in itertools.product((1, -1), repeat=5)]
    # |sum| >= 1.3 = 1.5 - 2 x 0.1: the flipped magnitudes must sum to <= 0.1, so none or
    # only 0.1 is flipped, or the mirror of either: 4 of the 32 patterns
    p = np.mean(np.abs(null) >= abs(d.mean()) - 1e-12)
    assert p == pytest.approx(4 / 32)
    r = sign_flip_test(d, n_boot=200)
    assert r.p_method == "exact" and r.n_perm == 32 and r.details["n_arrangements"] == 32
    assert r.p_value == pytest.approx(4 / 32) and r.statistic == pytest.approx(0.26)
    assert r.ci_level == 0.95 and r.ci_low <= r.statistic <= r.ci_high and math.isnan(r.p_mc_se)
    assert r.se == pytest.approx(d.std(ddof=1) / math.sqrt(5))
    # all six positive: only the identity and its mirror reach |mean|: p = 2/64
    six = sign_flip_test([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], n_boot=50)
    assert six.p_value == pytest.approx(2 / 64) and six.statistic == pytest.approx(0.35)
    assert sign_flip_test([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], alternative="greater",
                          n_boot=50).p_value == pytest.approx(1 / 64)
    assert sign_flip_test([1.0, np.nan]).details["reason"] == "fewer than 2 trials"


def test_sign_flip_ci_is_clipped_to_the_range_the_contrast_can_take():
    """Eight Kendall τ near 1 (sine1d's frequency ordering): the t interval
    reaches past 1, which no mean of τ can; clipped, it ends at 1 and says so.
    Inside the bounds nothing changes."""
    from sweeps.conjectures.inference import sign_flip_test
    from sweeps.conjectures.stats import t_interval
    tau = np.r_[1, 1, 1, 1, 0.6, 1, 0.8, 0.93]
    lo, hi = t_interval(tau, 0.95)
    assert hi > 1
    r = sign_flip_test(tau, bounds=(-1.0, 1.0))
    assert (r.ci_low, r.ci_high) == (pytest.approx(lo), 1.0)
    assert r.details["ci_method"] == "t interval of the mean, clipped to [-1, 1]"
    inside = sign_flip_test(tau - 0.5, bounds=(-1.0, 1.0))
    assert inside.details["ci_method"] == "t interval of the mean"
    assert (inside.ci_low, inside.ci_high) == pytest.approx((lo - 0.5, hi - 0.5))


def test_sign_flip_monte_carlo_above_the_exact_limit():
    from sweeps.conjectures.inference import sign_flip_test
    d = np.random.default_rng(3).normal(0.3, 1, 40)
    r = sign_flip_test(d, n_perm=4000, n_boot=200)
    exact = sign_flip_test(d[:12], n_boot=50)
    assert exact.p_method == "exact"
    assert r.p_method == "monte_carlo" and r.n_perm == 4000 and r.p_mc_se > 0
    # the sign-flip null of the mean is close to normal with sd sqrt(sum d^2) / n
    z = abs(d.mean()) / (math.sqrt((d ** 2).sum()) / len(d))
    assert r.p_value == pytest.approx(2 * sps.norm.sf(z), abs=4 * r.p_mc_se + 0.01)


# ------------------------------------------------------------ equivalence
def test_equivalence_is_two_one_sided_sign_flip_tests_by_hand():
    """Inside the margin p is the larger one-sided p; both sides of five values
    within ±1 of a mean near 0 are all-positive (all-negative) after the shift:
    only the identity pattern reaches them, p = 1/32 each. Beyond the margin the
    one-sided p of that side, doubled."""
    from sweeps.conjectures.inference import equivalence_test
    from sweeps.conjectures.stats import t_interval
    d = np.r_[0.1, -0.1, 0.2, -0.2, 0.05]
    r = equivalence_test(d, 1.0)
    assert r.details["p_lower"] == pytest.approx(1 / 32) == r.details["p_upper"]
    assert r.p_value == pytest.approx(1 / 32) and r.p_method == "exact"
    assert r.statistic == pytest.approx(1.0 - 0.01) and r.effect == pytest.approx(0.01)
    assert r.tested_effect > 0 and r.sides == 1 and r.ci_level == pytest.approx(0.9)
    assert (r.ci_low, r.ci_high) == pytest.approx(t_interval(d, 0.9))
    # a mean near the upper margin: the upper test decides (its p is the larger)
    near = equivalence_test(np.r_[0.9, 0.95, 0.5, 1.2, 0.7], 1.0)
    assert near.p_value == near.details["p_upper"] > near.details["p_lower"]
    far = equivalence_test(np.r_[2.0, 2.1, 1.9, 2.2, 1.8, 2.05], 1.0)
    assert far.details["p_beyond"] == pytest.approx(1 / 64) and far.p_value == pytest.approx(2 / 64)
    assert far.statistic == pytest.approx(1.0 - far.effect) and far.tested_effect < 0
    assert equivalence_test(-np.r_[2.0, 2.1, 1.9, 2.2, 1.8, 2.05], 1.0).p_value == pytest.approx(2 / 64)
    with pytest.raises(ValueError, match="margin must be > 0"):
        equivalence_test(d, 0.0)
    assert equivalence_test([0.1, np.nan], 1.0).details["reason"] == "fewer than 2 units"


def test_equivalence_verdicts_under_a_plan():
    """Shown within the margin: supported; beyond it: refuted; a margin the data
    cannot resolve: underpowered. The margin is the plan's effect of interest, and a
    result of another test or margin is refused."""
    from sweeps.conjectures.inference import equivalence_test
    eq = plan(conjecture="demo.matches", statement="sparse matches dense", statistic="equivalence",
              effect_of_interest=1.0, checks=(), min_per_stratum=1)
    inside = verdict_of(eq, equivalence_test(np.r_[0.1, -0.1, 0.2, -0.2, 0.05, 0.0], 1.0))
    assert inside.verdict == "supported" and inside.details["rule"]["reach"] is None
    beyond = verdict_of(eq, equivalence_test(np.r_[2.0, 2.1, 1.9, 2.2, 1.8, 2.05], 1.0))
    assert beyond.verdict == "refuted"
    noisy = np.random.default_rng(0).normal(0, 5, 6)
    assert verdict_of(eq, equivalence_test(noisy, 1.0)).verdict == "underpowered"
    with pytest.raises(ValueError, match="margin is its effect of interest"):
        verdict_of(eq, equivalence_test(noisy, 0.5))
    with pytest.raises(ValueError, match="names paired_sign_flip"):
        verdict_of(plan(statistic="paired_sign_flip", checks=()), equivalence_test(noisy, 1.0))
    with pytest.raises(ValueError, match="names equivalence"):
        verdict_of(eq, sign_flip_test(noisy))


def test_sign_test_exact_binomial_p_and_clopper_pearson():
    from sweeps.conjectures.inference import sign_test
    r = sign_test([True] * 9 + [False])
    # P(K >= 9) + P(K <= 1) for K ~ Bin(10, 1/2): (1 + 10 + 10 + 1) / 1024
    assert r.p_value == pytest.approx(22 / 1024) and r.p_method == "exact"
    assert r.statistic == pytest.approx(0.9) and r.effect == pytest.approx(0.4)
    assert r.tested_effect == pytest.approx(0.4) and r.null_value == 0.5
    # Clopper–Pearson: the lower end solves P(K >= 9 | p) = 0.025
    lo = sps.beta.ppf(0.025, 9, 2)
    assert r.ci_low == pytest.approx(lo) and r.ci_high == pytest.approx(sps.beta.ppf(0.975, 10, 1))
    assert sign_test([1, 1, 1, 1, 1, 1]).p_value == pytest.approx(2 / 64)
    assert sign_test([True, None, float("nan"), False]).details["n_dropped_missing"] == 2
    assert math.isnan(sign_test([]).p_value)


def test_new_statistics_judged_under_their_plans():
    from sweeps.conjectures.inference import magnitude, sign_flip_test, sign_test
    flip = plan(statistic="paired_sign_flip", checks=(), effect_of_interest=0.1)
    v = verdict_of(flip, sign_flip_test([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], n_boot=50))
    assert v.verdict == "supported" and v.p_raw == pytest.approx(2 / 64)
    bino = plan(statistic="sign_test", checks=(), min_n=10, effect_of_interest=0.25)
    assert verdict_of(bino, sign_test([False] * 10)).verdict == "refuted"
    assert verdict_of(bino, sign_test([True] * 6)).verdict == "underpowered"
    with pytest.raises(ValueError, match="names sign_test"):
        verdict_of(bino, sign_flip_test([0.1, 0.2, 0.3], n_boot=20))
    # magnitude: a significant fall reads as a change (supported), never refuted
    x = np.repeat([1.0, 2.0, 3.0, 4.0], 3)
    falls = trend_test(x, -x + np.arange(12) * 1e-3, n_boot=100)
    m = magnitude(falls)
    assert m.statistic == pytest.approx(abs(falls.statistic)) and m.p_value == falls.p_value
    assert m.details["direction"] == -1 and m.ci_low >= 0 and m.ci_high <= 1
    assert verdict_of(plan(checks=()), m).verdict == "supported"
    assert verdict_of(plan(checks=()), falls).verdict == "refuted"
    with pytest.raises(ValueError, match="two-sided"):
        magnitude(compare_groups([1, 2, 3], [0, 1, 2], alternative="greater", n_boot=10))


# ------------------------------------------- effect of interest, Holm's m, CIs
def test_significant_but_below_the_effect_of_interest_is_negligible():
    # 16 contrasts all near +0.04: the exact sign-flip p is 2 / 2^16, the CI about [0.035, 0.045]
    d = 0.04 + np.linspace(-0.01, 0.01, 16)
    r = sign_flip_test(d)
    assert r.p_value == pytest.approx(2 / 2 ** 16) and 0.03 < r.ci_low < r.ci_high < 0.05
    small = plan(statistic="paired_sign_flip", effect_of_interest=0.1, checks=())
    v = verdict_of(small, r)
    assert v.verdict == "negligible" and "of interest" in v.reason, v.summary()
    assert verdict_of(plan(statistic="paired_sign_flip", effect_of_interest=0.03, checks=()),
                 r).verdict == "supported"
    # the predicted side only: the same effect against a predicted fall is refuted
    assert verdict_of(dataclasses.replace(small, predicted_sign=-1), r).verdict == "refuted"
    # a margin is the effect of interest of a non-inferiority test: exempt
    ni = compare_groups(d, np.zeros(16), blocks_a=range(16), blocks_b=range(16), shift=0.02,
                        alternative="greater")
    assert verdict_of(plan(statistic="non_inferiority", effect_of_interest=0.1, checks=()),
                 ni).verdict == "supported"


def test_intersection_union_is_negligible_when_one_part_cannot_reach():
    seeds = np.arange(12)
    big = compare_groups(np.linspace(1.0, 1.2, 12), np.zeros(12), blocks_a=seeds, blocks_b=seeds)
    tiny = compare_groups(-np.linspace(0.01, 0.02, 12), np.zeros(12), blocks_a=seeds,
                          blocks_b=seeds)
    iu = intersection_union([big, tiny], [+1, -1])
    p = plan(statistic="intersection_union", effect_of_interest=0.5, checks=())
    assert iu.p_value < 0.05 and verdict_of(p, iu).verdict == "negligible"
    assert verdict_of(dataclasses.replace(p, effect_of_interest=0.01), iu).verdict == "supported"


def test_a_test_that_cannot_be_computed_keeps_its_place_in_holm():
    pl = {k: plan(conjecture=f"demo.{k}", family="demo", checks=()) for k in "abc"}
    vs = [verdict_of(pl["a"], result(0.9, 0.01)), verdict_of(pl["b"], result(0.9, 0.02)),
          verdict_of(pl["c"], None, n=12, reason="the metric was never logged")]
    out = finalize(vs, pl.values())
    assert [v.n_family for v in out] == [3, 3, 3]
    assert out[0].p_adjusted == pytest.approx(0.03) and out[1].p_adjusted == pytest.approx(0.04)
    assert math.isnan(out[2].p_adjusted) and out[2].verdict == "inconclusive"
    assert out[2].reason == ("the metric was never logged; counted as p = 1 in Holm's "
                             "family of 3")
    assert [v.reason for v in finalize(out)] == [v.reason for v in out]     # idempotent


def test_gehan_scores_and_the_censored_trend_by_hand():
    t = np.r_[1.0, 3, 4, 4, 6]
    c = np.r_[False, True, False, True, False]
    # i outlasts j surely when j's event came first (or at i's censoring time):
    # 1: outlasted by all four -> -4; 3+: outlasts 1 -> +1; 4: outlasts 1, outlasted by 4+ and 6
    # -> -1; 4+: outlasts 1 and 4 -> +2; 6: outlasts 1 and 4 -> +2
    assert gehan_scores(t, c).tolist() == [-4, 1, -1, 2, 2]
    assert gehan_scores(t, np.zeros(5, bool)).tolist() == [-4, -2, 1, 1, 4]   # 2·midrank − 6
    x = np.arange(1.0, 6)
    r = trend_test(x, t, censored=c)
    assert r.statistic == pytest.approx(13 / math.sqrt(260))      # ranks of x · scores
    assert trend_test(x, t).statistic == pytest.approx(9.5 / math.sqrt(95))   # Spearman
    null = [np.corrcoef(x, np.r_[-4, 1, -1, 2, 2][list(q)])[0, 1]
            for q in itertools.permutations(range(5))]
    assert r.p_method == "exact" and r.p_value == pytest.approx(
        np.mean(np.abs(null) >= 13 / math.sqrt(260) - 1e-12))
    # nothing censored: exactly Spearman's test
    same = trend_test(x, t, censored=np.zeros(5, bool))
    assert same.statistic == pytest.approx(9.5 / math.sqrt(95))
    assert r.details["censored_per_level"] == {"1": 0, "2": 1, "3": 0, "4": 1, "5": 0}
    v = verdict_of(plan(statistic="censored_trend", min_n=5, checks=()), r)
    assert "censored at the budget per level: 1: 0, 2: 1, 3: 0, 4: 1, 5: 0" in v.reason


def test_the_censored_trend_interval_is_over_seed_blocks():
    # 2 strata x 3 seeds x 3 levels; seed 2 runs long in both strata, so its times are
    # censored at the budget (6) there: its two cells move together
    x = np.tile([1.0, 2, 3], 6)
    stratum = np.repeat([0, 1], 9)
    seed = np.tile(np.repeat([0, 1, 2], 3), 2)
    t = np.r_[1, 2, 3, 2, 1, 3, 5, 6, 6, 1, 3, 2, 1, 2, 3, 4, 6, 6.0]
    c = t >= 6
    r = trend_test(x, t, stratum, blocks=seed, censored=c)
    rho = np.array(r.details["rho_per_cell"])                  # cells: stratum-major
    cell_seed = np.tile([0, 1, 2], 2)
    v = np.array([rho[cell_seed == b].mean() for b in range(3)])   # cells of equal size
    mean, se = v.mean(), v.std(ddof=1) / math.sqrt(3)
    half = sps.t.ppf(0.975, 2) * se / (1 - mean ** 2)          # on Fisher's z
    assert r.statistic == pytest.approx(mean)
    assert (r.ci_low, r.ci_high) == pytest.approx(
        (math.tanh(math.atanh(mean) - half), math.tanh(math.atanh(mean) + half)))
    assert r.details["ci_method"] == "t interval over the 3 seed blocks, on Fisher's z"
    # not censored: the cells are independent units (a common shift leaves the ranks alone)
    assert "over the 6 cells" in trend_test(x, t, stratum, blocks=seed).details["ci_method"]


def test_no_interval_of_zero_width_is_ever_printed():
    # cells of 2 all rising: the mean rho is 1 in every resample, yet the interval is honest
    x = np.tile([0.0, 1.0], 8)
    seeds = np.repeat(np.arange(8), 2)
    r = trend_test(x, x + seeds, blocks=seeds)
    lo8 = sps.beta.ppf(0.025, 8, 1)                        # Clopper–Pearson of 8 of 8
    assert r.ci_high == 1 and r.ci_low == pytest.approx(2 * lo8 - 1) and r.ci_low < 1
    # every contrast equal, or constant groups: no interval at all
    flat = sign_flip_test(np.full(8, 0.5))
    assert math.isnan(flat.ci_low) and math.isnan(flat.ci_high)
    same = compare_groups([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    assert math.isnan(same.ci_low)
    v = verdict_of(plan(statistic="paired_sign_flip", min_n=2, checks=()), flat)
    assert "[no CI]" in v.summary() and "nan" not in v.summary().split("(")[0]
    for res in (r, trend_test(x, x, blocks=seeds), sign_flip_test(np.r_[1.0, 1.0, 2.0])):
        assert not (np.isfinite(res.ci_low) and res.ci_low == res.ci_high)
    # five cells with one rho that is not ±1 (critical periods' removal arms: −0.943 in each)
    # leave a spread of rounding behind the weighted mean: still no interval
    levels = np.tile([0.0, 5, 10, 20, 30, 40], 5)
    cell = np.repeat(np.arange(5), 6)
    y = np.tile([0.89, 0.88, 0.87, 0.84, 0.85, 0.78], 5) + cell
    same_rho = trend_test(levels, y, blocks=cell)
    assert same_rho.statistic == pytest.approx(-0.943, abs=1e-3)
    assert math.isnan(same_rho.ci_low) and math.isnan(same_rho.ci_high)


def test_strata_below_the_plan_minimum_are_excluded_before_the_test():
    rng = np.random.default_rng(4)
    x = np.r_[np.tile([1.0, 2, 3, 4], 3), 1.0, 2.0]
    strata = np.array(["a"] * 4 + ["b"] * 4 + ["c"] * 4 + ["thin"] * 2)
    y = x + rng.normal(0, 0.1, x.size)
    r = trend_test(x, y, strata)
    assert r.min_stratum == 4 and r.details["n_dropped_small_strata"] == 2   # < 3: no info
    x2 = np.r_[x, 3.0]
    y2, s2 = np.r_[y, 3.1], np.append(strata, "thin")
    raw = trend_test(x2, y2, s2)
    assert raw.min_stratum == 3
    v = verdict_of(plan(min_per_stratum=4, checks=()), raw)
    assert v.n == 12 and v.details["excluded_strata"] == {"thin": 3}
    assert "1 strata (3 trials) below the plan's minimum of 4 per stratum excluded" in v.reason
    assert v.verdict == "supported", v.summary()
