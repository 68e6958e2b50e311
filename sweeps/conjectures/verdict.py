"""The verdict of one conjecture, and the statistics every conjecture shares.

A conjecture is a pure function `SweepTable -> list[Verdict]`. Each of its
tests is registered beforehand as an `AnalysisPlan` (`plan.py`); its
statistics come from here, so every paper is judged by the same rules:

- `trend_test(x, y, strata, blocks=seed)`: does y rise or fall with x,
  holding the other factors fixed? Statistic = effect: Spearman's rho within
  each stratum, averaged with weights proportional to stratum size. p:
  permutation of y within strata and, in a paired design (trials with the same
  seed share their initialisation), within seed blocks; exact by enumeration
  when there are at most 10^5 distinct arrangements, else Monte Carlo with its
  standard error (`stats.permutation_p`). CI: of the same mean rho, by a
  bootstrap that resamples seed blocks (trials, without blocks) within strata.
  The mean y difference between the extreme x levels is kept as a description
  (`details["effect_units"]`), not tested.
- `compare_groups(a, b)`: difference of means (optionally paired by seed
  blocks, or against a non-inferiority margin), permutation p, bootstrap CI of
  the difference.
- `intersection_union(parts, signs)`: "every part goes its predicted way" as
  one test (p = the largest part p), refuted by any significant reversal.
- `judge(plan, result, checks)`: the verdict of one test under its plan;
  `finalize(verdicts)`: Holm's adjustment over each multiplicity family, then
  the final verdict of every test from its adjusted p.

Verdict kinds (`decide_with_reason`, in this order):
- invalid_protocol: a manipulation check of the plan failed (or was not
  evaluated): the experiment did not produce the conditions the claim needs;
- underpowered: n below the plan's minimum, or the smallest stratum below its
  minimum per stratum; or the test is not significant and its minimum
  detectable effect at 80% power exceeds the plan's effect of interest;
- supported / refuted: adjusted p < alpha and the tested effect has the
  predicted / the opposite sign;
- inconclusive: no effect detected at adequate power (or no test possible).
Without a plan (`decide`, `TestResult.verdict`) only the last two rules apply.

Every random draw uses `numpy.random.default_rng(rng_seed)`: the same table
gives the same verdict. Trials that are not `finished` (diverged, errored,
still running) are never averaged in: `usable_runs` splits them off and the
counts go into `details`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from sweeps.conjectures.plan import AnalysisPlan
from sweeps.conjectures.stats import (MAX_EXACT, POWER, bootstrap, design, difference_mde, holm,
                                      percentile_ci, permutation_p, spearman_mde, spearman_n_eff)

VerdictKind = Literal["supported", "refuted", "inconclusive", "underpowered", "invalid_protocol"]
VERDICTS: tuple[str, ...] = ("supported", "refuted", "inconclusive", "underpowered",
                             "invalid_protocol")
ALPHA = 0.05
N_PERM = 20_000        # Monte-Carlo permutations when exact enumeration is too large
N_BOOT = 2000
Checks = Mapping[str, tuple[bool, str]]   # manipulation check name -> (passed, one-line detail)


@dataclass(frozen=True)
class Verdict:
    """Whether one conjecture holds on one sweep, with the numbers behind it.

    `p_value` is the p the verdict used: the Holm-adjusted one after
    `finalize`, equal to `p_raw` before. `ci_low`/`ci_high` bound the tested
    effect at `ci_level`. `plan_hash` is the plan the test ran under,
    `registered_hash` the plan registered before the results were seen; they
    differ only for an `exploratory` verdict.
    """

    name: str
    statement: str
    verdict: VerdictKind
    statistic: float = math.nan
    effect: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    p_value: float = math.nan
    n: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    p_raw: float = math.nan
    p_adjusted: float = math.nan
    p_method: str = ""
    n_perm: int = 0
    p_mc_se: float = math.nan
    ci_level: float = math.nan
    family: str = ""
    n_family: int = 1
    plan_hash: str = ""
    registered_hash: str = ""
    exploratory: bool = False

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        if not np.isfinite(self.p_raw):
            set_("p_raw", self.p_value)
        if not np.isfinite(self.p_adjusted):
            set_("p_adjusted", self.p_value)
        if not self.reason:
            set_("reason", str(self.details.get("reason") or _default_reason(self)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain dict of every field (numpy scalars and arrays converted)."""
        return _jsonable(asdict(self))

    def summary(self) -> str:
        """One line: name, verdict, statistic, effect [CI at its level], p, n, reason."""
        level = f" {self.ci_level:.0%}" if np.isfinite(self.ci_level) else ""
        tag = " EXPLORATORY" if self.exploratory else ""
        return (f"{self.name}: {self.verdict.upper()}{tag}  stat={_fmt(self.statistic)} "
                f"effect={_fmt(self.effect)} [{_fmt(self.ci_low)}, {_fmt(self.ci_high)}]{level} "
                f"p={_fmt(self.p_value)} n={self.n}  ({self.reason})")


