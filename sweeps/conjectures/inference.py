"""The tests a conjecture runs: each returns a `TestResult` whose CI is of the
quantity its p tests.

- `trend_test(x, y, strata, blocks=seed)`: does y rise or fall with x,
  holding the other factors fixed? Size-weighted mean Spearman rho within
  strata (within (stratum, seed) cells in a paired design), permutation p
  within cells, CI of the same mean rho (t over cells, Clopper–Pearson when
  every cell is at ±1, Fisher z without blocks). With `censored` (plan
  statistic `censored_trend`): right-censored times, Gehan scores within
  cells, CI a t over seed blocks (a seed moves the share censored in all its
  cells).
- `compare_groups(a, b)`: difference of means, optionally paired by seed
  blocks or against a non-inferiority margin; permutation p, t CI of the
  difference (Welch; paired: over the within-block differences).
- `intersection_union(parts, signs)`: "every part goes its predicted way" as
  one test, refuted by any significant reversal.
- `sign_flip_test(d)` (plan statistic `paired_sign_flip`): is the mean of
  per-trial contrasts (paired differences, or a per-trial statistic that is
  symmetric about 0 under H0) nonzero? Sign-flip permutation p (exact over
  all 2^n sign patterns when 2^n <= `MAX_EXACT`, else Monte Carlo with its
  SE), t CI of the mean.
- `equivalence_test(d, margin)` (plan statistic `equivalence`): does the mean
  of per-unit contrasts lie within ±margin? Two one-sided sign-flip tests
  (TOST), t CI of the mean at 1 − 2 alpha; a mean significantly beyond the
  margin refutes.
- `sign_test(outcomes)` (plan statistic `sign_test`): is the share of trials
  with an outcome different from p0 (1/2)? Exact binomial p, Clopper–Pearson
  CI of the share.
- `magnitude(result)`: a two-sided test read as "the quantity changes" (its
  direction reported, not predicted): the tested effect becomes |effect|,
  so no significant result can refute; judge it with predicted sign +1.

No interval of zero width is ever returned: where the data cannot show any
spread (every cell the same, one trial per group) the CI is NaN, printed as
"-". The coverage of every interval, and the type-I error and power of every
test, are measured by benchmarks/calibrate_engine.py (docs/science.md).

The permutation, interval and power machinery is `stats.py`; the verdict a
result leads to under its plan is `verdict.verdict_of`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from scipy import stats

from sweeps.conjectures.stats import (ALPHA, MAX_EXACT, N_BOOT, N_PERM, NO_CI, POWER, _tail,
                                      design, fisher_interval, gehan_scores, honest,
                                      minimum_detectable, permutation_p, share_interval,
                                      spearman_n_eff, t_interval)


@dataclass(frozen=True)
class TestResult:
    """A tested statistic with its permutation p and a CI of the same quantity.

    The tested effect is `statistic - null_value` (0 except against a
    non-inferiority margin). `n_eff` (Spearman) or `se` (differences) give
    the minimum detectable effect (`mde`); `min_stratum` is the smallest
    stratum (group) that entered the test.
    """

    statistic: float
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    details: dict[str, Any] = field(default_factory=dict)
    p_method: str = ""
    n_perm: int = 0
    p_mc_se: float = math.nan
    ci_level: float = math.nan
    null_value: float = 0.0
    n_eff: float = math.nan
    se: float = math.nan
    sides: int = 2
    min_stratum: int | None = None
    # the same test again with other keyword arguments (e.g. `min_per_stratum`); not data
    rerun: Callable[..., "TestResult"] | None = field(default=None, repr=False, compare=False)

    __test__ = False    # not a pytest class

    @property
    def tested_effect(self) -> float:
        return self.statistic - self.null_value

    def mde(self, alpha: float = ALPHA, power: float = POWER) -> float:
        """Minimum detectable |tested effect| at level alpha with `power`."""
        return minimum_detectable(self.n_eff, self.se, alpha, self.sides, power)


def _perm_fields(perm: Any) -> dict[str, Any]:
    return {"p_method": perm.method, "n_perm": perm.n_perm,
            "p_mc_se": perm.mc_se if perm.method == "monte_carlo" else math.nan}


def _rank_corr_rows(x: np.ndarray, y: np.ndarray, rank_y: bool = True) -> np.ndarray:
    """Pearson correlation of the ranks of x with the ranks of y (Spearman rho), or with y
    itself when `rank_y` is False (y already scores), along the last axis; 0 where undefined."""
    rx = stats.rankdata(x, axis=-1) - (x.shape[-1] + 1) / 2
    ry = (stats.rankdata(y, axis=-1) - (y.shape[-1] + 1) / 2 if rank_y
          else y - y.mean(-1, keepdims=True))
    num = (rx * ry).sum(-1)
    den = np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return rho


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho along the last axis (rows are independent samples); 0 where undefined."""
    return _rank_corr_rows(x, y)


