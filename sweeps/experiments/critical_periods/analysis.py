"""The critical-periods experiment's arms, manipulation check and conjectures
(see the package docstring)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from sweeps.conjectures.inference import sign_test
from sweeps.conjectures.plan import FROM_PLAN, AnalysisPlan
from sweeps.conjectures.verdict import (ALPHA, N_BOOT, N_PERM, Verdict, compare_groups,
                                        intersection_union, trend_test, verdict_of)
from sweeps.experiments.registry import Plans, conjecture
from sweeps.experiments.critical_periods.plans import (BLUR_HURTS, DROP, END, EPOCHS, FIX, KIND,
                                                       MIN_DROP, PLANS, START, WINDOW)
from sweeps.table import SweepTable


# ------------------------------------------------------------------ arms
@dataclass(frozen=True)
class Arm:
    """Where a trial sits in the protocol, from its config alone."""

    deficit: str          # none | blur | vflip | label_permutation | noise
    sweep: str            # clean | permanent | removal | onset
    start: int            # deficit window [start, end) in epochs (0, 0 for clean)
    end: int
    epochs: int           # run length

    @property
    def budget(self) -> int:
        """Clean epochs after the deficit window."""
        return self.epochs - self.end

    @property
    def window(self) -> int:
        return self.end - self.start

    @property
    def label(self) -> str:
        if self.sweep == "clean":
            return f"clean/{self.epochs}"
        if self.sweep == "permanent":
            return f"{self.deficit}/always/{self.epochs}"
        return f"{self.deficit}/[{self.start},{self.end})/{self.epochs}"


def arm_of(row: pd.Series | dict) -> Arm:
    """The arm of one table row (see module docstring); the window is clipped to the run."""
    kind = str(row.get(KIND, "none") or "none")
    epochs = _int(row.get(EPOCHS, 0))
    start, end = _int(row.get(START, 0)), min(_int(row.get(END, 0)), epochs)
    if kind in ("none", "nan") or end <= start:
        return Arm("none", "clean", 0, 0, epochs)
    if start == 0 and end >= epochs:
        return Arm(kind, "permanent", 0, epochs, epochs)
    return Arm(kind, "removal" if start == 0 else "onset", start, end, epochs)


def _int(v: Any) -> int:
    v = pd.to_numeric(pd.Series([v]), errors="coerce").iloc[0]
    return int(v) if pd.notna(v) else 0


def arm_frame(table: SweepTable) -> tuple[pd.DataFrame, dict[str, int]]:
    """Finished runs with their arm fields and final accuracy (`acc`), and the exclusion counts."""
    runs, excluded = table.usable()
    acc = table.final("final/val_acc", fallback="val/acc")
    arms = [arm_of(r) for _, r in runs.iterrows()]
    df = pd.DataFrame({"run_id": runs["run_id"].to_numpy(),
                       "seed": runs["seed"].to_numpy(),
                       "deficit": [a.deficit for a in arms], "sweep": [a.sweep for a in arms],
                       "start": [a.start for a in arms], "end": [a.end for a in arms],
                       "epochs": [a.epochs for a in arms], "budget": [a.budget for a in arms],
                       "window": [a.window for a in arms], "arm": [a.label for a in arms]})
    df["acc"] = acc.reindex(df["run_id"]).to_numpy(float)
    return df, excluded


def clean_acc(df: pd.DataFrame, epochs: int) -> pd.Series:
    """Final accuracies of the clean arm of this run length."""
    return df.loc[(df["sweep"] == "clean") & (df["epochs"] == epochs), "acc"]


def _mode(values: pd.Series) -> int | None:
    return None if values.empty else int(values.value_counts().sort_index().idxmax())


# ------------------------------------------------------- manipulation check
def blur_test(df: pd.DataFrame, *, alpha: float = ALPHA, min_drop: float = MIN_DROP,
              n_perm: int = N_PERM, n_boot: int = N_BOOT, rng_seed: int = 0):
    """(result, epochs, reason): does a permanent blur lower final accuracy by more than
    `min_drop` against clean runs of the same length? result None without the arm."""
    perm = df[(df["sweep"] == "permanent") & (df["deficit"] == "blur")]
    epochs = _mode(perm["epochs"])
    if epochs is None:
        return None, None, "no permanently blurred arm in the sweep"
    res = compare_groups(perm.loc[perm["epochs"] == epochs, "acc"], clean_acc(df, epochs),
                         n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=alpha,
                         shift=min_drop, alternative="two-sided")
    return res, epochs, res.details.get("reason", "")


def blur_check(df: pd.DataFrame, *, alpha: float = ALPHA, min_drop: float = MIN_DROP,
               n_perm: int = N_PERM, n_boot: int = N_BOOT, rng_seed: int = 0) -> tuple[bool, str]:
    """The manipulation check `blur_hurts` as (passed, one-line detail)."""
    res, epochs, why = blur_test(df, alpha=alpha, min_drop=min_drop, n_perm=n_perm,
                                 n_boot=n_boot, rng_seed=rng_seed)
    if res is None or not np.isfinite(res.p_value):
        return False, f"the deficit does not hurt: {why or 'no test'}; to fix: {FIX}"
    passed = res.p_value < alpha and res.effect < -min_drop
    return passed, (f"permanent blur changed final accuracy by {res.effect:+.4f} "
                    f"(p = {res.p_value:.3g} against a drop of {min_drop:g}, {epochs} epochs)"
                    + ("" if passed else f"; the deficit does not hurt; to fix: {FIX}"))


@conjecture(PLANS)
def pilot_blur_hurts(table: SweepTable, plans: Plans,
                     **options: Any) -> list[Verdict]:
    """Manipulation check: the permanently blurred arm ends less accurate than the clean arm."""
    (plan,) = plans.values()
    df, excluded = arm_frame(table)
    res, epochs, why = blur_test(df, alpha=plan.alpha, min_drop=plan.options["min_drop"],
                                 **options)
    base = {**excluded, "epochs": epochs, "min_drop": plan.options["min_drop"],
            "groups": {"a": "blur always", "b": "clean"}}
    v = verdict_of(plan, res, n=0, reason=why, **base)
    return [v if v.verdict == "supported" else replace(v, details={**v.details, "fix": FIX})]


def _gate(df: pd.DataFrame, plan: AnalysisPlan, n_perm: int, n_boot: int,
          rng_seed: int) -> dict[str, tuple[bool, str]]:
    """A deficit conjecture's manipulation check, at its plan's alpha and `min_drop`."""
    return {BLUR_HURTS.name: blur_check(df, alpha=plan.alpha, min_drop=plan.options["min_drop"],
                                        n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed)}


def _failed(plan: AnalysisPlan, checks: dict[str, tuple[bool, str]], **details: Any) -> Verdict | None:
    """The invalid-protocol verdict when a check failed (None when all passed)."""
    if all(passed for passed, _ in checks.values()):
        return None
    return verdict_of(plan, None, checks=checks, n=0, fix=FIX, **details)


# ------------------------------------------------------------ removal sweep
def removal_frame(df: pd.DataFrame, deficit: str = "blur", budget: int | None = None
                  ) -> tuple[pd.DataFrame, int | None]:
    """Removal trials of one deficit sharing one clean budget, with the clean arm as N = 0.

    Column `N` = deficit end epoch; budget = the most common one unless given.
    """
    rem = df[(df["sweep"] == "removal") & (df["deficit"] == deficit)]
    budget = _mode(rem["budget"]) if budget is None else budget
    if budget is None:
        return rem.assign(N=[]), None
    rem = rem[rem["budget"] == budget]
    clean = df[(df["sweep"] == "clean") & (df["epochs"] == budget)]
    return pd.concat([clean.assign(N=0), rem.assign(N=rem["end"])]), budget


def removal_shape(levels: np.ndarray, means: np.ndarray) -> dict[str, Any]:
    """Shape of accuracy against N: drops over the first and second half of
    the N range, and R² of a straight line against the best one-step fit."""
    x, y = np.asarray(levels, float), np.asarray(means, float)
    if x.size < 3:
        return {"shape": "too few levels"}
    mid = (x[0] + x[-1]) / 2
    y_mid = float(np.interp(mid, x, y))
    first, second = float(y[0] - y_mid), float(y_mid - y[-1])
    sst = float(((y - y.mean()) ** 2).sum()) or np.inf
    line = np.polyval(np.polyfit(x, y, 1), x)
    r2_line = 1 - float(((y - line) ** 2).sum()) / sst
    r2_step = max(1 - float(sum(((y[s] - y[s].mean()) ** 2).sum()
                                for s in (slice(0, k), slice(k, None)))) / sst
                  for k in range(1, x.size))
    shape = "saturating" if first > 1.5 * second else (
        "accelerating" if second > 1.5 * first else "linear")
    return {"shape": shape, "drop_first_half": first, "drop_second_half": second,
            "r2_line": r2_line, "r2_step": r2_step}


def removal_test(rem: pd.DataFrame, *, alpha: float, n_perm: int, n_boot: int, rng_seed: int):
    """Statistics of `removal_hurts`: Spearman of final accuracy vs N within seeds, permutation p."""
    return _trend_within_seeds(rem, "N", "acc", alpha=alpha, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed)


@conjecture(PLANS)
def removal_hurts(table: SweepTable, plans: Plans, *,
                  deficit: Any = FROM_PLAN, budget: Any = FROM_PLAN, n_perm: int = N_PERM,
                  n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Final accuracy decreases with the epoch N at which the plan's `deficit` is removed."""
    (plan,) = plans.values()
    plan = plan.with_options(deficit=deficit, budget=budget)
    deficit, budget = plan.options["deficit"], plan.options["budget"]
    df, excluded = arm_frame(table)
    checks = _gate(df, plan, n_perm, n_boot, rng_seed)
    if (bad := _failed(plan, checks, **excluded)) is not None:
        return [bad]
    rem, budget = removal_frame(df, deficit, budget)
    base = {**excluded, "budget": budget, "deficit": deficit}
    if len(rem) < 3 or rem["N"].nunique() < 2:
        return [verdict_of(plan, None, checks=checks, n=len(rem),
                           reason=f"only {len(rem)} removal trials at {rem['N'].nunique()} levels of N",
                           **base)]
    res = removal_test(rem, alpha=plan.alpha, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed)
    means = rem.groupby("N")["acc"].mean()
    return [verdict_of(plan, res, checks=checks, **base,
                       mean_acc_by_N={int(k): float(v) for k, v in means.items()},
                       **removal_shape(means.index.to_numpy(), means.to_numpy()))]


