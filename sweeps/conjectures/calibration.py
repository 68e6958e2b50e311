"""The engine's error rates, measured: simulated tables in each design the
shipped specs and plans use, judged by the engine's own tests.

Each `Design` draws one table (with seed and stratum effects where the
experiment has them) from a model whose true effect is known, runs the real
test of `inference.py` on it and reads off: whether p < alpha (in the
predicted direction for one-sided and intersection-union tests), and whether
the printed CI covers the true value of the quantity it bounds. Under the
null (effect 0, or the boundary of a margin) the rejection rate is the
type-I error; at the plan's effect of interest it is the power.

The true value of a rank statistic (the size-weighted mean Spearman rho of a
cell, or its Gehan-score analogue under censoring) is its expectation over
cells, computed once by simulating `N_TRUTH` cells; for means it is the
model's parameter. Strata (the config values held fixed) are the fixed design
and seeds a sample: where a stratum's effect changes the expected statistic
(the censored trend, through the share censored) the true value is the mean
over the table's own strata, seeds integrated out. `calibrate` returns one
row per design and scenario; benchmarks/calibrate_engine.py prints the
table, tests/test_calibration.py runs a small version and checks the bands.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from sweeps.conjectures.inference import (TestResult, _rank_corr_rows, compare_groups,
                                          equivalence_test, intersection_union, sign_flip_test,
                                          sign_test, trend_test)
from sweeps.conjectures.stats import ALPHA, gehan_scores

N_TRUTH = 200_000        # cells simulated for the true value of a rank statistic
EFFECT_RHO = 0.5         # the trend plans' effect of interest (Spearman rho)
CENSORED_SHARE = 0.3     # share censored at the budget under the null


@dataclass(frozen=True)
class Design:
    """One design: how a table is drawn and tested, and what its CI bounds."""

    name: str
    used_by: str
    # (rng, effect, n_perm) -> result, or (result, true value) where the true value
    # depends on the table drawn (the censored trend: its strata's effects)
    draw: Callable[[np.random.Generator, float, int], TestResult | tuple[TestResult, float]]
    truth: Callable[[float], float]          # true value of the CI's quantity at `effect`
    null: float                              # effect under H0 (a margin's boundary)
    alternative: float                       # effect at the plan's effect of interest
    predicted: int = 0                       # 0: two-sided; ±1: reject only in that direction
    # the CI is an exact interval of a discrete statistic (Clopper–Pearson): at small n it
    # cannot sit at its level and covers more by construction, never less
    discrete_ci: bool = False


# ------------------------------------------------------------ trend designs
def _trend_cell(levels: np.ndarray, beta: float, rows: int, rng: np.random.Generator,
                censor: float | None, shift_sd: float, offset: float = 0.0) -> np.ndarray:
    """The cell statistic of `rows` simulated cells: y = beta·x + offset + shift + N(0, 1),
    the shift (stratum + seed effect, or the seed's alone when `offset` is a stratum's)
    common to a cell; y a log time censored at `censor` if given."""
    y = (beta * levels[None, :] + rng.normal(size=(rows, levels.size)) + offset
         + shift_sd * rng.normal(size=(rows, 1)))
    x = np.broadcast_to(levels, y.shape)
    if censor is None:
        return _rank_corr_rows(x, y)
    return _rank_corr_rows(x, gehan_scores(np.minimum(y, censor), y > censor), rank_y=False)


def _cell_truth(levels: np.ndarray, censor: float | None, shift_sd: float,
                cells: int = N_TRUTH) -> Callable[[float], float]:
    """beta -> E[cell statistic], from `cells` cells (common random numbers: monotone)."""
    cache: dict[float, float] = {}

    def truth(beta: float) -> float:
        if beta not in cache:
            rng = np.random.default_rng(12345)
            cache[beta] = float(np.mean(_trend_cell(levels, beta, cells, rng, censor,
                                                    shift_sd)))
        return cache[beta]
    return truth


def _cell_truth_given_stratum(levels: np.ndarray, censor: float, seed_sd: float,
                              stratum_sd: float) -> Callable[[float, np.ndarray], np.ndarray]:
    """(beta, stratum shifts) -> E[cell statistic | each stratum's shift], the seed shift and
    noise integrated out: a grid of shifts over ±4 sd, `N_TRUTH` / 10 cells each (common
    random numbers), interpolated. Under the null it is 0 whatever the shift (x is
    exchangeable within a cell)."""
    grid = np.linspace(-4 * stratum_sd, 4 * stratum_sd, 33)
    cache: dict[float, np.ndarray] = {}

    def truth(beta: float, shifts: np.ndarray) -> np.ndarray:
        if beta == 0:
            return np.zeros(len(shifts))
        if beta not in cache:
            cache[beta] = np.array([float(np.mean(_trend_cell(
                levels, beta, N_TRUTH // 10, np.random.default_rng(12345), censor,
                seed_sd, offset=u))) for u in grid])
        return np.interp(shifts, grid, cache[beta])
    return truth


def _beta_for(truth: Callable[[float], float], target: float) -> float:
    """The smallest slope whose true cell statistic reaches `target`: doubling up to a
    bracket, then bisection to 1 / 2^16 of it. Under censoring the statistic is not
    monotone in the slope (a steep one censors every trial above the lowest level, and
    the scores saturate), so the first crossing is the one wanted."""
    hi = 0.125
    while truth(hi) < target:
        hi *= 2
        if hi > 64:
            raise ValueError(f"no slope reaches a cell statistic of {target}")
    lo = hi / 2 if hi > 0.125 else 0.0
    for _ in range(16):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if truth(mid) < target else (lo, mid)
    return (lo + hi) / 2


def trend_design(name: str, used_by: str, n_levels: int, n_strata: int, n_seeds: int, *,
                 blocked: bool = True, censored: bool = False) -> Design:
    """Stratified trend: n_levels of x in each of n_strata strata, per seed (a block when
    `blocked`, else replicates of one stratum). Stratum and seed effects of sd 2 on y.

    Censored: y is a log time censored at the budget, with stratum effects of sd 0.5
    and seed effects of sd 1, which move the share censored of a cell, and with it
    its expected statistic. The strata are the fixed design (config values held
    fixed, not a sample of them), so the CI's true value is the mean over the
    table's own strata of E[cell statistic | that stratum's effect], the seed
    integrated out; the effect of interest is set on the mean over strata.
    """
    levels = np.arange(n_levels, dtype=float)
    censor = float(np.quantile(np.random.default_rng(0).normal(size=100_000),
                               1 - CENSORED_SHARE)) if censored else None
    sd_stratum, sd_seed = (0.5, 1.0) if censored else (2.0, 2.0)
    cell = levels if blocked else np.tile(levels, n_seeds)
    shift_sd = math.hypot(sd_stratum, sd_seed) if blocked else sd_stratum
    truth_beta = _cell_truth(cell, censor, shift_sd)
    # the slope of the effect of interest from a tenth of the cells (it sets the power
    # scenario; the CI's true value at that slope is then computed from all of them)
    beta_alt = _beta_for(_cell_truth(cell, censor, shift_sd, N_TRUTH // 10), EFFECT_RHO)
    given = (_cell_truth_given_stratum(cell, censor, sd_seed, sd_stratum)
             if censor is not None else None)

    def draw(rng: np.random.Generator, effect: float,
             n_perm: int) -> TestResult | tuple[TestResult, float]:
        beta = beta_alt if effect else 0.0
        x = np.tile(levels, n_strata * n_seeds)
        stratum = np.repeat(np.arange(n_strata), n_seeds * n_levels)
        seed = np.tile(np.repeat(np.arange(n_seeds), n_levels), n_strata)
        stratum_fx = sd_stratum * rng.normal(size=n_strata)
        y = beta * x + rng.normal(size=x.size) + stratum_fx[stratum]
        if blocked:
            y = y + sd_seed * rng.normal(size=n_seeds)[seed]
        kw = dict(blocks=seed if blocked else None, n_perm=n_perm,
                  rng_seed=int(rng.integers(2 ** 31)))
        strata = stratum if n_strata > 1 else None
        if given is None:
            return trend_test(x, y, strata, **kw)
        r = trend_test(x, np.minimum(y, censor), strata, censored=y > censor, **kw)
        return r, float(np.mean(given(beta, stratum_fx)))    # strata of equal size

    # cells of 2 hold rho = ±1 only (Clopper–Pearson on the share of rising cells), cells
    # of 3 four values (±1, ±1/2): when every cell is at ±1 the exact interval is taken,
    # else the t on Fisher's z, and either over-covers a discrete mean by construction
    return Design(name, used_by, draw, lambda e: truth_beta(beta_alt if e else 0.0),
                  0.0, EFFECT_RHO, discrete_ci=n_levels <= 3 and blocked and not censored)


# ------------------------------------------------------- difference designs
def paired_design(name: str, used_by: str, n_pairs: int, *, sign_flip: bool = False,
                  margin: float = 0.0) -> Design:
    """Paired differences with sd 1 (seed effects of sd 2 cancel): `sign_flip_test` of the
    differences, or `compare_groups` with seed blocks, one-sided against `margin` if given
    (null at the margin's boundary, effect of interest a difference of 0)."""
    def draw(rng: np.random.Generator, effect: float, n_perm: int) -> TestResult:
        seed_fx = 2 * rng.normal(size=n_pairs)
        a = seed_fx + effect + rng.normal(size=n_pairs) / math.sqrt(2)
        b = seed_fx + rng.normal(size=n_pairs) / math.sqrt(2)
        kw = dict(n_perm=n_perm, rng_seed=int(rng.integers(2 ** 31)))
        if sign_flip:
            return sign_flip_test(a - b, **kw)
        seeds = np.arange(n_pairs)
        if margin:
            return compare_groups(a, b, blocks_a=seeds, blocks_b=seeds, shift=margin,
                                  alternative="greater", **kw)
        return compare_groups(a, b, blocks_a=seeds, blocks_b=seeds, **kw)

    if margin:
        return Design(name, used_by, draw, lambda e: e, -margin, 0.0, predicted=+1)
    return Design(name, used_by, draw, lambda e: e, 0.0, 1.0)


def groups_design(name: str, used_by: str, n_a: int, n_b: int) -> Design:
    """Two independent groups of sd 1: `compare_groups` (Welch interval)."""
    def draw(rng: np.random.Generator, effect: float, n_perm: int) -> TestResult:
        return compare_groups(effect + rng.normal(size=n_a), rng.normal(size=n_b),
                              n_perm=n_perm, rng_seed=int(rng.integers(2 ** 31)))
    return Design(name, used_by, draw, lambda e: e, 0.0, 1.0)


def iu_design(name: str, used_by: str, n_pairs: int) -> Design:
    """Intersection-union of two paired differences predicted + and −. Null: the least
    favourable configuration, the first part 0 and the second far (3 sd) as predicted;
    effect of interest: both parts 1 sd as predicted. No CI (the parts print theirs)."""
    def draw(rng: np.random.Generator, effect: float, n_perm: int) -> TestResult:
        seeds = np.arange(n_pairs)
        parts = []
        for mean in (effect, -(effect if effect else 3.0)):
            fx = 2 * rng.normal(size=n_pairs)
            a = fx + mean + rng.normal(size=n_pairs) / math.sqrt(2)
            b = fx + rng.normal(size=n_pairs) / math.sqrt(2)
            parts.append(compare_groups(a, b, blocks_a=seeds, blocks_b=seeds, n_perm=n_perm,
                                        rng_seed=int(rng.integers(2 ** 31))))
        return intersection_union(parts, [+1, -1])
    return Design(name, used_by, draw, lambda e: math.nan, 0.0, 1.0, predicted=+1)


def equivalence_design(name: str, used_by: str, n: int, margin: float) -> Design:
    """TOST of n paired differences of sd 1 within ±`margin`: null at the margin's
    boundary (mean = margin: equivalence must be claimed at most alpha of the time),
    effect of interest a mean of 0; the CI is of the mean (at 1 − 2 alpha)."""
    def draw(rng: np.random.Generator, effect: float, n_perm: int) -> TestResult:
        return equivalence_test(effect + rng.normal(size=n), margin, n_perm=n_perm,
                                rng_seed=int(rng.integers(2 ** 31)))
    return Design(name, used_by, draw, lambda e: e, margin, 0.0, predicted=+1)


def sign_test_design(name: str, used_by: str, n: int) -> Design:
    """Share of successes against 1/2 (exact binomial, Clopper–Pearson); effect = share − 1/2."""
    def draw(rng: np.random.Generator, effect: float, n_perm: int) -> TestResult:
        return sign_test(rng.random(n) < 0.5 + effect)
    return Design(name, used_by, draw, lambda e: 0.5 + e, 0.0, 0.25, discrete_ci=True)


DESIGNS: tuple[Design, ...] = (
    trend_design("trend, 4 levels × 2 strata × 5 seed blocks", "breakeven.c1_lr, c2_lr", 4, 2, 5),
    trend_design("trend, 2 levels × 4 strata × 5 seed blocks (cells of 2)",
                 "breakeven.c1_batch, c2_batch", 2, 4, 5),
    trend_design("trend, 4 levels × 5 strata × 6 seed blocks", "regimes.momentum", 4, 5, 6),
    trend_design("trend, 6 levels × 1 stratum × 5 seed blocks",
                 "critical_periods.removal_hurts", 6, 1, 5),
    trend_design("trend, 3 levels × 3 trials, one stratum, no blocks", "stiffness.xi_vs_lr",
                 3, 1, 3, blocked=False),
    trend_design("censored trend, 4 levels × 2 strata × 5 seed blocks, 30 % censored",
                 "break-even step, crossing, stop (censored_trend)", 4, 2, 5, censored=True),
    paired_design("sign flip, 8 trials", "frequency.low_first", 8, sign_flip=True),
    paired_design("sign flip, 9 trials", "stiffness one-sample tests", 9, sign_flip=True),
    paired_design("paired difference, 7 seed blocks", "early_phase.rewind_beats_init", 7),
    paired_design("paired difference, 12 seed blocks", "large_lr (parts, control)", 12),
    paired_design("non-inferiority, 20 seed blocks, margin 0.82 sd, one-sided",
                  "regimes.two_stage", 20, margin=0.82),
    groups_design("two groups, 5 vs 5 (Welch)", "critical_periods (pilot, noise vs blur)", 5, 5),
    iu_design("intersection-union, 2 paired parts × 12 seed blocks",
              "large_lr.anneal_crossover", 12),
    equivalence_design("equivalence (TOST), 8 units, margin 1.2 sd",
                       "equivalence plans (sparse vs dense, marker alignment)", 8, 1.2),
    sign_test_design("sign test, 10 trials, p0 = 1/2", "critical_periods.fisher_rises_then_falls",
                     10),
    # the version-2 designs
    trend_design("trend, 4 levels × 3 strata × 3 seed blocks", "breakeven v2 (c1_lr, c2_lr)", 4, 3, 3),
    trend_design("trend, 3 levels × 4 strata × 3 seed blocks", "breakeven v2 (c1_batch, c2_batch)",
                 3, 4, 3),
    trend_design("trend, 3 levels × 1 stratum × 8 seed blocks",
                 "critical_periods v2 (constant-rate removal and onset trends)", 3, 1, 8),
    paired_design("sign flip, 32 trials", "two_regimes v2 (per-seed contrasts)", 32, sign_flip=True),
    sign_test_design("sign test, 35 trials, p0 = 1/2", "breakeven v2 (spectra saturate early)", 35),
    iu_design("intersection-union, 2 paired parts × 8 seed blocks", "early_phase v2 (ablations)", 8),
    equivalence_design("equivalence (TOST), 17 units, margin 0.4 sd",
                       "stages (a marker within a factor 2 of t_BE; log-ratio sd 1.5–1.9)",
                       17, 0.4),
)


# ----------------------------------------------------------------- running
def _rejects(r: TestResult, predicted: int, alpha: float) -> bool:
    if not (np.isfinite(r.p_value) and r.p_value < alpha):
        return False
    return predicted == 0 or np.sign(r.tested_effect) == predicted


def simulate(design: Design, effect: float, n_sims: int, *, n_perm: int = 999, seed: int = 0,
             alpha: float = ALPHA) -> dict:
    """One row: rejection rate and CI coverage (over the simulations that printed a CI)."""
    rng = np.random.default_rng(seed)
    truth = design.truth(effect)
    rejected = covered = with_ci = 0
    level, truths = math.nan, []
    t0 = time.perf_counter()
    for _ in range(n_sims):
        r = design.draw(rng, effect, n_perm)
        r, truth_r = r if isinstance(r, tuple) else (r, truth)
        truths.append(truth_r)
        rejected += _rejects(r, design.predicted, alpha)
        level = r.ci_level if np.isfinite(r.ci_level) else level
        if np.isfinite(r.ci_low) and np.isfinite(r.ci_high):
            assert r.ci_high > r.ci_low, "an interval of zero width was printed"
            with_ci += 1
            covered += r.ci_low <= truth_r <= r.ci_high
    rate = rejected / n_sims
    cov = covered / with_ci if with_ci else math.nan
    return {"design": design.name, "used_by": design.used_by,
            "scenario": "null" if effect == design.null else "effect of interest",
            "n_sims": n_sims, "reject": rate, "reject_se": math.sqrt(rate * (1 - rate) / n_sims)
            if rate not in (0, 1) else math.sqrt(alpha * (1 - alpha) / n_sims),
            "ci_level": level, "coverage": cov,
            "coverage_se": math.sqrt(level * (1 - level) / with_ci) if with_ci else math.nan,
            "no_ci": 1 - with_ci / n_sims, "discrete_ci": design.discrete_ci,
            "seed": seed, "truth": float(np.mean(truths)),
            "seconds": time.perf_counter() - t0}


def calibrate(n_sims: int, designs: tuple[Design, ...] = DESIGNS, *, n_perm: int = 999,
              seed: int = 0, alpha: float = ALPHA,
              progress: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Every design under its null and at its effect of interest: one row each. A
    design's tables are seeded by its place in `DESIGNS`, so that a run of some of
    them draws what a full run draws for them."""
    rows = []
    for i, d in enumerate(designs):
        at = DESIGNS.index(d) if d in DESIGNS else i
        for j, effect in enumerate((d.null, d.alternative)):
            row = simulate(d, effect, n_sims, n_perm=n_perm, seed=seed + 1000 * at + j,
                           alpha=alpha)
            rows.append(row)
            if progress:
                progress(row)
    return pd.DataFrame(rows)