def _extreme_diff(x: np.ndarray, y: np.ndarray) -> float:
    """Mean y at the largest x minus mean y at the smallest x."""
    return float(y[x == x.max()].mean() - y[x == x.min()].mean())


def _bounded_t(rho: np.ndarray, sizes: np.ndarray, level: float) -> tuple[float, float]:
    """t interval of the weighted mean rho, built on z = atanh(mean) and mapped back.

    A mean of bounded cell rho is skewed near ±1 and its spread shrinks with
    it, so a symmetric t interval misses the true value from the far side;
    on Fisher's scale (SE_z = SE / (1 − mean²), the delta method) the
    interval bends away from the bound (calibrated: benchmarks/calibrate_engine.py).
    """
    lo, hi = t_interval(rho, level, sizes)
    if not np.isfinite(lo):
        return NO_CI
    mean, half = (lo + hi) / 2, (hi - lo) / 2
    if not abs(mean) < 1:
        return NO_CI
    z, half_z = math.atanh(mean), half / (1 - mean ** 2)
    return honest((math.tanh(z - half_z), math.tanh(z + half_z)))


def _cells_ci(rho: np.ndarray, sizes: np.ndarray, level: float) -> tuple[tuple[float, float], str]:
    """(interval, method) of the size-weighted mean rho over independent cells.

    Every cell at ±1 (cells of 2 trials can hold nothing else): the mean is
    2q − 1 for q the share of rising cells, so the Clopper–Pearson interval of
    q maps onto it (exact; when cells are larger the ±1 values are the bounds
    of rho and the interval stays valid, conservatively). Otherwise a t
    interval over the cells (k − 1 degrees of freedom).
    """
    if np.all(np.abs(rho) == 1):
        lo, hi = share_interval(int((rho > 0).sum()), rho.size, level)
        return honest((2 * lo - 1, 2 * hi - 1)), "Clopper–Pearson on the share of rising cells"
    return _bounded_t(rho, sizes, level), f"t interval over the {rho.size} cells, on Fisher's z"


def _seed_blocks_ci(rho: np.ndarray, sizes: np.ndarray, block: np.ndarray,
                    level: float) -> tuple[tuple[float, float], str]:
    """(interval, method) of the size-weighted mean rho when cells of one seed block are
    not independent: a t interval over the blocks, on Fisher's z.

    Each block's value is the size-weighted mean of its cells (one per stratum)
    and weighs its trials; the blocks (seeds) are the independent units, the
    strata are the fixed design. Used by the censored trend: a seed's effect on
    the times moves the share censored in every stratum it runs in, so its
    cells' scores move together and a t over cells is too narrow. Every cell
    at ±1, or fewer than 2 blocks: the cells' rule (`_cells_ci`).
    """
    labels = np.unique(block)
    if labels.size < 2 or np.all(np.abs(rho) == 1):
        return _cells_ci(rho, sizes, level)
    w = np.array([sizes[block == b].sum() for b in labels])
    v = np.array([sizes[block == b] @ rho[block == b] for b in labels]) / w
    return _bounded_t(v, w, level), f"t interval over the {labels.size} seed blocks, on Fisher's z"


