"""Permutation p-values, confidence intervals, Holm's adjustment and power.

The design of a comparison is a list of strata, each a list of blocks, each
an array of trial indices (`design`). Under the null hypothesis the outcomes
are exchangeable only within a block of a stratum: trials with the same held
fixed config (stratum) and the same seed (block: they share their
initialisation) are permuted among themselves, never across.

- `permutation_p`: the statistic must be a sum of per-stratum terms. The p is
  exact, by enumerating every distinct arrangement, when the design has at
  most `MAX_EXACT` of them (`n_arrangements`: the product over blocks of the
  multinomial n! / prod(n_level!) for the block's x levels, since outcomes
  swapped between trials at the same level leave the statistic unchanged);
  otherwise it is a Monte-Carlo p from `n_mc` random arrangements,
  (1 + #{|T*| >= |T|}) / (1 + n_mc), with its Monte-Carlo standard error.
- `t_interval`, `share_interval`, `fisher_interval`: the analytic intervals
  the tests print (a t interval over independent units, Clopper–Pearson for
  a share, Fisher z with the Bonett–Wright variance for one Spearman rho);
  `honest` turns an interval of zero width into none (NaN, NaN).
- `gehan_scores`: Gehan's rank scores of right-censored times.
- `holm`: Holm–Bonferroni adjusted p-values of one family of tests.
- `spearman_mde`, `difference_mde`: the smallest effect the design detects
  with the given power at a two-sided level alpha (normal approximations:
  Fisher's z for rho with n_eff from the null variance of the weighted mean
  rho, `spearman_n_eff`; z for a difference with its standard error).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
MAX_EXACT = 100_000
N_MC = 20_000
N_PERM = N_MC          # Monte-Carlo permutations when exact enumeration is too large
N_BOOT = 2000          # kept for callers: every interval is analytic now
POWER = 0.8
SPEARMAN_VAR = 1.06     # var(atanh rho_s) ≈ 1.06 / (n - 3) (Fieller, Hartley & Pearson 1957)

Design = list[list[np.ndarray]]    # strata -> blocks -> trial indices


@dataclass(frozen=True)
class PermutationP:
    """A permutation p-value and how it was obtained."""

    p_value: float
    method: str            # "exact" or "monte_carlo"
    n_perm: int            # arrangements enumerated or drawn
    space: int             # distinct arrangements of the design
    mc_se: float           # Monte-Carlo standard error; 0 when exact


# ------------------------------------------------------------------- design
def _codes(labels: Any, n: int) -> np.ndarray:
    if labels is None:
        return np.zeros(n, dtype=int)
    return pd.factorize(pd.Series(np.asarray(labels, dtype=object)).astype(str))[0]


def design(n: int, strata: Any = None, blocks: Any = None) -> Design:
    """Trial indices grouped by stratum, then by block within the stratum."""
    s, b = _codes(strata, n), _codes(blocks, n)
    out = []
    for sc in np.unique(s):
        idx = np.flatnonzero(s == sc)
        out.append([idx[b[idx] == bc] for bc in np.unique(b[idx])])
    return out


def n_arrangements(x: np.ndarray, cells: Design) -> int:
    """Distinct arrangements of outcomes over the x levels of every block (exact integer)."""
    total = 1
    for blocks in cells:
        for idx in blocks:
            counts = np.unique(np.asarray(x)[idx], return_counts=True)[1]
            total *= math.factorial(len(idx)) // math.prod(math.factorial(int(c)) for c in counts)
    return total


def _block_arrangements(x: np.ndarray) -> np.ndarray:
    """Every assignment of a block's outcomes to its x levels: rows of local indices."""
    _, level = np.unique(x, return_inverse=True)
    slots = [np.flatnonzero(level == lv) for lv in range(level.max() + 1)]
    rows: list[np.ndarray] = []
    row = np.empty(len(x), dtype=int)

    def fill(remaining: tuple[int, ...], lv: int) -> None:
        if lv == len(slots):
            rows.append(row.copy())
            return
        for chosen in itertools.combinations(remaining, len(slots[lv])):
            row[slots[lv]] = chosen
            fill(tuple(r for r in remaining if r not in chosen), lv + 1)

    fill(tuple(range(len(x))), 0)
    return np.array(rows)


