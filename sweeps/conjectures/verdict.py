"""The verdict of one conjecture, and the statistics every conjecture shares.

A conjecture is a pure function `SweepTable -> list[Verdict]`. Its statistics
come from here, so every paper is judged by the same rules:

- `trend_test(x, y, strata)`: does y rise or fall with x, holding the other
  factors fixed? Statistic: Spearman's rho computed within each stratum and
  averaged (weighted by stratum size). p-value: permutation test that
  shuffles y *within* strata (seeds are exchangeable replicates under the null).
  Effect: mean over strata of (mean y at the largest x - mean y at the
  smallest x), in y's units, with a stratified bootstrap CI.
- `compare_groups(a, b)`: two-sample difference of means, permutation p-value,
  bootstrap CI.
- `decide(p, effect, predicted_sign)`: supported if p < alpha with the
  predicted sign, refuted if p < alpha with the opposite sign, else
  inconclusive.

Every random draw uses `numpy.random.default_rng(rng_seed)`: the same table
gives the same verdict. Trials that are not `finished` (diverged, errored,
still running) are never averaged in: `usable_runs` splits them off and the
counts go into `details`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Literal

import numpy as np
import pandas as pd
from scipy import stats

VerdictKind = Literal["supported", "refuted", "inconclusive"]
VERDICTS: tuple[str, ...] = ("supported", "refuted", "inconclusive")
ALPHA = 0.05
N_PERM = 2000
N_BOOT = 1000


@dataclass(frozen=True)
class Verdict:
    """Whether one conjecture holds on one sweep, with the numbers behind it."""

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

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain dict (numpy scalars and arrays converted)."""
        return _jsonable(asdict(self))

    def summary(self) -> str:
        """One line: name, verdict, statistic, effect [CI], p, n."""
        return (f"{self.name}: {self.verdict.upper()}  stat={_fmt(self.statistic)} "
                f"effect={_fmt(self.effect)} [{_fmt(self.ci_low)}, {_fmt(self.ci_high)}] "
                f"p={_fmt(self.p_value)} n={self.n}")


def inconclusive(name: str, statement: str, reason: str, /, n: int = 0, **details: Any) -> Verdict:
    """A verdict that could not be reached (too little data), saying why."""
    return Verdict(name, statement, "inconclusive", n=n, details={**details, "reason": reason})


def decide(p_value: float, effect: float, predicted_sign: int, alpha: float = ALPHA) -> VerdictKind:
    """supported / refuted / inconclusive from a two-sided p and the effect's sign."""
    if not (np.isfinite(p_value) and np.isfinite(effect)) or p_value >= alpha or effect == 0:
        return "inconclusive"
    return "supported" if np.sign(effect) == np.sign(predicted_sign) else "refuted"


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
    """A statistic with its permutation p-value and a bootstrap CI of the effect."""

    statistic: float
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    details: dict[str, Any] = field(default_factory=dict)

    def verdict(self, name: str, statement: str, predicted_sign: int,
                alpha: float = ALPHA, **details: Any) -> Verdict:
        kind = decide(self.p_value, self.statistic, predicted_sign, alpha)
        return Verdict(name, statement, kind, self.statistic, self.effect, self.ci_low,
                       self.ci_high, self.p_value, self.n,
                       {"predicted_sign": int(np.sign(predicted_sign)), "alpha": alpha,
                        **self.details, **details})


def _strata_index(strata: Any, n: int) -> list[np.ndarray]:
    if strata is None:
        return [np.arange(n)]
    codes = pd.factorize(pd.Series(np.asarray(strata, dtype=object)).astype(str))[0]
    return [np.flatnonzero(codes == c) for c in np.unique(codes)]


def _rank_rows(a: np.ndarray) -> np.ndarray:
    return stats.rankdata(a, axis=-1)


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho along the last axis (rows are independent samples); 0 where undefined."""
    rx = _rank_rows(x) - (x.shape[-1] + 1) / 2
    ry = _rank_rows(y) - (y.shape[-1] + 1) / 2
    num = (rx * ry).sum(-1)
    den = np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return rho


def _extreme_diff(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean y at the largest x minus mean y at the smallest x, per row."""
    hi = x == x.max(-1, keepdims=True)
    lo = x == x.min(-1, keepdims=True)
    return (y * hi).sum(-1) / hi.sum(-1) - (y * lo).sum(-1) / lo.sum(-1)