def _strata_ci(rho: np.ndarray, sizes: np.ndarray, level: float) -> tuple[tuple[float, float], str]:
    """(interval, method) of the trend within strata of independent trials.

    Fisher's z of each stratum's rho with Bonett & Wright's variance
    (1 + rho²/2) / (n − 3), pooled with weights n − 3 and mapped back by tanh;
    it needs every stratum > 3 trials and |rho| < 1. Else the cells' rule.
    """
    if np.all(sizes > 3) and np.all(np.abs(rho) < 1):
        if rho.size == 1:
            return fisher_interval(float(rho[0]), int(sizes[0]), level), "Fisher z (Bonett–Wright)"
        w = sizes - 3
        z = float(w @ np.arctanh(rho) / w.sum())
        half = float(stats.norm.ppf((1 + level) / 2)) * math.sqrt(
            float(w @ (1 + rho ** 2 / 2)) / w.sum() ** 2)
        return (honest((math.tanh(z - half), math.tanh(z + half))),
                f"Fisher z (Bonett–Wright) pooled over {rho.size} strata")
    if rho.size >= 2:
        return _cells_ci(rho, sizes, level)
    return NO_CI, "none: one stratum of <= 3 trials or with rho = ±1"


def trend_test(x: Iterable[float], y: Iterable[float], strata: Any = None, *,
               blocks: Any = None, censored: Any = None, min_per_stratum: int | None = None,
               n_perm: int = N_PERM, n_boot: int = N_BOOT,
               rng_seed: int = 0, alpha: float = ALPHA, log_x: bool = False,
               ci_level: float | None = None, max_exact: int = MAX_EXACT) -> TestResult:
    """Monotone trend of y in x within strata (e.g. lr within each batch size).

    Cells are the strata, or with `blocks` (e.g. the seed: a paired design)
    the (stratum, block) pairs. statistic = effect = mean of the per-cell
    Spearman rho weighted by cell size; p = two-sided permutation p with y
    permuted within cells (exact up to `max_exact` arrangements, else
    `n_perm` Monte-Carlo draws). A cell carries no information and is dropped
    (counted) with a single x level, or fewer than 3 trials (2 within a
    block). With `min_per_stratum` (the plan's registered minimum; `verdict_of`
    applies it) a stratum with fewer informative trials is excluded before
    the test and counted (`n_excluded_small_strata`, `excluded_strata`).
    details["effect_units"] = mean over strata of mean(y | max x) −
    mean(y | min x), a description, not tested.

    CI at `ci_level` (default 1 - alpha), analytic and calibrated
    (benchmarks/calibrate_engine.py): with blocks, cells are independent units
    (`_cells_ci`: a t interval over cells, or Clopper–Pearson when every cell
    is at ±1, e.g. cells of 2); without blocks, Fisher z per stratum
    (`_strata_ci`); censored with blocks, t over the seed blocks
    (`_seed_blocks_ci`). None (NaN) where no interval of positive width is honest.
    `n_boot` is accepted for callers and not used.

    Censored times (`censored`, plan statistic `censored_trend`): y is the
    time of an event (a break-even step, a crossing, a stop) and
    `censored[i]` says trial i's event never occurred within its budget, y[i]
    being that budget. The rank of y is then replaced by Gehan's score within
    the cell (`stats.gehan_scores`: the trials it surely outlasts minus those
    that surely outlast it) and the cell's statistic is the correlation of
    the ranks of x with those scores; without censoring this is Spearman's
    rho exactly. The p is the same permutation p (the scores move with their
    trials within cells), details["censored_per_level"] counts the censored
    trials at each level of x. With blocks the CI is a t interval over the
    seed blocks, not the cells (`_seed_blocks_ci`): a seed that shifts the
    times moves the share censored in every stratum, so its cells are not
    independent. E.g. the break-even step against lr, paired
    by seed, with trials that never broke even censored at the step budget::

        never = np.isnan(step)
        res = trend_test(lr, np.where(never, budget, step), batch, blocks=seed,
                         censored=never, log_x=True)
    """
    x_in, y_in = list(x), list(y)
    x = np.asarray(x_in, dtype=float)
    y = np.asarray(y_in, dtype=float)
    cens = (np.zeros(len(x), bool) if censored is None
            else np.asarray(list(censored), dtype=bool))
    if log_x:
        x = np.log(x)
    ok = np.isfinite(x) & np.isfinite(y)
    s_all = np.asarray(strata, dtype=object)[ok] if strata is not None else None
    b_all = np.asarray(blocks, dtype=object)[ok] if blocks is not None else None
    x, y, cens = x[ok], y[ok], cens[ok]
    level = 1 - alpha if ci_level is None else ci_level
    min_size = 3 if blocks is None else 2
    strata_cells = [[c for c in blocks_ if len(c) >= min_size and np.unique(x[c]).size >= 2]
                    for blocks_ in design(len(x), s_all, b_all)]
    strata_cells = [cs for cs in strata_cells if cs]
    excluded: dict[str, int] = {}
    if min_per_stratum:
        keep = []
        for cs in strata_cells:
            size = int(sum(len(c) for c in cs))
            if size >= min_per_stratum:
                keep.append(cs)
            else:
                label = str(s_all[cs[0][0]]) if s_all is not None else "all"
                excluded[label] = size
        strata_cells = keep
    cells = [c for cs in strata_cells for c in cs]
    n_used = int(sum(len(c) for c in cells))
    unit = "stratum" if blocks is None else "(stratum, block) cell"
    rerun = functools.partial(trend_test, x_in, y_in, strata, blocks=blocks, censored=censored,
                              n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=alpha,
                              log_x=log_x, ci_level=ci_level, max_exact=max_exact)
    details: dict[str, Any] = {"n_strata": len(strata_cells), "n_cells": len(cells),
                               "n_dropped_nonfinite": int((~ok).sum()),
                               "n_dropped_small_strata": int(len(x) - n_used),
                               "test": ("censored trend (Gehan scores), permutation"
                                        if censored is not None else
                                        "stratified Spearman, permutation")
                                       + (" within seed blocks" if blocks is not None else "")}
    if min_per_stratum:
        details.update(min_per_stratum=int(min_per_stratum),
                       n_excluded_small_strata=len(excluded), excluded_strata=excluded)
    if censored is not None:
        details["censored_per_level"] = {
            f"{v:g}": int(cens[np.concatenate(cells)][x[np.concatenate(cells)] == v].sum())
            for v in np.unique(x[np.concatenate(cells)])} if cells else {}
        details["n_censored"] = int(sum(details["censored_per_level"].values()))
    if not cells:
        return TestResult(math.nan, math.nan, math.nan, math.nan, math.nan, 0,
                          {**details, "reason": f"no {unit} with >= {min_size} trials "
                                                "and >= 2 levels"
                                                + (f" (and >= {min_per_stratum} per stratum)"
                                                   if min_per_stratum else "")},
                          ci_level=level, rerun=rerun)
    scored = censored is not None
    if scored:           # Gehan scores within each cell replace the ranks of y
        y = y.copy()
        for c in cells:
            y[c] = gehan_scores(y[c], cens[c])
    sizes = np.array([len(c) for c in cells], dtype=float)
    weights = sizes / sizes.sum()
    rho = np.array([_rank_corr_rows(x[c], y[c], not scored) for c in cells])
    stat = float(weights @ rho)
    rng = np.random.default_rng(rng_seed)
    perm = permutation_p(x, y, [[c] for c in cells], lambda s, rows: weights[s] * _rank_corr_rows(
        np.broadcast_to(x[cells[s]], rows.shape), rows, not scored), max_exact=max_exact,
        n_mc=n_perm, rng=rng)
    if blocks is not None and scored:
        block = np.array([b_all[c[0]] for c in cells], dtype=object).astype(str)
        (lo, hi), ci_method = _seed_blocks_ci(rho, sizes, block, level)
    elif blocks is not None:
        (lo, hi), ci_method = _cells_ci(rho, sizes, level)
    else:
        (lo, hi), ci_method = _strata_ci(rho, sizes, level)
    by_stratum = [np.concatenate(cs) for cs in strata_cells]
    per_level = [int(m) for c in cells for m in np.unique(x[c], return_counts=True)[1]]
    y_desc = np.asarray(y_in, dtype=float)[ok]
    details.update(rho_per_cell=[float(r) for r in rho],
                   effect_units=float(np.mean([_extreme_diff(x[g], y_desc[g])
                                               for g in by_stratum])),
                   n_arrangements=perm.space,
                   min_per_level=min(per_level),
                   ci_method=ci_method)
    if blocks is None:
        details["rho_per_stratum"] = details["rho_per_cell"]
    return TestResult(stat, stat, lo, hi, perm.p_value, n_used, details, **_perm_fields(perm),
                      ci_level=level, n_eff=spearman_n_eff(sizes),
                      min_stratum=int(min(len(g) for g in by_stratum)), rerun=rerun)