def _default_reason(v: Verdict) -> str:
    if not np.isfinite(v.p_value):
        return "no test could be computed"
    cmp = "<" if v.verdict in ("supported", "refuted") else "≥"
    return f"p={_fmt(v.p_value)} {cmp} {_fmt(v.details.get('alpha', ALPHA))}"


def inconclusive(name: str, statement: str, reason: str, /, n: int = 0, **details: Any) -> Verdict:
    """A verdict that could not be reached (too little data), saying why."""
    return Verdict(name, statement, "inconclusive", n=n, details={**details, "reason": reason},
                   reason=reason)


# --------------------------------------------------------------- the rules
def decide_with_reason(p_value: float, effect: float, predicted_sign: int, alpha: float = ALPHA, *,
                       n_tests: int = 1, n: int | None = None, min_n: int = 0,
                       min_stratum: int | None = None, min_per_stratum: int = 0,
                       mde: float = math.nan, effect_of_interest: float = math.nan,
                       failed_check: str | None = None) -> tuple[VerdictKind, str]:
    """(kind, one-line reason) by the rules of the module docstring, in their order.

    `p_value` is the p to judge by (Holm-adjusted over `n_tests` when > 1);
    `effect` is the tested effect (the statistic minus its null value), whose
    sign decides supported vs refuted; `mde` is the minimum detectable |effect|
    at 80% power. Without `effect_of_interest` there is no power rule.
    """
    if failed_check:
        return "invalid_protocol", failed_check
    if n is not None and n < min_n:
        return "underpowered", f"n={n} < min {min_n}"
    if min_stratum is not None and min_stratum < min_per_stratum:
        return "underpowered", f"smallest stratum {min_stratum} < min {min_per_stratum} per stratum"
    if not np.isfinite(p_value):
        return "inconclusive", "no test could be computed"
    label = f"adj p={_fmt(p_value)}" if n_tests > 1 else f"p={_fmt(p_value)}"
    holm_txt = f" (Holm over {n_tests})" if n_tests > 1 else ""
    if p_value < alpha and np.isfinite(effect) and effect != 0:
        agree = np.sign(effect) == np.sign(predicted_sign)
        return (("supported" if agree else "refuted"),
                f"{label} < {_fmt(alpha)}{holm_txt}, effect {_fmt(effect)} has the "
                f"{'predicted' if agree else 'opposite'} sign")
    why = f"{label} ≥ {_fmt(alpha)}{holm_txt}" if p_value >= alpha else f"{label}, effect 0"
    if np.isfinite(effect_of_interest):
        if not (mde <= effect_of_interest):
            return ("underpowered", f"{why} and minimum detectable effect {_fmt(mde)} > "
                    f"{_fmt(effect_of_interest)} of interest at {POWER:.0%} power")
        return ("inconclusive", f"{why}; no effect detected at adequate power "
                f"(minimum detectable {_fmt(mde)} ≤ {_fmt(effect_of_interest)})")
    return "inconclusive", why