def trend_test(x: Iterable[float], y: Iterable[float], strata: Any = None, *,
               n_perm: int = N_PERM, n_boot: int = N_BOOT, rng_seed: int = 0,
               alpha: float = ALPHA, log_x: bool = False) -> TestResult:
    """Monotone trend of y in x within strata (e.g. lr within each batch size).

    Strata with fewer than 3 trials or a single x level carry no information
    and are dropped (counted in details). statistic = size-weighted mean of the
    per-stratum Spearman rho; p = two-sided permutation p (y shuffled within
    strata); effect = mean over strata of mean(y | max x) - mean(y | min x),
    CI = percentile bootstrap (trials resampled within strata) at 1 - alpha.
    """
    x = np.asarray(list(x), dtype=float)
    y = np.asarray(list(y), dtype=float)
    if log_x:
        x = np.log(x)
    ok = np.isfinite(x) & np.isfinite(y)
    s_all = np.asarray(strata, dtype=object)[ok] if strata is not None else None
    x, y = x[ok], y[ok]
    groups = [g for g in _strata_index(s_all, len(x))
              if len(g) >= 3 and np.unique(x[g]).size >= 2]
    n_used = int(sum(len(g) for g in groups))
    details = {"n_strata": len(groups), "n_dropped_nonfinite": int((~ok).sum()),
               "n_dropped_small_strata": int(len(x) - n_used)}
    if not groups:
        return TestResult(math.nan, math.nan, math.nan, math.nan, math.nan, 0,
                          {**details, "reason": "no stratum with >= 3 trials and >= 2 levels"})
    rng = np.random.default_rng(rng_seed)
    weights = np.array([len(g) for g in groups], dtype=float)
    weights /= weights.sum()
    rho_obs = np.array([_spearman_rows(x[g], y[g]) for g in groups])
    stat = float(weights @ rho_obs)
    eff_obs = float(np.mean([_extreme_diff(x[g], y[g]) for g in groups]))

    perm_stat = np.zeros(n_perm)
    boot_eff = np.zeros(n_boot)
    boot_stat = np.zeros(n_boot)
    for w, g in zip(weights, groups):
        xg, yg = x[g], y[g]
        perms = rng.permuted(np.broadcast_to(yg, (n_perm, len(g))), axis=1)
        perm_stat += w * _spearman_rows(np.broadcast_to(xg, perms.shape), perms)
        idx = rng.integers(0, len(g), size=(n_boot, len(g)))
        bx, by = xg[idx], yg[idx]
        one_level = bx.min(-1) == bx.max(-1)
        bx = np.where(one_level[:, None], xg[None, :], bx)   # degenerate resample: keep original
        by = np.where(one_level[:, None], yg[None, :], by)
        boot_eff += _extreme_diff(bx, by) / len(groups)
        boot_stat += w * _spearman_rows(bx, by)
    p = float((1 + np.sum(np.abs(perm_stat) >= abs(stat) - 1e-12)) / (1 + n_perm))
    lo, hi = np.quantile(boot_eff, [alpha / 2, 1 - alpha / 2])
    rlo, rhi = np.quantile(boot_stat, [alpha / 2, 1 - alpha / 2])
    details.update(rho_per_stratum=[float(r) for r in rho_obs],
                   rho_ci=[float(rlo), float(rhi)], test="stratified Spearman, permutation")
    return TestResult(stat, eff_obs, float(lo), float(hi), p, n_used, details)


def compare_groups(a: Iterable[float], b: Iterable[float], *, n_perm: int = N_PERM,
                   n_boot: int = N_BOOT, rng_seed: int = 0, alpha: float = ALPHA,
                   shift: float = 0.0, alternative: str = "two-sided") -> TestResult:
    """mean(a) - mean(b): permutation p-value and bootstrap CI.

    `shift` tests H0: mean(a) - mean(b) = -shift (non-inferiority margin);
    `alternative` is 'two-sided', 'greater' (a - b + shift > 0) or 'less'.
    statistic = effect = mean(a) - mean(b); CI is the two-sided 1 - alpha
    percentile bootstrap interval (or 1 - 2 alpha for a one-sided test, so its
    lower/upper end is the one-sided bound).
    """
    a = np.asarray(list(a), dtype=float)
    b = np.asarray(list(b), dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    n = len(a) + len(b)
    if len(a) < 2 or len(b) < 2:
        return TestResult(math.nan, math.nan, math.nan, math.nan, math.nan, n,
                          {"n_a": len(a), "n_b": len(b), "reason": "fewer than 2 trials in a group"})
    rng = np.random.default_rng(rng_seed)
    diff = float(a.mean() - b.mean())
    pooled = np.concatenate([a + shift, b])
    perms = rng.permuted(np.broadcast_to(pooled, (n_perm, n)), axis=1)
    pd_ = perms[:, :len(a)].mean(1) - perms[:, len(a):].mean(1)
    obs = diff + shift
    if alternative == "greater":
        p = (1 + np.sum(pd_ >= obs - 1e-12)) / (1 + n_perm)
    elif alternative == "less":
        p = (1 + np.sum(pd_ <= obs + 1e-12)) / (1 + n_perm)
    else:
        p = (1 + np.sum(np.abs(pd_) >= abs(obs) - 1e-12)) / (1 + n_perm)
    ba = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1)
    bb = b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1)
    level = alpha if alternative == "two-sided" else 2 * alpha
    lo, hi = np.quantile(ba - bb, [level / 2, 1 - level / 2])
    details = {"n_a": len(a), "n_b": len(b), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
               "test": f"difference of means, permutation ({alternative})"}
    if shift:
        details["margin"] = shift
    return TestResult(diff, diff, float(lo), float(hi), float(p), n, details)


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