def compare_groups(a: Iterable[float], b: Iterable[float], *, blocks_a: Any = None,
                   blocks_b: Any = None, n_perm: int = N_PERM, n_boot: int = N_BOOT,
                   rng_seed: int = 0, alpha: float = ALPHA, shift: float = 0.0,
                   alternative: str = "two-sided", ci_level: float | None = None,
                   max_exact: int = MAX_EXACT) -> TestResult:
    """mean(a) - mean(b): permutation p-value and t CI of the difference.

    `shift` tests H0: mean(a) - mean(b) = -shift (a non-inferiority margin;
    the tested effect is then the difference + shift); `alternative` is
    'two-sided', 'greater' (a - b + shift > 0) or 'less'. With `blocks_a` and
    `blocks_b` (e.g. the seeds of a and of b) the design is paired: group
    labels are permuted only within a block. statistic = effect = mean(a) -
    mean(b); CI at `ci_level`, by default 1 - alpha two-sided, 1 - 2 alpha
    for a one-sided test (so its lower/upper end is the one-sided 1 - alpha
    bound): Welch's t interval, or paired a t interval over the blocks'
    within-block differences (mean(a) − mean(b) in each block holding both).
    `n_boot` is accepted for callers and not used.
    """
    a_raw, b_raw = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    fa, fb = np.isfinite(a_raw), np.isfinite(b_raw)
    a, b = a_raw[fa], b_raw[fb]
    n = len(a) + len(b)
    sides = 2 if alternative == "two-sided" else 1
    level = (1 - alpha if sides == 2 else 1 - 2 * alpha) if ci_level is None else ci_level
    if len(a) < 2 or len(b) < 2:
        return TestResult(math.nan, math.nan, math.nan, math.nan, math.nan, n,
                          {"n_a": len(a), "n_b": len(b),
                           "reason": "fewer than 2 trials in a group"},
                          ci_level=level, null_value=-shift, sides=sides,
                          min_stratum=min(len(a), len(b)))
    if (blocks_a is None) != (blocks_b is None):
        raise ValueError("give the blocks of both groups or of neither")
    paired = blocks_a is not None
    label = np.r_[np.ones(len(a)), np.zeros(len(b))]
    y = np.r_[a + shift, b]
    blk = (np.r_[np.asarray(blocks_a, dtype=object)[fa], np.asarray(blocks_b, dtype=object)[fb]]
           if paired else None)
    cells = design(n, None, blk)
    lab = label[np.concatenate(cells[0])]

    def diff_rows(_s: int, rows: np.ndarray) -> np.ndarray:
        return rows[:, lab == 1].mean(1) - rows[:, lab == 0].mean(1)

    rng = np.random.default_rng(rng_seed)
    perm = permutation_p(label, y, cells, diff_rows, alternative=alternative,
                         max_exact=max_exact, n_mc=n_perm, rng=rng)
    diff = float(a.mean() - b.mean())
    raw = np.r_[a, b]
    if paired:          # one contrast per block holding both groups: independent units
        d = np.array([raw[c][label[c] == 1].mean() - raw[c][label[c] == 0].mean()
                      for c in cells[0] if 0 < label[c].sum() < len(c)])
        (lo, hi), se = t_interval(d, level), math.nan
        if d.size >= 2:
            se = float(d.std(ddof=1) / math.sqrt(d.size))
        ci_method = f"t interval over the {d.size} within-block differences"
    else:
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else 1
        half = float(stats.t.ppf((1 + level) / 2, df)) * se
        lo, hi = honest((diff - half, diff + half))
        ci_method = "Welch t interval"
    details = {"n_a": len(a), "n_b": len(b), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
               "n_arrangements": perm.space,
               "test": f"difference of means, permutation ({alternative})"
                       + (" within seed blocks" if paired else ""),
               "ci_method": ci_method}
    if shift:
        details["margin"] = shift
    return TestResult(diff, diff, lo, hi, perm.p_value, n, details, **_perm_fields(perm),
                      ci_level=level, null_value=-shift, se=se, sides=sides,
                      min_stratum=min(len(a), len(b)))