def decide(p_value: float, effect: float, predicted_sign: int, alpha: float = ALPHA,
           **rule: Any) -> VerdictKind:
    """The verdict kind alone: `decide_with_reason(...)[0]`.

    With only (p, effect, sign, alpha): supported / refuted if p < alpha with
    the effect's sign equal / opposite to the predicted one, else inconclusive.
    """
    return decide_with_reason(p_value, effect, predicted_sign, alpha, **rule)[0]


# ------------------------------------------------------------------ trials
def usable_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """(finished runs, counts of those left out by status: diverged/errored/running)."""
    status = runs["status"].astype(str)
    keep = runs[status == "finished"]
    excluded = status[status != "finished"].value_counts().to_dict()
    counts = {f"excluded_{k}": int(v) for k, v in excluded.items()}
    counts.setdefault("excluded_diverged", 0)
    return keep, counts


def param(runs: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    """A config column, numeric where possible; `default` where the column is absent."""
    if name not in runs.columns:
        return pd.Series([default] * len(runs), index=runs.index, name=name)
    col = runs[name]
    num = pd.to_numeric(col, errors="coerce")
    return num if num.notna().sum() == col.notna().sum() else col


# -------------------------------------------------------------- statistics
@dataclass(frozen=True)
class TestResult:
    """A tested statistic with its permutation p and a bootstrap CI of the same quantity.

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

    __test__ = False    # not a pytest class

    @property
    def tested_effect(self) -> float:
        return self.statistic - self.null_value

    def mde(self, alpha: float = ALPHA, power: float = POWER) -> float:
        """Minimum detectable |tested effect| at level alpha with `power`."""
        return _mde(self.n_eff, self.se, alpha, self.sides, power)

    def verdict(self, name: str, statement: str, predicted_sign: int,
                alpha: float = ALPHA, **details: Any) -> Verdict:
        """A verdict without a plan: supported / refuted / inconclusive from p and the sign."""
        kind, why = decide_with_reason(self.p_value, self.tested_effect, predicted_sign, alpha)
        return Verdict(name, statement, kind, self.statistic, self.effect, self.ci_low,
                       self.ci_high, self.p_value, self.n,
                       {"predicted_sign": int(np.sign(predicted_sign)), "alpha": alpha,
                        **self.details, **details},
                       reason=why, p_method=self.p_method, n_perm=self.n_perm,
                       p_mc_se=self.p_mc_se, ci_level=self.ci_level, family=name)


def _mde(n_eff: float, se: float, alpha: float, sides: int, power: float = POWER) -> float:
    if n_eff is not None and np.isfinite(n_eff):
        return spearman_mde(n_eff, alpha, power, sides)
    if se is not None and np.isfinite(se):
        return difference_mde(se, alpha, power, sides)
    return math.nan


def _perm_fields(perm: Any) -> dict[str, Any]:
    return {"p_method": perm.method, "n_perm": perm.n_perm,
            "p_mc_se": perm.mc_se if perm.method == "monte_carlo" else math.nan}


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho along the last axis (rows are independent samples); 0 where undefined."""
    rx = stats.rankdata(x, axis=-1) - (x.shape[-1] + 1) / 2
    ry = stats.rankdata(y, axis=-1) - (y.shape[-1] + 1) / 2
    num = (rx * ry).sum(-1)
    den = np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return rho


def _extreme_diff(x: np.ndarray, y: np.ndarray) -> float:
    """Mean y at the largest x minus mean y at the smallest x."""
    return float(y[x == x.max()].mean() - y[x == x.min()].mean())


def trend_test(x: Iterable[float], y: Iterable[float], strata: Any = None, *,
               blocks: Any = None, n_perm: int = N_PERM, n_boot: int = N_BOOT,
               rng_seed: int = 0, alpha: float = ALPHA, log_x: bool = False,
               ci_level: float | None = None, max_exact: int = MAX_EXACT) -> TestResult:
    """Monotone trend of y in x within strata (e.g. lr within each batch size).

    Cells are the strata, or with `blocks` (e.g. the seed: a paired design)
    the (stratum, block) pairs. statistic = effect = mean of the per-cell
    Spearman rho weighted by cell size; p = two-sided permutation p with y
    permuted within cells (exact up to `max_exact` arrangements, else
    `n_perm` Monte-Carlo draws); CI = percentile bootstrap of the same mean
    rho at `ci_level` (default 1 - alpha): trials resampled within strata, or
    with blocks whole blocks resampled within strata. A cell carries no
    information and is dropped (counted) with a single x level, or fewer than
    3 trials (2 within a block). details["effect_units"] = mean over strata of
    mean(y | max x) - mean(y | min x), a description, not tested.
    """
    x = np.asarray(list(x), dtype=float)
    y = np.asarray(list(y), dtype=float)
    if log_x:
        x = np.log(x)
    ok = np.isfinite(x) & np.isfinite(y)
    s_all = np.asarray(strata, dtype=object)[ok] if strata is not None else None
    b_all = np.asarray(blocks, dtype=object)[ok] if blocks is not None else None
    x, y = x[ok], y[ok]
    level = 1 - alpha if ci_level is None else ci_level
    min_size = 3 if blocks is None else 2
    strata_cells = [[c for c in blocks_ if len(c) >= min_size and np.unique(x[c]).size >= 2]
                    for blocks_ in design(len(x), s_all, b_all)]
    strata_cells = [cs for cs in strata_cells if cs]
    cells = [c for cs in strata_cells for c in cs]
    n_used = int(sum(len(c) for c in cells))
    unit = "stratum" if blocks is None else "(stratum, block) cell"
    details: dict[str, Any] = {"n_strata": len(strata_cells), "n_cells": len(cells),
                               "n_dropped_nonfinite": int((~ok).sum()),
                               "n_dropped_small_strata": int(len(x) - n_used),
                               "test": "stratified Spearman, permutation"
                                       + (" within seed blocks" if blocks is not None else "")}
    if not cells:
        return TestResult(math.nan, math.nan, math.nan, math.nan, math.nan, 0,
                          {**details, "reason": f"no {unit} with >= {min_size} trials "
                                                "and >= 2 levels"}, ci_level=level)
    sizes = np.array([len(c) for c in cells], dtype=float)
    weights = sizes / sizes.sum()
    rho = np.array([_spearman_rows(x[c], y[c]) for c in cells])
    stat = float(weights @ rho)
    rng = np.random.default_rng(rng_seed)
    perm = permutation_p(x, y, [[c] for c in cells], lambda s, rows: weights[s] * _spearman_rows(
        np.broadcast_to(x[cells[s]], rows.shape), rows), max_exact=max_exact, n_mc=n_perm, rng=rng)
    if blocks is None:
        def rho_rows(s: int, idx: np.ndarray) -> np.ndarray:
            bx = x[idx]
            return np.where(bx.min(1) == bx.max(1), np.nan, _spearman_rows(bx, y[idx]))

        terms = bootstrap([[c] for c in cells], rho_rows, n_boot, rng, blocked=False)
        w = np.where(np.isfinite(terms), weights[:, None], 0.0)
        with np.errstate(invalid="ignore"):
            draws = np.nansum(terms * w, axis=0) / w.sum(0)   # defined strata, reweighted
    else:                   # whole blocks drawn within strata: their cells' rho come along
        def nested(picks: list[np.ndarray]) -> np.ndarray:
            out, first = 0.0, 0
            for cs, pick in zip(strata_cells, picks):
                r, n_c = rho[first:first + len(cs)], sizes[first:first + len(cs)]
                share = n_c.sum() / sizes.sum()
                out = out + share * (n_c[pick] * r[pick]).sum(1) / n_c[pick].sum(1)
                first += len(cs)
            return out

        stat = float(nested([np.arange(len(cs))[None, :] for cs in strata_cells])[0])
        draws = nested([rng.integers(0, len(cs), (n_boot, len(cs))) for cs in strata_cells])
    lo, hi = percentile_ci(draws, level)
    by_stratum = [np.concatenate(cs) for cs in strata_cells]
    per_level = [int(m) for c in cells for m in np.unique(x[c], return_counts=True)[1]]
    resampled = "seed blocks" if blocks is not None else "trials"
    details.update(rho_per_cell=[float(r) for r in rho],
                   effect_units=float(np.mean([_extreme_diff(x[g], y[g]) for g in by_stratum])),
                   n_arrangements=perm.space,
                   min_per_level=min(per_level),
                   n_boot_undefined=int((~np.isfinite(draws)).sum()),
                   ci_method=f"percentile bootstrap, {resampled} resampled within strata")
    if blocks is None:
        details["rho_per_stratum"] = details["rho_per_cell"]
    return TestResult(stat, stat, lo, hi, perm.p_value, n_used, details, **_perm_fields(perm),
                      ci_level=level, n_eff=spearman_n_eff(sizes),
                      min_stratum=int(min(len(g) for g in by_stratum)))


def compare_groups(a: Iterable[float], b: Iterable[float], *, blocks_a: Any = None,
                   blocks_b: Any = None, n_perm: int = N_PERM, n_boot: int = N_BOOT,
                   rng_seed: int = 0, alpha: float = ALPHA, shift: float = 0.0,
                   alternative: str = "two-sided", ci_level: float | None = None,
                   max_exact: int = MAX_EXACT) -> TestResult:
    """mean(a) - mean(b): permutation p-value and bootstrap CI of the difference.

    `shift` tests H0: mean(a) - mean(b) = -shift (a non-inferiority margin;
    the tested effect is then the difference + shift); `alternative` is
    'two-sided', 'greater' (a - b + shift > 0) or 'less'. With `blocks_a` and
    `blocks_b` (e.g. the seeds of a and of b) the design is paired: group
    labels are permuted only within a block, and blocks are resampled whole.
    statistic = effect = mean(a) - mean(b); CI at `ci_level`, by default
    1 - alpha two-sided, 1 - 2 alpha for a one-sided test (so its lower/upper
    end is the one-sided 1 - alpha bound).
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

    def mean_rows(_s: int, idx: np.ndarray) -> np.ndarray:
        return raw[idx].mean(1)

    def paired_rows(_s: int, idx: np.ndarray) -> np.ndarray:
        la, v = label[idx], raw[idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            return (v * la).sum(1) / la.sum(1) - (v * (1 - la)).sum(1) / (1 - la).sum(1)

    if paired:
        draws = bootstrap(cells, paired_rows, n_boot, rng, blocked=True)[0]
    else:
        groups = [[np.flatnonzero(label == 1)], [np.flatnonzero(label == 0)]]
        means = bootstrap(groups, mean_rows, n_boot, rng, blocked=False)
        draws = means[0] - means[1]
    lo, hi = percentile_ci(draws, level)
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    if paired and all(len(c) == 2 and label[c].sum() == 1 for c in cells[0]):
        d = np.array([raw[c[label[c] == 1]][0] - raw[c[label[c] == 0]][0] for c in cells[0]])
        se = float(d.std(ddof=1) / math.sqrt(len(d)))
    details = {"n_a": len(a), "n_b": len(b), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
               "n_arrangements": perm.space,
               "test": f"difference of means, permutation ({alternative})"
                       + (" within seed blocks" if paired else ""),
               "ci_method": "percentile bootstrap, " + ("seed blocks resampled" if paired
                                                        else "trials resampled within groups")}
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
         "predicted_sign": int(np.sign(s)), **t.details} for t, s in zip(parts, signs)]}
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


# ------------------------------------------------------- plans and families
# what `details["test"]` of a TestResult says for each statistic a plan may name
_TEST_OF = {"stratified_spearman": "Spearman", "difference_of_means": "difference of means",
            "non_inferiority": "difference of means", "intersection_union": "intersection-union"}


def _check_statistic(plan: AnalysisPlan, result: TestResult) -> None:
    """The result must come from the test the plan names (ValueError otherwise)."""
    test = result.details.get("test")
    margin = "margin" in result.details
    if test is None:
        return
    wrong_test = _TEST_OF[plan.statistic] not in test
    wrong_margin = "difference" in test and (plan.statistic == "non_inferiority") != margin
    if wrong_test or wrong_margin:
        raise ValueError(f"plan {plan.conjecture!r} names {plan.statistic}, "
                         f"the result is a {test}{' with a margin' if margin else ''}")


def _check_outcome(plan: AnalysisPlan, checks: Checks | None) -> tuple[str | None, dict[str, Any]]:
    """(first failed or missing planned check as a reason, or None; all outcomes for details)."""
    checks = dict(checks or {})
    unknown = set(checks) - {c.name for c in plan.checks}
    if unknown:
        raise ValueError(f"checks {sorted(unknown)} are not in the plan of {plan.conjecture!r}")
    failed, out = None, {}
    for c in plan.checks:
        passed, detail = checks.get(c.name, (False, "not evaluated"))
        out[c.name] = {"passed": bool(passed), "detail": str(detail), "description": c.description}
        if not passed and failed is None:
            failed = f"manipulation check {c.name} failed: {detail}"
    return failed, out


def judge(plan: AnalysisPlan, result: TestResult | None, *, checks: Checks | None = None,
          name: str | None = None, statement: str | None = None, n: int | None = None,
          reason: str | None = None, **details: Any) -> Verdict:
    """The verdict of one test under its plan (before multiplicity: see `finalize`).

    `result` None means no test could be run; then `n` and `reason` say why.
    The result must come from the plan's statistic (ValueError otherwise).
    `checks` are the experiment's manipulation-check outcomes,
    {name: (passed, one-line detail)}; a planned check missing from them
    counts as failed. `name` defaults to the plan's conjecture (give
    `conjecture[metric]` when one plan is applied to several metrics).
    """
    failed, outcomes = _check_outcome(plan, checks)
    if result is not None:
        _check_statistic(plan, result)
    r = result if result is not None else TestResult(math.nan, math.nan, math.nan, math.nan,
                                                     math.nan, int(n or 0))
    rule = {"effect": r.tested_effect, "predicted_sign": plan.predicted_sign, "alpha": plan.alpha,
            "n": int(r.n if result is not None else (n or 0)), "min_n": plan.min_n,
            "min_stratum": r.min_stratum, "min_per_stratum": plan.min_per_stratum,
            "n_eff": r.n_eff, "se": r.se, "sides": r.sides,
            "effect_of_interest": plan.effect_of_interest, "failed_check": failed}
    kind, why = _apply(rule, r.p_value, 1)
    extra = reason if result is None else r.details.get("reason")
    if not np.isfinite(r.p_value) and extra and kind != "invalid_protocol":
        why = extra if kind == "inconclusive" else f"{why} ({extra})"
    return Verdict(name or plan.conjecture, statement or plan.statement, kind, r.statistic,
                   r.effect, r.ci_low, r.ci_high, r.p_value, rule["n"],
                   {**r.details, **details, "checks": outcomes, "rule": rule,
                    "plan": plan.to_dict(), **({"reason": reason} if reason else {})},
                   reason=why, p_raw=r.p_value, p_adjusted=r.p_value, p_method=r.p_method,
                   n_perm=r.n_perm, p_mc_se=r.p_mc_se, ci_level=r.ci_level, family=plan.family,
                   plan_hash=plan.hash(), registered_hash=plan.registered_hash or plan.hash(),
                   exploratory=plan.exploratory)


def _apply(rule: dict[str, Any], p: float, m: int) -> tuple[VerdictKind, str]:
    """The rules on one test's recorded inputs; power judged at the Bonferroni level alpha / m."""
    mde = _mde(rule["n_eff"], rule["se"], rule["alpha"] / max(m, 1), rule["sides"])
    rule["mde"] = mde
    return decide_with_reason(p, rule["effect"], rule["predicted_sign"], rule["alpha"],
                              n_tests=m, n=rule["n"], min_n=rule["min_n"],
                              min_stratum=rule["min_stratum"],
                              min_per_stratum=rule["min_per_stratum"], mde=mde,
                              effect_of_interest=rule["effect_of_interest"],
                              failed_check=rule["failed_check"])