# -------------------------------------------------------------- onset sweep
def onset_frame(df: pd.DataFrame, deficit: str = "blur", window: int | None = None,
                epochs: int | None = None) -> tuple[pd.DataFrame, float, dict[str, Any]]:
    """Deficit windows of one length in runs of one length, with `t0` and
    `sensitivity` = mean clean accuracy (same run length) − final accuracy."""
    win = df[df["sweep"].isin(["removal", "onset"]) & (df["deficit"] == deficit)]
    epochs = _mode(win.loc[win["sweep"] == "onset", "epochs"]) if epochs is None else epochs
    win = win[win["epochs"] == epochs] if epochs is not None else win.iloc[:0]
    window = _mode(win.loc[win["sweep"] == "onset", "window"]) if window is None else window
    win = win[win["window"] == window]
    baseline = clean_acc(df, epochs) if epochs is not None else pd.Series(dtype=float)
    base_mean = float(baseline.mean()) if len(baseline) else np.nan
    win = win.assign(t0=win["start"], sensitivity=base_mean - win["acc"])
    return win, base_mean, {"window": window, "epochs": epochs, "n_clean": int(len(baseline)),
                            "baseline_acc": base_mean}


def onset_test(win: pd.DataFrame, *, alpha: float, n_perm: int, n_boot: int, rng_seed: int):
    """Statistics of `early_onset_most_sensitive`: Spearman of sensitivity vs t₀ within seeds."""
    return _trend_within_seeds(win, "t0", "sensitivity", alpha=alpha, n_perm=n_perm, n_boot=n_boot,
                               rng_seed=rng_seed)


