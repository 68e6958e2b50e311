"""Readers and conjectures of the frequency principle (plans and their
reasons: `plans.py`).

v1, `frequency.low_first`: the convergence step of each tracked frequency is
the first probe step from which Δ_F(k_i) stays below an absolute `threshold`
for `hold` consecutive probe steps (fewer only where the run ends). `hold=1`
is the first crossing, which a chance dip fakes (a sine1d pilot with Adam at
η = 1e-3 touched Δ_F(k_0) = 0.02 at step 1); `hold=None` asks Δ_F to stay
below until the end, which a late loss spike undoes (a pilot at η = 3e-4 put
k_0 at step 1990 of 3000 that way). Kendall's τ_b between the frequency rank
i and the convergence step is > 0 when lower frequencies converge earlier. A
frequency that never converges is ranked after every one that did
(`unreached="last"`, tied with the other unreached ones) or dropped
(`unreached="drop"`); either way the unreached ones are counted per rank in
`details`. A trial whose τ is undefined (fewer than two distinct convergence
steps) is excluded and counted.

v2, `frequency.high_after_low`: the same convergence rule with a relative
threshold (a fraction of Δ_F(k_i) at step 0), and per trial the contrast
d = ln t_high − ln t_low of the lowest and highest tracked peaks, censored
at the trial's last probe step (`trial_contrast`).

Both judge the per-trial values by the one-sample sign-flip test of their
mean, one verdict per arm (data set / model) when the sweep has several:
arms differ too much to pool.
"""
from __future__ import annotations

import math
import re
from typing import Any, Literal

import numpy as np
import pandas as pd

from sweeps.conjectures.inference import sign_flip_test
from sweeps.conjectures.verdict import N_BOOT, N_PERM, Verdict, verdict_of
from sweeps.experiments.frequency.plans import ARM_FIELDS, PLANS, THRESHOLD
from sweeps.experiments.registry import Plans, conjecture
from sweeps.table import SweepTable, param

DELTA = re.compile(r"^freq/delta_k(\d+)$")
E_LOW, E_HIGH = re.compile(r"^freq/e_low_w(\d+)$"), re.compile(r"^freq/e_high_w(\d+)$")
BIN = "freq/bin"


def delta_keys(table: SweepTable, pattern: re.Pattern = DELTA) -> list[str]:
    """The logged keys matching `pattern`, ordered by their index (frequency rank)."""
    keys = [k for k in table.metrics["key"].unique() if pattern.match(str(k))]
    return sorted(keys, key=lambda k: int(pattern.match(k).group(1)))


# ------------------------------------------------------------- per trial
def arms_of(runs: pd.DataFrame, fields: Any = ARM_FIELDS) -> pd.Series:
    """An arm label per trial, `<data set>/<model>` from the columns present ("all" if none)."""
    cols = [c for c in fields if c in runs.columns]
    if not cols:
        return pd.Series("all", index=runs.index)
    return runs[cols].astype(str).agg("/".join, axis=1)


def convergence_step(steps: np.ndarray, values: np.ndarray, threshold: float = THRESHOLD,
                     hold: int | None = 3) -> float:
    """The first step from which values stay below threshold for `hold`
    consecutive measurements (all the remaining ones when fewer are left;
    `hold=None`: until the end); NaN if never. Non-finite values are not below."""
    v = np.asarray(values, dtype=float)
    below = np.isfinite(v) & (v < threshold)
    n = len(below)
    for i in np.flatnonzero(below):
        end = n if hold is None else min(n, i + hold)
        if below[i:end].all():
            return float(np.asarray(steps)[i])
    return math.nan