def intersection_union(parts: Sequence[TestResult], signs: Sequence[int]) -> TestResult:
    """One test of "every part has its predicted sign" (e.g. better before annealing, worse after).

    Each part's tested effect times its predicted sign is its signed effect (+
    means as predicted). When every signed effect is positive: statistic =
    effect = the smallest of them and p = the largest part p (Berger's
    intersection-union test: significant only if every part is). Otherwise
    statistic = the most negative signed effect and p = k x the smallest p
    among the parts against their sign (Bonferroni over the k parts, capped
    at 1), so a significant reversal of any part refutes. Judge it with
    predicted sign +1. The parts may have different units: the CI is NaN and
    the parts (with their CIs) are in details["parts"]; for power, the least
    precise part stands for the whole (largest se, smallest n_eff).
    """
    if len(parts) != len(signs) or not parts:
        raise ValueError("give one predicted sign per part")
    signed = np.array([np.sign(s) * t.tested_effect for t, s in zip(parts, signs)])
    ps = np.array([t.p_value for t in parts])
    details = {"test": "intersection-union", "parts": [
        {"statistic": t.statistic, "effect": t.effect, "ci": [t.ci_low, t.ci_high],
         "ci_level": t.ci_level, "p_value": t.p_value, "p_method": t.p_method, "n": t.n,
         "null_value": t.null_value, "predicted_sign": int(np.sign(s)), **t.details} for t, s in zip(parts, signs)]}
    if not np.all(np.isfinite(signed) & np.isfinite(ps)):
        stat, p = math.nan, math.nan
        details["reason"] = "a part could not be tested"
    elif np.all(signed > 0):
        stat, p = float(signed.min()), float(ps.max())
    else:
        stat, p = float(signed.min()), float(min(1.0, len(parts) * ps[signed <= 0].min()))
    methods = {t.p_method for t in parts}
    return TestResult(stat, stat, math.nan, math.nan, p, min(t.n for t in parts), details,
                      p_method=methods.pop() if len(methods) == 1 else "mixed",
                      n_perm=min(t.n_perm for t in parts),
                      p_mc_se=max((t.p_mc_se for t in parts if np.isfinite(t.p_mc_se)),
                                  default=math.nan),
                      ci_level=math.nan,
                      n_eff=min((t.n_eff for t in parts if np.isfinite(t.n_eff)), default=math.nan),
                      se=max((t.se for t in parts if np.isfinite(t.se)), default=math.nan),
                      min_stratum=min((t.min_stratum for t in parts if t.min_stratum is not None),
                                      default=None))