def _stratum_arrangements(x: np.ndarray, blocks: list[np.ndarray]) -> np.ndarray:
    """Rows of global indices: the product of the blocks' arrangements, columns in block order."""
    out = np.zeros((1, 0), dtype=int)
    for idx in blocks:
        a = idx[_block_arrangements(x[idx])]
        out = np.hstack([np.repeat(out, len(a), axis=0), np.tile(a, (len(out), 1))])
    return out


# -------------------------------------------------------------- permutation
StratumStat = Callable[[int, np.ndarray], np.ndarray]   # (stratum, outcome rows) -> term per row


def _tail(null: np.ndarray, observed: float, alternative: str) -> np.ndarray:
    tol = 1e-9 * max(1.0, abs(observed))
    if alternative == "greater":
        return null >= observed - tol
    if alternative == "less":
        return null <= observed + tol
    return np.abs(null) >= abs(observed) - tol


def permutation_p(x: np.ndarray, y: np.ndarray, cells: Design, term: StratumStat, *,
                  alternative: str = "two-sided", max_exact: int = MAX_EXACT,
                  n_mc: int = N_MC, rng: np.random.Generator | None = None) -> PermutationP:
    """p of the statistic sum_s term(s, y[stratum s]) under permutation within blocks.

    `term(s, rows)` gets outcome rows whose columns are stratum s's trials in
    block order (`np.concatenate(cells[s])`) and returns one value per row.
    """
    x, y = np.asarray(x), np.asarray(y, dtype=float)
    order = [np.concatenate(blocks) for blocks in cells]
    observed = float(sum(term(s, y[o][None, :])[0] for s, o in enumerate(order)))
    space = n_arrangements(x, cells)
    if space <= max_exact:
        null = np.zeros(1)
        for s, blocks in enumerate(cells):
            t = term(s, y[_stratum_arrangements(x, blocks)])
            null = (null[:, None] + t[None, :]).ravel()
        p = float(np.mean(_tail(null, observed, alternative)))
        return PermutationP(p, "exact", int(null.size), space, 0.0)
    rng = rng if rng is not None else np.random.default_rng(0)
    hits, done, chunk = 0, 0, 5000
    while done < n_mc:
        k = min(chunk, n_mc - done)
        null = np.zeros(k)
        for s, blocks in enumerate(cells):
            rows = np.hstack([rng.permuted(np.broadcast_to(y[idx], (k, len(idx))), axis=1)
                              for idx in blocks])
            null += term(s, rows)
        hits += int(_tail(null, observed, alternative).sum())
        done += k
    p = (1 + hits) / (1 + n_mc)
    return PermutationP(float(p), "monte_carlo", n_mc, space, float(math.sqrt(p * (1 - p) / n_mc)))


# ---------------------------------------------------------------- intervals
NO_CI = (math.nan, math.nan)


def honest(ci: tuple[float, float]) -> tuple[float, float]:
    """`ci`, or none (NaN, NaN) when it has no width: a resample or a sample that
    cannot vary says nothing about the uncertainty, so no interval is printed.
    No width means none beyond floating-point rounding: identical values can
    leave a spread of 1e-16 behind a weighted mean."""
    lo, hi = ci
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return NO_CI
    return (float(lo), float(hi)) if hi - lo > 1e-9 * max(1.0, abs(lo), abs(hi)) else NO_CI


def t_interval(values: Any, level: float, weights: Any = None) -> tuple[float, float]:
    """Weighted mean of independent units ± t_{k-1} · SE at `level` (two-sided).

    SE² = k / (k - 1) · sum_i w_i² (v_i - v̄)² with weights normalised to 1
    (s² / k for equal weights). None with fewer than 2 units or no spread.
    """
    v = np.asarray(values, dtype=float)
    k = v.size
    if k < 2:
        return NO_CI
    w = np.full(k, 1 / k) if weights is None else np.asarray(weights, float) / np.sum(weights)
    mean = float(w @ v)
    se = math.sqrt(k / (k - 1) * float(np.sum(w ** 2 * (v - mean) ** 2)))
    half = float(stats.t.ppf((1 + level) / 2, k - 1)) * se
    return honest((mean - half, mean + half))


def share_interval(k: int, n: int, level: float) -> tuple[float, float]:
    """Clopper–Pearson interval of a share k / n at `level` (exact, conservative)."""
    if n < 1:
        return NO_CI
    ci = stats.binomtest(int(k), int(n)).proportion_ci(level, method="exact")
    return float(ci.low), float(ci.high)