def kendall_tau(x: Any, y: Any) -> float:
    """Kendall's τ_b (ties in either variable corrected for); NaN when either
    variable is constant. Pairs with a non-finite value are dropped."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    n1, n2 = np.sum(sx == 0), np.sum(sy == 0)
    den = math.sqrt((n0 - n1) * (n0 - n2))
    return float(np.sum(sx * sy) / den) if den > 0 else math.nan


def trial_convergence(table: SweepTable, threshold: float = THRESHOLD,
                      unreached: Literal["last", "drop"] = "last",
                      hold: int | None = 3) -> pd.DataFrame:
    """One row per trial: convergence step of each tracked frequency
    (`step_k{i}`, NaN: never below threshold, `unreached_k{i}` True, or not
    tracked by this trial), how many tracked ones never converged, and τ between rank and convergence
    step under the `unreached` rule. A trial tracks the frequencies it logged
    (arms of one sweep may track different numbers of peaks)."""
    keys = delta_keys(table)
    rows = []
    for _, r in table.runs.iterrows():
        rid = r["run_id"]
        row: dict[str, Any] = {"run_id": rid, "status": r["status"], "seed": r["seed"]}
        ranks, conv, last = [], [], -math.inf
        for key in keys:
            i = int(DELTA.match(key).group(1))
            s = table.series(rid, key).sort_index()
            row[f"step_k{i}"], row[f"unreached_k{i}"] = math.nan, False
            if s.empty:
                continue
            last = max(last, float(s.index.max()))
            row[f"step_k{i}"] = convergence_step(s.index.to_numpy(), s.to_numpy(float), threshold, hold)
            row[f"unreached_k{i}"] = bool(np.isnan(row[f"step_k{i}"]))
            ranks.append(float(i))
            conv.append(row[f"step_k{i}"])
        conv = np.asarray(conv, dtype=float)
        row["n_tracked"], row["n_unreached"] = len(conv), int(np.isnan(conv).sum())
        if unreached == "last":
            conv = np.where(np.isnan(conv), last + 1, conv)
        row["tau"] = kendall_tau(ranks, conv) if len(conv) >= 2 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------- conjecture
@conjecture(PLANS)
def low_first(table: SweepTable, plans: Plans, *,
              n_perm: int = N_PERM, n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Low frequencies converge first: per-trial Kendall τ between frequency
    rank and its convergence step is positive on average, per arm.

    The threshold, `hold` and the `unreached` rule are the plan's options
    (change them with `plan.with_overrides(options=...)`: exploratory)."""
    (plan,) = plans.values()
    threshold, unreached = float(plan.options["threshold"]), plan.options["unreached"]
    hold = plan.options["hold"]
    held = "until the end" if hold is None else f"for {hold} probe steps"
    statement = (f"low frequencies converge first (Kendall τ between frequency rank and the step "
                 f"from which Δ_F(k) < {threshold:g} {held} is > 0; unreached: {unreached})")
    if unreached not in ("last", "drop"):
        raise ValueError(f"unreached must be 'last' or 'drop', got {unreached!r}")
    runs, excluded = table.usable()
    keys = delta_keys(table)
    if len(keys) < 2:
        return [verdict_of(plan, None, statement=statement, n=0, **excluded,
                           reason=f"fewer than 2 freq/delta_k* metrics were logged "
                                  f"({len(keys)}; switch on probes.frequency)")]
    conv = trial_convergence(table, threshold, unreached, hold).set_index("run_id")
    arms = arms_of(runs.set_index("run_id"), plan.options["arm_fields"])
    out = []
    for arm in sorted(arms.unique()):
        c = conv.loc[arms.index[arms == arm]]
        ranks = [k[5:] for k in c.columns if k.startswith("step_k")]
        details = {**excluded, "arm": arm, "threshold": threshold, "unreached": unreached,
                   "hold": hold, "frequencies": int(c["n_tracked"].max()),
                   "unreached_per_rank": {k: int(c[f"unreached_{k}"].sum()) for k in ranks},
                   "excluded_tau_undefined": int(c["tau"].isna().sum()),
                   "fraction_tau_positive": float((c["tau"] > 0).mean())}
        vname = plan.conjecture if arms.nunique() == 1 else f"{plan.conjecture}[{arm}]"
        res = sign_flip_test(c["tau"].to_numpy(float), n_perm=n_perm, n_boot=n_boot,
                             rng_seed=rng_seed, alpha=plan.alpha, bounds=(-1.0, 1.0))   # τ's range
        out.append(verdict_of(plan, res, name=vname, statement=statement, **details))
    return out



