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
from sweeps.experiments.critical_periods.plans import (BLUR_HURTS, END, EPOCHS, FISHER, FISHER_RULE, FIX,
                                                       KIND, MIN_DROP, PLANS, RESTART, SCHED,
                                                       START)
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
    schedule: str = "exponential"   # exponential | constant | restart | other (`schedule_of`)

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
            where = f"clean/{self.epochs}"
        elif self.sweep == "permanent":
            where = f"{self.deficit}/always/{self.epochs}"
        else:
            where = f"{self.deficit}/[{self.start},{self.end})/{self.epochs}"
        return f"{self.schedule}:{where}"


def schedule_of(row: pd.Series | dict, end: int | None) -> str:
    """The schedule arm of a row: `constant`; `exponential` (no restart, or one
    the run never reaches); `restart` (the decay restarts at the deficit's end
    `end`); `other` for anything else (another kind, a restart elsewhere)."""
    kind = str(row.get(SCHED, "constant") or "constant")
    restart = _int(row.get(RESTART, 0))
    epochs = _int(row.get(EPOCHS, 0))
    if kind == "constant":
        return "constant"
    if kind != "exponential":
        return "other"
    if restart == 0 or restart >= epochs:
        return "exponential"
    return "restart" if restart == end else "other"


def arm_of(row: pd.Series | dict) -> Arm:
    """The arm of one table row (see module docstring); the window is clipped to the run."""
    kind = str(row.get(KIND, "none") or "none")
    epochs = _int(row.get(EPOCHS, 0))
    start, end = _int(row.get(START, 0)), min(_int(row.get(END, 0)), epochs)
    if kind in ("none", "nan") or end <= start:
        return Arm("none", "clean", 0, 0, epochs, schedule_of(row, None))
    if start == 0 and end >= epochs:
        return Arm(kind, "permanent", 0, epochs, epochs, schedule_of(row, epochs))
    return Arm(kind, "removal" if start == 0 else "onset", start, end, epochs,
               schedule_of(row, end))


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
                       "window": [a.window for a in arms], "schedule": [a.schedule for a in arms],
                       "arm": [a.label for a in arms]})
    df["acc"] = acc.reindex(df["run_id"]).to_numpy(float)
    return df, excluded


def in_schedule(df: pd.DataFrame, schedule: str) -> pd.DataFrame:
    """The trials of one schedule arm. The restart arm shares the exponential
    arm's clean and permanent trials: without a deficit to end, its schedule
    is the exponential decay (the same config, so the same trials)."""
    mine = df["schedule"] == schedule
    if schedule == "restart":
        mine |= (df["schedule"] == "exponential") & df["sweep"].isin(["clean", "permanent"])
    return df[mine]


def clean_acc(df: pd.DataFrame, epochs: int) -> pd.Series:
    """Final accuracies of the clean arm of this run length, indexed by seed
    (the frame given is one schedule arm's)."""
    clean = df[(df["sweep"] == "clean") & (df["epochs"] == epochs)]
    return clean.set_index("seed")["acc"]


def _paired(a: pd.DataFrame, b: pd.DataFrame, **kw):
    """`compare_groups` of mean(a.acc) − mean(b.acc), paired by seed."""
    return compare_groups(a["acc"], b["acc"], blocks_a=a["seed"].astype(str).to_numpy(),
                          blocks_b=b["seed"].astype(str).to_numpy(), **kw)


def _mode(values: pd.Series) -> int | None:
    return None if values.empty else int(values.value_counts().sort_index().idxmax())


# ------------------------------------------------------- manipulation check
def blur_test(df: pd.DataFrame, *, alpha: float = ALPHA, min_drop: float = MIN_DROP,
              n_perm: int = N_PERM, n_boot: int = N_BOOT, rng_seed: int = 0):
    """(result, epochs, reason): does a permanent blur lower final accuracy by more than
    `min_drop` against clean runs of the same length and schedule, paired by seed? The
    exponential arm's (the paper's schedule); result None without a permanent arm."""
    df = in_schedule(df, "exponential")
    perm = df[(df["sweep"] == "permanent") & (df["deficit"] == "blur")]
    epochs = _mode(perm["epochs"])
    if epochs is None:
        return None, None, "no permanently blurred arm in the sweep"
    clean = df[(df["sweep"] == "clean") & (df["epochs"] == epochs)]
    res = _paired(perm[perm["epochs"] == epochs], clean, n_perm=n_perm, n_boot=n_boot,
                  rng_seed=rng_seed, alpha=alpha, shift=min_drop, alternative="two-sided")
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