def _level(alpha: float, sides: int, ci_level: float | None) -> float:
    return (1 - alpha if sides == 2 else 1 - 2 * alpha) if ci_level is None else ci_level


def sign_flip_test(d: Iterable[float], *, n_perm: int = N_PERM, n_boot: int = N_BOOT,
                   rng_seed: int = 0, alpha: float = ALPHA, alternative: str = "two-sided",
                   ci_level: float | None = None, max_exact: int = MAX_EXACT,
                   bounds: tuple[float, float] | None = None) -> TestResult:
    """One-sample sign-flip permutation test of mean(d) = 0 (plan statistic `paired_sign_flip`).

    `d` holds one contrast per trial (before − after, within − between, a
    per-trial Kendall tau); non-finite values are dropped and counted. Under
    H0 each d_i is symmetric about 0, so its sign is exchangeable.
    statistic = effect = mean(d); p over the 2^n sign patterns, exact when
    2^n <= `max_exact` (n <= 16 by default; the smallest two-sided p is then
    2 / 2^n), else (1 + #{|T*| >= |T|}) / (1 + n_perm) from `n_perm` random
    patterns, with its Monte-Carlo SE; `alternative` 'two-sided', 'greater'
    or 'less'. CI: t interval of mean(d) at `ci_level`, by default 1 - alpha
    two-sided, 1 - 2 alpha one-sided (none when every d is equal), clipped
    to `bounds` when the contrast cannot leave them (a mean of Kendall τ lies
    in [−1, 1]): clipping drops only impossible values, so the coverage is
    the t interval's. `n_boot` is accepted for callers and not used.
    se = sd(d) / sqrt(n) gives the minimum detectable mean.
    """
    raw = np.asarray(list(d), dtype=float)
    ok = np.isfinite(raw)
    d = raw[ok]
    n = len(d)
    sides = 2 if alternative == "two-sided" else 1
    level = _level(alpha, sides, ci_level)
    test = f"paired sign-flip permutation ({alternative})"
    details: dict[str, Any] = {"test": test, "n_dropped_nonfinite": int((~ok).sum())}
    if n < 2:
        return TestResult(math.nan, math.nan, math.nan, math.nan, math.nan, n,
                          {**details, "reason": "fewer than 2 trials"}, ci_level=level,
                          sides=sides)
    obs = float(d.mean())
    rng = np.random.default_rng(rng_seed)
    space = 2 ** n
    if space <= max_exact:
        signs = 1.0 - 2.0 * ((np.arange(space)[:, None] >> np.arange(n)) & 1)
        p = float(np.mean(_tail(signs @ d / n, obs, alternative)))
        method, done, mc_se = "exact", space, math.nan
    else:
        hits, done = 0, 0
        while done < n_perm:
            k = min(5000, n_perm - done)
            signs = rng.choice((1.0, -1.0), size=(k, n))
            hits += int(_tail(signs @ d / n, obs, alternative).sum())
            done += k
        p = (1 + hits) / (1 + n_perm)
        method, mc_se = "monte_carlo", math.sqrt(p * (1 - p) / n_perm)
    lo, hi = t_interval(d, level)
    ci_method = "t interval of the mean"
    if bounds is not None and (lo < bounds[0] or hi > bounds[1]):
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
        ci_method += f", clipped to [{bounds[0]:g}, {bounds[1]:g}]"
    details.update(n_positive=int((d > 0).sum()), n_negative=int((d < 0).sum()),
                   n_zero=int((d == 0).sum()), n_arrangements=space, ci_method=ci_method)
    return TestResult(obs, obs, lo, hi, p, n, details, p_method=method, n_perm=int(done),
                      p_mc_se=mc_se, ci_level=level, se=float(d.std(ddof=1) / math.sqrt(n)),
                      sides=sides)