def fisher_interval(rho: float, n: int, level: float) -> tuple[float, float]:
    """Fisher-z interval of one Spearman rho of n trials, with Bonett & Wright's (2000)
    variance (1 + rho²/2) / (n - 3); none for n <= 3 or |rho| = 1 (z is infinite)."""
    if n <= 3 or not abs(rho) < 1:
        return NO_CI
    half = float(stats.norm.ppf((1 + level) / 2)) * math.sqrt((1 + rho ** 2 / 2) / (n - 3))
    z = math.atanh(rho)
    return honest((math.tanh(z - half), math.tanh(z + half)))


def gehan_scores(time: Any, censored: Any) -> np.ndarray:
    """Gehan's score of each of n right-censored times: #{j it surely outlasts} − #{j that
    surely outlast it}.

    i surely outlasts j when j's event was seen (not censored) before i's time,
    or at i's time with i censored there (a censored time is a lower bound).
    Two censored times, or two events at one time, are not ordered (0). Without
    censoring the score is 2 · midrank − (n + 1): the centred rank, doubled.
    Leading axes hold separate samples (scores along the last axis).
    """
    t = np.asarray(time, dtype=float)
    c = np.asarray(censored, dtype=bool)
    ti, tj = t[..., :, None], t[..., None, :]
    # outlasts[..., i, j]: i surely outlasts j (rows along the leading axes are separate samples)
    outlasts = ~c[..., None, :] & ((tj < ti) | ((tj == ti) & c[..., :, None]))
    return outlasts.sum(-1).astype(float) - outlasts.sum(-2).astype(float)


# ------------------------------------------------------------- multiplicity
def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, in the input order.

    m is the number of tests given, whether or not each could be computed: a
    NaN (a registered test that could not run) counts as p = 1, so the family
    size never depends on the outcome, and its adjusted p stays NaN. The i-th
    smallest p is multiplied by m - i + 1, made non-decreasing, capped at 1.
    """
    p = np.asarray(p_values, dtype=float)
    filled = np.where(np.isfinite(p), p, 1.0)
    m = p.size
    out = np.full(p.shape, np.nan)
    running = 0.0
    for i, j in enumerate(np.argsort(filled, kind="stable")):
        running = max(running, min(1.0, (m - i) * filled[j]))
        out[j] = running if np.isfinite(p[j]) else math.nan
    return out


# -------------------------------------------------------------------- power
def _z(alpha: float, power: float, sides: int) -> float:
    return float(stats.norm.ppf(1 - alpha / sides) + stats.norm.ppf(power))


def spearman_n_eff(cell_sizes: Sequence[int]) -> float:
    """n of one sample whose rho has the null variance of the size-weighted mean rho.

    Under the null a cell's Spearman rho has variance 1 / (n_c - 1) (exact
    without ties), so the weighted mean has sum_c w_c^2 / (n_c - 1) with
    w_c = n_c / n, and n_eff = 1 + 1 / sum_c w_c^2 / (n_c - 1). One cell of
    n trials gives n_eff = n.
    """
    n = np.asarray(cell_sizes, dtype=float)
    if n.size == 0 or np.any(n < 2):
        return 1.0
    w = n / n.sum()
    return float(1 + 1 / np.sum(w ** 2 / (n - 1)))


def spearman_mde(n_eff: float, alpha: float, power: float = POWER, sides: int = 2) -> float:
    """Smallest |rho| detected with `power`, by Fisher's z and the Spearman variance:

    tanh((z_{1-alpha/sides} + z_power) * sqrt(1.06 / (n_eff - 3))); 1 when n_eff <= 3.
    """
    if not n_eff > 3:
        return 1.0
    return float(math.tanh(_z(alpha, power, sides) * math.sqrt(SPEARMAN_VAR / (n_eff - 3))))


def difference_mde(se: float, alpha: float, power: float = POWER, sides: int = 2) -> float:
    """Smallest |difference| detected with `power`: (z_{1-α/2} + z_power) · se."""
    return float(_z(alpha, power, sides) * se) if np.isfinite(se) else math.inf


def minimum_detectable(n_eff: float, se: float, alpha: float, sides: int = 2,
                       power: float = POWER) -> float:
    """`spearman_mde` when `n_eff` is known, else `difference_mde` from `se`; NaN if neither."""
    if n_eff is not None and np.isfinite(n_eff):
        return spearman_mde(n_eff, alpha, power, sides)
    if se is not None and np.isfinite(se):
        return difference_mde(se, alpha, power, sides)
    return math.nan