def _trend_within_seeds(frame: pd.DataFrame, x: str, y: str, **kw):
    """`trend_test` of column y against column x, the seed as a block."""
    return trend_test(frame[x].to_numpy(float), frame[y].to_numpy(float), None,
                      blocks=frame["seed"].astype(str).to_numpy(), **kw)


@conjecture(PLANS)
def early_onset_most_sensitive(table: SweepTable, plans: Plans, *,
                               deficit: Any = FROM_PLAN, window: Any = FROM_PLAN,
                               epochs: Any = FROM_PLAN, n_perm: int = N_PERM,
                               n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Sensitivity to a short window of the plan's `deficit` is largest when it starts early."""
    (plan,) = plans.values()
    plan = plan.with_options(deficit=deficit, window=window,
                             epochs=epochs)
    deficit, window, epochs = (plan.options[k] for k in ("deficit", "window", "epochs"))
    df, excluded = arm_frame(table)
    checks = _gate(df, plan, n_perm, n_boot, rng_seed)
    if (bad := _failed(plan, checks, **excluded)) is not None:
        return [bad]
    win, base_mean, info = onset_frame(df, deficit, window, epochs)
    base = {**excluded, **info, "deficit": deficit}
    if not np.isfinite(base_mean):
        return [verdict_of(plan, None, checks=checks, n=len(win),
                           reason="no clean trials of the onset run length", **base)]
    if len(win) < 3 or win["t0"].nunique() < 2:
        return [verdict_of(plan, None, checks=checks, n=len(win),
                           reason=f"only {len(win)} onset trials at {win['t0'].nunique()} onsets",
                           **base)]
    res = onset_test(win, alpha=plan.alpha, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed)
    means = win.groupby("t0")["sensitivity"].mean()
    return [verdict_of(plan, res, checks=checks, **base,
                       mean_sensitivity_by_t0={int(k): float(v) for k, v in means.items()})]


# ----------------------------------------------------------------- controls
def noninferiority_test(a: pd.Series, b: pd.Series, margin: float, *, alpha: float,
                        n_perm: int, n_boot: int, rng_seed: int):
    """One control of `controls_no_lasting_effect`: H0 mean(a) − mean(b) = −margin, two-sided
    (significantly above: within the margin; significantly below: a lasting effect)."""
    return compare_groups(a, b, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=alpha,
                          shift=margin, alternative="two-sided")


@conjecture(PLANS)
def controls_no_lasting_effect(table: SweepTable, plans: Plans, *,
                               budget: Any = FROM_PLAN, n_perm: int = N_PERM,
                               n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Flip and label-permutation deficits, once removed, end within `margin` of clean."""
    (plan,) = plans.values()
    plan = plan.with_options(budget=budget)
    budget = plan.options["budget"]
    margin, controls = float(plan.options["margin"]), tuple(plan.options["controls"])
    df, excluded = arm_frame(table)
    checks = _gate(df, plan, n_perm, n_boot, rng_seed)
    if (bad := _failed(plan, checks, **excluded)) is not None:
        return [bad]
    per, results = {}, []
    for c in controls:
        rem, b = removal_frame(df, c, budget)
        ctrl, clean = rem.loc[rem["N"] > 0], rem.loc[rem["N"] == 0, "acc"]
        res = noninferiority_test(ctrl["acc"], clean, margin, alpha=plan.alpha, n_perm=n_perm,
                                  n_boot=n_boot, rng_seed=rng_seed)
        results.append(res)
        per[c] = {"budget": b, "N": sorted(int(n) for n in ctrl["N"].unique()),
                  "difference": res.effect, "ci": [res.ci_low, res.ci_high],
                  "p_value": res.p_value, "n_control": int(len(ctrl)), "n_clean": int(len(clean)),
                  **{k: v for k, v in res.details.items() if k == "reason"}}
    res = intersection_union(results, [+1] * len(results))
    return [verdict_of(plan, res, checks=checks, **excluded, margin=margin, controls=per)]


def noise_test(noise: pd.Series, blur: pd.Series, *, alpha: float, n_perm: int, n_boot: int,
               rng_seed: int):
    """Statistics of `noise_hurts_less_than_blur`: mean(noise) − mean(blur), permutation p."""
    return compare_groups(noise, blur, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed,
                          alpha=alpha)


@conjecture(PLANS)
def noise_hurts_less_than_blur(table: SweepTable, plans: Plans, *,
                               budget: Any = FROM_PLAN, n_perm: int = N_PERM,
                               n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Removed at the same N, a noise deficit ends more accurate than a blur deficit."""
    (plan,) = plans.values()
    plan = plan.with_options(budget=budget)
    budget = plan.options["budget"]
    df, excluded = arm_frame(table)
    checks = _gate(df, plan, n_perm, n_boot, rng_seed)
    if (bad := _failed(plan, checks, **excluded)) is not None:
        return [bad]
    noise, b = removal_frame(df, "noise", budget)
    blur, _ = removal_frame(df, "blur", b)
    noise, blur = noise[noise["N"] > 0], blur[blur["N"] > 0]
    shared = sorted(set(noise["N"]) & set(blur["N"]))
    base = {**excluded, "budget": b, "N": [int(n) for n in shared],
            "groups": {"a": "noise", "b": "blur"}}
    if not shared:
        return [verdict_of(plan, None, checks=checks, n=0,
                           reason="no N at which both noise and blur were removed", **base)]
    res = noise_test(noise.loc[noise["N"].isin(shared), "acc"],
                     blur.loc[blur["N"].isin(shared), "acc"],
                     alpha=plan.alpha, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed)
    return [verdict_of(plan, res, checks=checks, **base)]


# ------------------------------------------------------------------ Fisher
def smooth(values: np.ndarray, window: int = 5) -> np.ndarray:
    """Centred moving average over `window` measurements (shorter at the ends)."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size == 0:
        return v
    kernel = np.ones(min(window, v.size))
    return np.convolve(v, kernel, "same") / np.convolve(np.ones(v.size), kernel, "same")


def rises_then_falls(values: np.ndarray, drop: float = DROP, window: int = WINDOW) -> bool:
    """On the smoothed curve, the maximum is interior (not the first or last
    measurement) and the last value is at most (1 − drop) × the maximum."""
    v = np.asarray(values, dtype=float)
    v = smooth(v[np.isfinite(v)], window)
    if v.size < 3:
        return False
    i = int(np.argmax(v))
    return 0 < i < v.size - 1 and v[-1] <= (1 - drop) * v[i]


@conjecture(PLANS)
def fisher_rises_then_falls(table: SweepTable, plans: Plans, *,
                            deficits: Any = FROM_PLAN, n_perm: int = N_PERM,
                            n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """In most trials Tr F peaks after its first measurement, then falls by `drop`.

    `drop`, the smoothing width and `deficits` (the arms judged; null: every
    arm) are the plan's options. The sign test is exact: the resampling
    options every conjecture takes (n_perm, n_boot, rng_seed) are accepted
    and unused.
    """
    (plan,) = plans.values()
    plan = plan.with_options(
        deficits=list(deficits) if isinstance(deficits, tuple) else deficits)
    drop, window = float(plan.options["drop"]), int(plan.options["smooth"])
    deficits = plan.options["deficits"]
    df, excluded = arm_frame(table)
    if deficits is not None:
        df = df[df["deficit"].isin(deficits)]
    m = table.metric(plan.metric)
    m = m[m["run_id"].isin(df["run_id"]) & np.isfinite(m["value"].astype(float))]
    curves = {rid: g["value"].to_numpy(float) for rid, g in m.groupby("run_id")}
    shapes = {rid: rises_then_falls(v, drop, window) for rid, v in curves.items() if v.size >= 3}
    base = {**excluded, "drop": drop, "window": window,
            "deficits": list(deficits) if deficits else "all",
            "excluded_fewer_than_3_measurements": len(curves) - len(shapes)}
    if not shapes:
        return [verdict_of(plan, None, n=0, **base,
                           reason=f"{plan.metric} logged with >= 3 measurements for no trial")]
    res = sign_test(list(shapes.values()), p0=float(plan.options["p0"]), alpha=plan.alpha)
    by_arm = df.assign(ok=df["run_id"].map(shapes)).dropna(subset=["ok"]).groupby("arm")["ok"]
    return [verdict_of(plan, res, **base, n_rise_fall=int(sum(shapes.values())),
                       share_by_arm={a: float(v.astype(float).mean()) for a, v in by_arm})]


# ------------------------------------------------------------------ tables
def arm_table(table: SweepTable) -> pd.DataFrame | None:
    """Per arm: deficit, sweep, window, run length, final accuracy mean, sd, n."""
    df, _ = arm_frame(table)
    if df.empty:
        return None
    keys = ["arm", "deficit", "sweep", "start", "end", "epochs"]
    out = df.groupby(keys)["acc"].agg(mean="mean", sd="std", n="count").reset_index()
    return out.sort_values(["sweep", "deficit", "epochs", "start", "end"]).reset_index(drop=True)