def _failed(plan: AnalysisPlan, checks: dict[str, tuple[bool, str]], name: str | None = None,
            **details: Any) -> Verdict | None:
    """The invalid-protocol verdict when a check failed (None when all passed)."""
    if all(passed for passed, _ in checks.values()):
        return None
    return verdict_of(plan, None, checks=checks, name=name, n=0, fix=FIX, **details)


def _arms(plans: Plans, **overrides: Any) -> list[tuple[str, AnalysisPlan]]:
    """(verdict name, plan with the caller's overrides) per registered part, in order."""
    return [(name, plan.with_options(**overrides)) for name, plan in plans.items()]


# ------------------------------------------------------------ removal sweep
def removal_frame(df: pd.DataFrame, deficit: str = "blur", budget: int | None = None
                  ) -> tuple[pd.DataFrame, int | None]:
    """Removal trials of one deficit sharing one clean budget, with the clean arm as N = 0
    (`df`: one schedule arm's trials, `in_schedule`).

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
    """Per schedule arm: final accuracy decreases with the epoch N at which the plan's
    `deficit` is removed."""
    df, excluded = arm_frame(table)
    out = []
    for name, plan in _arms(plans, deficit=deficit, budget=budget):
        deficit_, schedule = plan.options["deficit"], plan.options["schedule"]
        checks = _gate(df, plan, n_perm, n_boot, rng_seed)
        if (bad := _failed(plan, checks, name, **excluded)) is not None:
            out.append(bad)
            continue
        rem, b = removal_frame(in_schedule(df, schedule), deficit_, plan.options["budget"])
        base = {**excluded, "budget": b, "deficit": deficit_, "schedule": schedule}
        if len(rem) < 3 or rem["N"].nunique() < 2:
            out.append(verdict_of(plan, None, checks=checks, name=name, n=len(rem),
                                  reason=f"only {len(rem)} removal trials at "
                                         f"{rem['N'].nunique()} levels of N", **base))
            continue
        res = removal_test(rem, alpha=plan.alpha, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed)
        means = rem.groupby("N")["acc"].mean()
        out.append(verdict_of(plan, res, checks=checks, name=name, **base,
                              mean_acc_by_N={int(k): float(v) for k, v in means.items()},
                              **removal_shape(means.index.to_numpy(), means.to_numpy())))
    return out


# -------------------------------------------------------------- onset sweep
def onset_frame(df: pd.DataFrame, deficit: str = "blur", window: int | None = None,
                epochs: int | None = None) -> tuple[pd.DataFrame, float, dict[str, Any]]:
    """Deficit windows of one length in runs of one length (`df`: one schedule
    arm's trials), with `t0` and `sensitivity` = the clean run's accuracy (same
    seed, same run length) − final accuracy; seeds without a clean run drop out."""
    win = df[df["sweep"].isin(["removal", "onset"]) & (df["deficit"] == deficit)]
    epochs = _mode(win.loc[win["sweep"] == "onset", "epochs"]) if epochs is None else epochs
    win = win[win["epochs"] == epochs] if epochs is not None else win.iloc[:0]
    window = _mode(win.loc[win["sweep"] == "onset", "window"]) if window is None else window
    win = win[win["window"] == window]
    clean = clean_acc(df, epochs) if epochs is not None else pd.Series(dtype=float)
    clean = clean[~clean.index.duplicated()]
    base_mean = float(clean.mean()) if len(clean) else np.nan
    win = win.assign(t0=win["start"], sensitivity=win["seed"].map(clean) - win["acc"])
    win = win[np.isfinite(win["sensitivity"].astype(float))]
    return win, base_mean, {"window": window, "epochs": epochs, "n_clean": int(len(clean)),
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
    """Per schedule arm: sensitivity to a window of the plan's `deficit` is largest when it
    starts early."""
    df, excluded = arm_frame(table)
    out = []
    for name, plan in _arms(plans, deficit=deficit, window=window, epochs=epochs):
        deficit_, schedule = plan.options["deficit"], plan.options["schedule"]
        checks = _gate(df, plan, n_perm, n_boot, rng_seed)
        if (bad := _failed(plan, checks, name, **excluded)) is not None:
            out.append(bad)
            continue
        win, base_mean, info = onset_frame(in_schedule(df, schedule), deficit_,
                                           plan.options["window"], plan.options["epochs"])
        base = {**excluded, **info, "deficit": deficit_, "schedule": schedule}
        if not np.isfinite(base_mean):
            out.append(verdict_of(plan, None, checks=checks, name=name, n=len(win),
                                  reason="no clean trials of the onset run length", **base))
            continue
        if len(win) < 3 or win["t0"].nunique() < 2:
            out.append(verdict_of(plan, None, checks=checks, name=name, n=len(win),
                                  reason=f"only {len(win)} onset trials at "
                                         f"{win['t0'].nunique()} onsets", **base))
            continue
        res = onset_test(win, alpha=plan.alpha, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed)
        means = win.groupby("t0")["sensitivity"].mean()
        out.append(verdict_of(plan, res, checks=checks, name=name, **base,
                              mean_sensitivity_by_t0={int(k): float(v) for k, v in means.items()}))
    return out


# ----------------------------------------------------------------- controls
def noninferiority_test(a: pd.DataFrame, b: pd.DataFrame, margin: float, *, alpha: float,
                        n_perm: int, n_boot: int, rng_seed: int):
    """One control of `controls_no_lasting_effect`: H0 mean(a) − mean(b) = −margin, two-sided,
    paired by seed (significantly above: within the margin; below: a lasting effect)."""
    return _paired(a, b, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=alpha,
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
    arm = in_schedule(df, plan.options["schedule"])
    per, results = {}, []
    for c in controls:
        rem, b = removal_frame(arm, c, budget)
        ctrl, clean = rem.loc[rem["N"] > 0], rem.loc[rem["N"] == 0]
        res = noninferiority_test(ctrl, clean, margin, alpha=plan.alpha, n_perm=n_perm,
                                  n_boot=n_boot, rng_seed=rng_seed)
        results.append(res)
        per[c] = {"budget": b, "N": sorted(int(n) for n in ctrl["N"].unique()),
                  "difference": res.effect, "ci": [res.ci_low, res.ci_high],
                  "p_value": res.p_value, "n_control": int(len(ctrl)), "n_clean": int(len(clean)),
                  **{k: v for k, v in res.details.items() if k == "reason"}}
    res = intersection_union(results, [+1] * len(results))
    return [verdict_of(plan, res, checks=checks, **excluded, margin=margin,
                       schedule=plan.options["schedule"], controls=per)]


def noise_test(noise: pd.DataFrame, blur: pd.DataFrame, *, alpha: float, n_perm: int,
               n_boot: int, rng_seed: int):
    """Statistics of `noise_hurts_less_than_blur`: mean(noise) − mean(blur), paired by seed."""
    return _paired(noise, blur, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=alpha)


@conjecture(PLANS)
def noise_hurts_less_than_blur(table: SweepTable, plans: Plans, *,
                               budget: Any = FROM_PLAN, n_perm: int = N_PERM,
                               n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Per schedule arm: removed at the same N, a noise deficit ends more accurate than blur."""
    df, excluded = arm_frame(table)
    out = []
    for name, plan in _arms(plans, budget=budget):
        schedule = plan.options["schedule"]
        checks = _gate(df, plan, n_perm, n_boot, rng_seed)
        if (bad := _failed(plan, checks, name, **excluded)) is not None:
            out.append(bad)
            continue
        arm = in_schedule(df, schedule)
        noise, b = removal_frame(arm, "noise", plan.options["budget"])
        blur, _ = removal_frame(arm, "blur", b)
        noise, blur = noise[noise["N"] > 0], blur[blur["N"] > 0]
        shared = sorted(set(noise["N"]) & set(blur["N"]))
        base = {**excluded, "budget": b, "N": [int(n) for n in shared], "schedule": schedule,
                "groups": {"a": "noise", "b": "blur"}}
        if not shared:
            out.append(verdict_of(plan, None, checks=checks, name=name, n=0,
                                  reason="no N at which both noise and blur were removed", **base))
            continue
        res = noise_test(noise[noise["N"].isin(shared)], blur[blur["N"].isin(shared)],
                         alpha=plan.alpha, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed)
        out.append(verdict_of(plan, res, checks=checks, name=name, **base))
    return out


# ------------------------------------------------------- schedule artefact
def signatures(arm: pd.DataFrame, *, deficit: str = "blur", budget: int | None = None,
               window: int | None = None, epochs: int | None = None
               ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The two paired contrasts of a critical period in one schedule arm:
    (removed at the latest N, clean of the same budget) and (the window at the
    first onset, the window at the last onset), with where they were taken."""
    rem, b = removal_frame(arm, deficit, budget)
    last_n = int(rem["N"].max()) if len(rem) else 0
    win, _, info = onset_frame(arm, deficit, window, epochs)
    t0s = sorted(int(t) for t in win["t0"].unique())
    first = win[win["t0"] == t0s[0]] if t0s else win
    last = win[win["t0"] == t0s[-1]] if t0s else win
    where = {"budget": b, "N": last_n, "window": info["window"], "epochs": info["epochs"],
             "t0": [t0s[0], t0s[-1]] if t0s else []}
    return rem[rem["N"] == last_n], rem[rem["N"] == 0], first, last, where


@conjecture(PLANS)
def not_a_schedule_artefact(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                            n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """At a constant rate (the plan's `schedule`), removal at the latest N costs accuracy
    against clean and the first onset costs more than the last, paired by seed (one
    intersection-union test); the same contrasts of every arm are in details."""
    (plan,) = plans.values()
    df, excluded = arm_frame(table)
    checks = _gate(df, plan, n_perm, n_boot, rng_seed)
    if (bad := _failed(plan, checks, **excluded)) is not None:
        return [bad]
    opts = {k: plan.options[k] for k in ("deficit", "budget", "window", "epochs")}
    kw = dict(alpha=plan.alpha, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed)
    by_arm = {}
    for schedule in ("exponential", "constant", "restart"):
        late, clean, first, last, where = signatures(in_schedule(df, schedule), **opts)
        by_arm[schedule] = {**where, "removal_cost": _mean_diff(late, clean),
                            "onset_contrast": _mean_diff(first, last)}
    late, clean, first, last, where = signatures(in_schedule(df, plan.options["schedule"]), **opts)
    parts = [_paired(late, clean, **kw), _paired(first, last, **kw)]
    res = intersection_union(parts, [-1, -1])
    return [verdict_of(plan, res, checks=checks, **excluded, **where,
                       schedule=plan.options["schedule"],
                       contrasts={"a": "removed at the latest N − clean",
                                  "b": "first onset − last onset"}, by_arm=by_arm)]


def _mean_diff(a: pd.DataFrame, b: pd.DataFrame) -> float | None:
    """Mean over seeds holding both of acc(a) − acc(b) (None when no seed holds both)."""
    d = (a.groupby("seed")["acc"].mean() - b.groupby("seed")["acc"].mean()).dropna()
    return float(d.mean()) if len(d) else None


# ------------------------------------------------------------------ Fisher
def smooth(values: np.ndarray, window: int = 3) -> np.ndarray:
    """Centred moving average over `window` measurements (shorter at the ends)."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size == 0:
        return v
    kernel = np.ones(min(window, v.size))
    return np.convolve(v, kernel, "same") / np.convolve(np.ones(v.size), kernel, "same")


@dataclass(frozen=True)
class Peak:
    """The shape of one smoothed Tr F curve around its maximum (`peak_shape`)."""

    index: int            # measurement of the maximum
    n: int                # measurements
    rise: float           # 1 − first / peak
    fall: float           # 1 − last / peak
    rise_monotone: bool   # up to the peak, no value below (1 − tol) × the running maximum
    fall_monotone: bool   # after the peak, no value above (1 + tol) × the running minimum

    @property
    def interior(self) -> bool:
        return 0 < self.index < self.n - 1


def peak_shape(values: np.ndarray, window: int = 3, tol: float = 0.25) -> Peak | None:
    """Where the smoothed curve peaks and how monotone each side is (None: < 3 values)."""
    v = np.asarray(values, dtype=float)
    v = smooth(v[np.isfinite(v)], window)
    if v.size < 3 or not np.all(v > 0):
        return None
    i = int(np.argmax(v))
    up, down = v[: i + 1], v[i:]
    rise_ok = bool(np.all(up[1:] >= (1 - tol) * np.maximum.accumulate(up)[:-1]))
    fall_ok = bool(np.all(down[1:] <= (1 + tol) * np.minimum.accumulate(down)[:-1]))
    return Peak(i, v.size, float(1 - v[0] / v[i]), float(1 - v[-1] / v[i]), rise_ok, fall_ok)


def rises_then_falls(values: np.ndarray, drop: float = FISHER_RULE["drop"],
                     window: int = FISHER_RULE["smooth"], tol: float = FISHER_RULE["tol"]) -> bool:
    """The registered peak rule: on the smoothed curve the maximum is strictly
    inside, both sides are monotone within `tol`, and the peak stands at least
    `drop` (a fraction of it) above the first and the last value."""
    p = peak_shape(values, window, tol)
    return (p is not None and p.interior and p.rise_monotone and p.fall_monotone
            and p.rise >= drop and p.fall >= drop)


def fisher_curves(table: SweepTable, df: pd.DataFrame, schedule: str
                  ) -> dict[Any, tuple[str, pd.Series]]:
    """Per seed, (run id, Tr F by step) of the clean run of `schedule` that logged Tr F
    (the shortest, when several did)."""
    m = table.metric(FISHER)
    m = m[np.isfinite(m["value"].astype(float))]
    clean = df[(df["sweep"] == "clean") & (df["schedule"] == schedule)
               & df["run_id"].isin(m["run_id"])].sort_values(["seed", "epochs", "run_id"])
    out = {}
    for seed, g in clean.groupby("seed"):
        rid = g["run_id"].iloc[0]
        out[seed] = (rid, m[m["run_id"] == rid].set_index("step")["value"].astype(float).sort_index())
    return out


@conjecture(PLANS)
def fisher_rises_then_falls(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                            n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Per schedule arm, in most seeds the clean run's Tr F rises to an interior peak and
    falls after it (`rises_then_falls` with the plan's smooth, tol, drop).

    Seeds are the units (one clean run each). The sign test is exact: the
    resampling options every conjecture takes (n_perm, n_boot, rng_seed) are
    accepted and unused.
    """
    df, excluded = arm_frame(table)
    out = []
    for name, plan in _arms(plans):
        o = plan.options
        curves = fisher_curves(table, df, o["schedule"])
        shapes = {s: peak_shape(c.to_numpy(), int(o["smooth"]), float(o["tol"]))
                  for s, (_, c) in curves.items() if c.size >= 3}
        ok = {s: rises_then_falls(curves[s][1].to_numpy(), float(o["drop"]), int(o["smooth"]),
                                  float(o["tol"])) for s in shapes}
        base = {**excluded, **{k: o[k] for k in ("smooth", "tol", "drop")},
                "schedule": o["schedule"],
                "excluded_fewer_than_3_measurements": len(curves) - len(shapes)}
        if not ok:
            out.append(verdict_of(plan, None, name=name, n=0, **base,
                                  reason=f"{plan.metric} logged with >= 3 measurements in no "
                                         f"clean {o['schedule']} run"))
            continue
        res = sign_test(list(ok.values()), p0=float(o["p0"]), alpha=plan.alpha)
        per_seed = {str(s): {"run_id": curves[s][0], "rises_then_falls": ok[s],
                             "peak_step": int(curves[s][1].index[p.index]) if p else None,
                             "last_step": int(curves[s][1].index[-1]),
                             "measurements": int(curves[s][1].size),
                             **({"rise": p.rise, "fall": p.fall, "rise_monotone": p.rise_monotone,
                                 "fall_monotone": p.fall_monotone} if p else {})}
                    for s, p in shapes.items()}
        out.append(verdict_of(plan, res, name=name, **base, n_rise_fall=int(sum(ok.values())),
                              per_seed=per_seed))
    return out


# ------------------------------------------------------------------ tables
def arm_table(table: SweepTable) -> pd.DataFrame | None:
    """Per arm: schedule, deficit, sweep, window, run length, final accuracy mean, sd, n."""
    df, _ = arm_frame(table)
    if df.empty:
        return None
    keys = ["arm", "schedule", "deficit", "sweep", "start", "end", "epochs"]
    out = df.groupby(keys)["acc"].agg(mean="mean", sd="std", n="count").reset_index()
    return out.sort_values(["schedule", "sweep", "deficit", "epochs", "start", "end"]
                           ).reset_index(drop=True)