def equivalence_test(d: Iterable[float], margin: float, *, n_perm: int = N_PERM,
                     rng_seed: int = 0, alpha: float = ALPHA,
                     max_exact: int = MAX_EXACT) -> TestResult:
    """Is mean(d) within ±`margin`? Two one-sided tests (plan statistic `equivalence`).

    `d` holds one contrast per independent unit (per seed: sparse − dense
    accuracy; per cell: a log ratio of two times). Inside the margin
    (|mean(d)| < margin) p is Schuirmann's TOST p, the larger of the
    one-sided sign-flip p of d + margin > 0 and of d − margin < 0:
    equivalence is shown at level alpha when both are. Outside it, p is the
    one-sided sign-flip p that the mean lies beyond the margin on its own
    side, doubled (either side could have been the one), so a significant
    result refutes equivalence. statistic = margin − |mean(d)| (the tested
    effect: + inside, − outside; predicted sign +1); effect = mean(d); CI =
    t interval of mean(d) at 1 − 2 alpha, the interval TOST reads
    (equivalent when it lies inside ±margin). se = sd(d)/sqrt(n) with
    sides = 1: the power rule asks whether the margin exceeds the minimum
    detectable distance from it.
    """
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"an equivalence margin must be > 0, got {margin!r}")
    raw = np.asarray(list(d), dtype=float)
    ok = np.isfinite(raw)
    x = raw[ok]
    n = len(x)
    level = 1 - 2 * alpha
    details: dict[str, Any] = {"test": f"equivalence within ±{margin:g} (TOST, paired sign-flip)",
                               "margin": margin, "n_dropped_nonfinite": int((~ok).sum())}
    if n < 2:
        return TestResult(math.nan, math.nan, math.nan, math.nan, math.nan, n,
                          {**details, "reason": "fewer than 2 units"}, ci_level=level, sides=1)
    mean = float(x.mean())
    kw = dict(n_perm=n_perm, rng_seed=rng_seed, alpha=alpha, max_exact=max_exact)
    if abs(mean) < margin:
        lower = sign_flip_test(x + margin, alternative="greater", **kw)
        upper = sign_flip_test(x - margin, alternative="less", **kw)
        p, ran = max(lower.p_value, upper.p_value), (lower, upper)
        details.update(p_lower=lower.p_value, p_upper=upper.p_value, side="inside the margin")
    else:
        beyond = sign_flip_test(x - math.copysign(margin, mean),
                                alternative="greater" if mean > 0 else "less", **kw)
        p, ran = min(1.0, 2 * beyond.p_value), (beyond,)
        details.update(p_beyond=beyond.p_value, side="beyond the margin")
    lo, hi = t_interval(x, level)
    details.update(n_arrangements=ran[0].details["n_arrangements"],
                   ci_method="t interval of the mean at 1 − 2 alpha")
    return TestResult(margin - abs(mean), mean, lo, hi, p, n, details,
                      p_method=ran[0].p_method, n_perm=ran[0].n_perm,
                      p_mc_se=max(r.p_mc_se for r in ran) if ran[0].p_method != "exact"
                      else math.nan, ci_level=level, se=float(x.std(ddof=1) / math.sqrt(n)),
                      sides=1)