def finalize(verdicts: Iterable[Verdict],
             plans: Iterable[AnalysisPlan] | None = None) -> list[Verdict]:
    """Holm over each family, then every planned verdict decided again from its adjusted p.

    A family's size m is the number of its verdicts with a finite raw p (a
    test that could not run cannot be rejected). The power rule is judged at
    alpha / m, the level the family's smallest p must pass. Verdicts made
    without a plan pass through unchanged. With `plans`, every planned
    verdict must have been judged under one of them (same hash).
    """
    verdicts = list(verdicts)
    if plans is not None:
        known = {p.hash() for p in plans}
        for v in verdicts:
            if "rule" in v.details and v.plan_hash not in known:
                raise ValueError(f"{v.name} was judged under plan {v.plan_hash}, "
                                 "which is not among the given plans")
    families: dict[str, list[int]] = {}
    for i, v in enumerate(verdicts):
        if "rule" in v.details:
            families.setdefault(v.family, []).append(i)
    out = list(verdicts)
    for idx in families.values():
        adjusted = holm([verdicts[i].p_raw for i in idx])
        m = int(np.isfinite(adjusted).sum())
        for i, p_adj in zip(idx, adjusted):
            v = verdicts[i]
            rule = dict(v.details["rule"])
            kind, why = _apply(rule, p_adj, m)
            if not np.isfinite(v.p_raw) and kind == "inconclusive":
                why = v.reason
            out[i] = replace(v, verdict=kind, reason=why, p_value=float(p_adj),
                             p_adjusted=float(p_adj), n_family=max(m, 1),
                             details={**v.details, "rule": rule})
    return out