# ------------------------------------------------------- v2: relative, paired
def relative_convergence_step(steps: np.ndarray, values: np.ndarray, fraction: float,
                              hold: int | None = 3) -> float:
    """`convergence_step` with the threshold `fraction` × the value at the
    first step (step 0 of a log schedule); NaN if never, or if that first
    value is not a positive number."""
    v = np.asarray(values, dtype=float)
    if not len(v) or not np.isfinite(v[0]) or v[0] <= 0:
        return math.nan
    return convergence_step(steps, v, fraction * v[0], hold)


def _rank(keys: list[str], which: Any) -> int | None:
    """The frequency rank named by a plan option: an int, or "last" (highest logged)."""
    ranks = [int(DELTA.match(k).group(1)) for k in keys]
    if which == "last":
        return max(ranks) if ranks else None
    return int(which) if int(which) in ranks else None


def trial_contrast(table: SweepTable, fraction: float = 0.5, hold: int | None = 3,
                   low: Any = 0, high: Any = "last") -> pd.DataFrame:
    """One row per trial: the budget (its last probe step), t_low and t_high
    (relative convergence steps of ranks `low` and `high`, censored at the
    budget, with `censored_low`/`censored_high`), d = ln t_high − ln t_low,
    the two frequencies, and the smallest gap in grid bins between adjacent
    tracked peaks (`min_gap_bins`, from `freq/k{i}` over `freq/bin`; NaN
    when the probe did not log `freq/bin`)."""
    keys = delta_keys(table)
    rows = []
    for _, r in table.runs.iterrows():
        rid = r["run_id"]
        row: dict[str, Any] = {"run_id": rid, "status": r["status"], "seed": r["seed"]}
        mine = [k for k in keys if not table.series(rid, k).empty]
        lo, hi = _rank(mine, low), _rank(mine, high)
        row.update(rank_low=lo, rank_high=hi)
        if lo is None or hi is None or lo == hi:
            rows.append({**row, "d": math.nan})
            continue
        budget = -math.inf
        for name, rank in (("low", lo), ("high", hi)):
            s = table.series(rid, f"freq/delta_k{rank}").sort_index()
            budget = max(budget, float(s.index.max()))
            row[f"t_{name}"] = relative_convergence_step(s.index.to_numpy(), s.to_numpy(float),
                                                         fraction, hold)
            k = table.series(rid, f"freq/k{rank}")
            row[f"k_{name}"] = float(k.iloc[0]) if not k.empty else math.nan
        row["budget"] = budget
        for name in ("low", "high"):
            row[f"censored_{name}"] = bool(np.isnan(row[f"t_{name}"]))
            if row[f"censored_{name}"]:
                row[f"t_{name}"] = budget
        row["d"] = math.log(max(row["t_high"], 1.0)) - math.log(max(row["t_low"], 1.0))
        freqs = sorted(float(table.series(rid, f"freq/k{i}").iloc[0]) for i in range(lo, hi + 1)
                       if not table.series(rid, f"freq/k{i}").empty)
        b = table.series(rid, BIN)
        row["min_gap_bins"] = (float(np.min(np.diff(freqs)) / b.iloc[0])
                               if len(freqs) >= 2 and not b.empty and b.iloc[0] > 0 else math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def _checks(c: pd.DataFrame, centring: pd.Series,
            options: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    """The plan's manipulation checks on one arm's contrast rows and its
    trials' `probes.frequency_centring`."""
    modes = sorted(set(centring.astype(str)))
    min_sep, share = float(options["min_sep_bins"]), float(options["min_low_reached"])
    gaps = c["min_gap_bins"].to_numpy(float)
    # a gap of m grid bins comes back as m·(1 ± 1e-12) through floats
    sep_ok = bool(len(gaps)) and bool(np.all(np.isfinite(gaps) & (gaps >= min_sep - 1e-6)))
    smallest = float(np.min(gaps)) if len(gaps) else math.nan
    reached = float((~c["censored_low"].astype(bool)).mean()) if len(c) else 0.0
    return {"centred": (modes == [str(options["centring"])], f"probe centring {modes}"),
            "peaks_separated": (sep_ok, f"smallest gap {smallest:.3g} bins (min {min_sep:g})"),
            "low_converges": (reached >= share,
                              f"low converged in {reached:.2f} of the trials (min {share:g})")}


@conjecture(PLANS)
def high_after_low(table: SweepTable, plans: Plans, *,
                   n_perm: int = N_PERM, n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """The highest tracked frequency converges later than the lowest, relative
    to where each started: mean per-trial ln t_high − ln t_low > 0, per arm.
    Every number of the rule is the plan's option (`plans.py`)."""
    (plan,) = plans.values()
    o = plan.options
    if o["censor"] != "budget":
        raise ValueError(f"censor must be 'budget', got {o['censor']!r}")
    fraction, hold = float(o["fraction"]), o["hold"]
    statement = (f"the highest tracked frequency converges later than the lowest (t: first probe "
                 f"step from which Δ_F(k) < {fraction:g} × its step-0 value for {hold} probes; "
                 f"mean ln t_high − ln t_low > 0; censored at the budget)")
    runs, excluded = table.usable()
    if len(delta_keys(table)) < 2:
        return [verdict_of(plan, None, statement=statement, n=0, **excluded,
                           reason="fewer than 2 freq/delta_k* metrics were logged "
                                  "(switch on probes.frequency)")]
    usable = set(runs["run_id"])
    con = trial_contrast(table, fraction, hold, o["low"], o["high"])
    con = con[con["run_id"].isin(usable)].set_index("run_id")
    arms = arms_of(runs.set_index("run_id"), o["arm_fields"])
    out = []
    for arm in sorted(arms.unique()):
        c = con.loc[arms.index[arms == arm]]
        c = c[np.isfinite(c["d"].to_numpy(float))]
        vname = plan.conjecture if arms.nunique() == 1 else f"{plan.conjecture}[{arm}]"
        if c.empty:
            out.append(verdict_of(plan, None, name=vname, statement=statement, n=0, **excluded,
                                  arm=arm, reason="no trial tracked two distinct frequencies"))
            continue
        both = c["censored_low"].astype(bool) & c["censored_high"].astype(bool)
        details = {**excluded, "arm": arm, "fraction": fraction, "hold": hold,
                   "censored_low": int(c["censored_low"].sum()),
                   "censored_high": int(c["censored_high"].sum()), "censored_both": int(both.sum()),
                   "k_low_mean": float(c["k_low"].mean()), "k_high_mean": float(c["k_high"].mean()),
                   "t_low_median": float(c["t_low"].median()),
                   "t_high_median": float(c["t_high"].median()),
                   "fraction_d_positive": float((c["d"] > 0).mean())}
        res = sign_flip_test(c["d"].to_numpy(float), n_perm=n_perm, n_boot=n_boot,
                             rng_seed=rng_seed, alpha=plan.alpha)
        centring = param(runs.set_index("run_id"), "probes.frequency_centring", "none").loc[c.index]
        out.append(verdict_of(plan, res, checks=_checks(c, centring, o), name=vname,
                              statement=statement, **details))
    return out


def contrast_table(table: SweepTable) -> pd.DataFrame | None:
    """Per trial under the registered v2 plan: t_low, t_high, censoring, d, peak gap."""
    o = PLANS["frequency.high_after_low"].options
    return (trial_contrast(table, o["fraction"], o["hold"], o["low"], o["high"])
            if len(delta_keys(table)) >= 2 else None)



def convergence_table(table: SweepTable) -> pd.DataFrame | None:
    """Per trial: convergence step of each tracked frequency, unreached count, τ."""
    return trial_convergence(table) if delta_keys(table) else None