def sign_test(outcomes: Iterable[Any], *, p0: float = 0.5, alpha: float = ALPHA,
              alternative: str = "two-sided", ci_level: float | None = None) -> TestResult:
    """Exact binomial test of the share of successes against p0 (plan statistic `sign_test`).

    `outcomes` holds one outcome per trial, True/1 a success; None and NaN are
    dropped and counted. statistic = the share k/n, effect = share − p0 (the
    tested effect; null_value = p0); p = exact binomial p (two-sided: the
    summed probability of every count no more likely than k); CI =
    Clopper–Pearson interval of the share at `ci_level`, by default 1 - alpha
    two-sided, 1 - 2 alpha one-sided. The smallest two-sided p against 1/2 is
    2 / 2^n. se = sqrt(p0 (1 − p0) / n), the share's null SE, gives the
    minimum detectable departure.
    """
    raw = [None if o is None or (isinstance(o, float) and math.isnan(o)) else bool(o)
           for o in outcomes]
    kept = [o for o in raw if o is not None]
    n, k = len(kept), int(sum(kept))
    sides = 2 if alternative == "two-sided" else 1
    level = _level(alpha, sides, ci_level)
    details: dict[str, Any] = {"test": f"exact binomial sign test against {p0:g} ({alternative})",
                               "n_successes": k, "p0": p0,
                               "n_dropped_missing": len(raw) - n}
    if n < 1:
        return TestResult(math.nan, math.nan, math.nan, math.nan, math.nan, 0,
                          {**details, "reason": "no trials"}, ci_level=level, null_value=p0,
                          sides=sides)
    res = stats.binomtest(k, n, p0, alternative=alternative)
    ci = stats.binomtest(k, n, p0).proportion_ci(level, method="exact")
    share = k / n
    details["ci_method"] = "Clopper–Pearson (exact) interval of the share"
    return TestResult(share, share - p0, float(ci.low), float(ci.high), float(res.pvalue), n,
                      details, p_method="exact", ci_level=level, null_value=p0,
                      se=math.sqrt(p0 * (1 - p0) / n), sides=sides)


def magnitude(result: TestResult) -> TestResult:
    """A two-sided test read as "the quantity changes", its direction reported, not predicted.

    statistic = effect = |tested effect|, so a significant result in either
    direction has the predicted sign +1 and none can refute; p is unchanged
    (the two-sided p of effect = 0 is the p of |effect| = 0). The CI is the
    image of the CI [lo, hi] of the signed effect under |.|: [min(|lo|, |hi|),
    max(|lo|, |hi|)], from 0 when it holds 0; it covers |effect| at least as
    often as [lo, hi] covers the effect. The signed statistic, its CI and the
    direction found are kept in details (`signed_statistic`, `signed_ci`,
    `direction`: +1, −1 or 0).
    """
    if result.sides != 2:
        raise ValueError("only a two-sided test can be read without a predicted direction")
    e = result.tested_effect
    lo, hi = result.ci_low - result.null_value, result.ci_high - result.null_value
    if np.isfinite(lo) and np.isfinite(hi):
        lo_m = 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))
        ci = (lo_m, max(abs(lo), abs(hi)))
    else:
        ci = (math.nan, math.nan)
    details = {**result.details, "signed_statistic": result.statistic,
               "signed_ci": [result.ci_low, result.ci_high],
               "direction": int(np.sign(e)) if np.isfinite(e) else 0,
               "tested": "|effect|: the direction is reported, not predicted"}
    rerun = (None if result.rerun is None
             else lambda **kw: magnitude(result.rerun(**kw)))    # the rerun reads the same way
    return dataclasses.replace(result, statistic=abs(e), effect=abs(e), ci_low=ci[0],
                               ci_high=ci[1], null_value=0.0, details=details, rerun=rerun)