# ------------------------------------------------------------------ helpers
def _fmt(v: float) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.4g}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ------------------------------------------------------------ metric access
def metric_frame(table: Any, key: str) -> pd.DataFrame:
    """Rows of one metric, sorted by (run_id, step), with finite-or-not values kept."""
    m = table.metrics
    return m[m["key"] == key].sort_values(["run_id", "step"])


def final_value(table: Any, key: str, fallback: str | None = None) -> pd.Series:
    """Last logged value of `key` per run (falling back to the last of `fallback`)."""
    out = metric_frame(table, key).groupby("run_id")["value"].last()
    if fallback is not None:
        fb = metric_frame(table, fallback).groupby("run_id")["value"].last()
        out = out.combine_first(fb)
    return out


def per_epoch(table: Any, run_id: str, key: str) -> pd.Series:
    """`key` of one run at epoch ends (indexed by step).

    Epoch-end steps are those where `train/epoch` was logged, else those of
    `val/acc` (evaluated once per epoch); when neither exists or they share no
    step with `key`, every logged value is taken as one per epoch.
    """
    s = table.series(run_id, key).sort_index()
    for marker in ("train/epoch", "val/acc"):
        if marker == key:
            continue
        ends = table.series(run_id, marker).index
        if len(ends):
            common = s.index.intersection(ends)
            if len(common) >= 2:
                return s.loc[common]
    return s
