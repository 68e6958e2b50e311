"""The stiffness experiment's per-trial summaries, conjectures and the stopper's
score (see the package docstring)."""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from sweeps.conjectures.inference import magnitude, sign_flip_test
from sweeps.conjectures.plan import AnalysisPlan
from sweeps.conjectures.verdict import N_BOOT, N_PERM, Verdict, trend_test, verdict_of
from sweeps.experiments.registry import Plans, conjecture
from sweeps.experiments.stiffness.plans import (LR, PAIRS, PLANS, TV_SIGN, TV_SIGN_WITHIN, VAL_ACC,
                                                VAL_LOSS, XI, between_key, within_key)
from sweeps.stoppers import StiffnessStopper
from sweeps.table import SweepTable, param


# ------------------------------------------------------------- per trial
def onset(val_loss: pd.Series, window: int = 3) -> tuple[Any, int] | None:
    """(step, position) of the minimum validation loss, or None when fewer
    than `window` epoch ends follow it (the onset was not observed)."""
    v = val_loss.dropna()
    if v.empty:
        return None
    pos = int(np.argmin(v.to_numpy(float)))
    if len(v) - 1 - pos < window:
        return None
    return v.index[pos], pos


def before_after(series: pd.Series, onset_step: Any, window: int = 3) -> tuple[float, float]:
    """Mean of `series` over its `window` values up to and including the onset
    step, and over its last `window` values (NaN when any of those is not
    strictly after the onset)."""
    s = series.dropna().sort_index()
    pre = s[s.index <= onset_step].tail(window)
    post = s.tail(window)
    before = float(pre.mean()) if len(pre) else math.nan
    after = float(post.mean()) if len(post) == window and (post.index > onset_step).all() else math.nan
    return before, after


def trial_summary(table: SweepTable, window: int = 3, keys: Sequence[str] = (TV_SIGN, TV_SIGN_WITHIN),
                  stopper: StiffnessStopper | None = None) -> pd.DataFrame:
    """One row per trial: onset step and epoch (min val loss), each train–val
    key's mean before and after the onset (`<short>_before`, `<short>_after`,
    short = the key's last part), mean within − between class sign stiffness
    per pair set, final ξ, and the epoch `stopper` (default: the stiffness
    stopper's defaults) stops at on the logged series."""
    stopper = stopper or StiffnessStopper()
    rows = []
    for _, r in table.runs.iterrows():
        rid = r["run_id"]
        row = {"run_id": rid, "status": r["status"], LR: r.get(LR, np.nan), "seed": r["seed"]}
        val = table.per_epoch(rid, VAL_LOSS)
        found = onset(val, window)
        row["onset_step"] = found[0] if found else np.nan
        row["onset_epoch"] = found[1] + 1 if found else np.nan
        for key in keys:
            tv = table.per_epoch(rid, key)
            short = f"tv_{key.rsplit('/', 1)[-1]}"
            row[f"{short}_before"], row[f"{short}_after"] = (
                before_after(tv, found[0], window) if found and len(tv) else (np.nan, np.nan))
        for pair in PAIRS:
            w, b = table.per_epoch(rid, within_key(pair)), table.per_epoch(rid, between_key(pair))
            both = pd.concat([w, b], axis=1, join="inner").dropna()
            row[f"within_minus_between_{pair}"] = (float((both.iloc[:, 0] - both.iloc[:, 1]).mean())
                                                   if len(both) else np.nan)
        xi = table.series(rid, XI).dropna()
        row["xi"] = float(xi.sort_index().iloc[-1]) if len(xi) else np.nan
        tv = table.per_epoch(rid, stopper.metric)
        stop = stopper.stop_index(tv.reindex(val.index).to_numpy(float)) if len(tv) and len(val) else None
        row["stop_epoch"] = stop + 1 if stop is not None else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------- conjectures
def _summary(table: SweepTable, plan: AnalysisPlan, keys: Sequence[str] = (TV_SIGN, TV_SIGN_WITHIN)):
    runs, excluded = table.usable()
    s = trial_summary(table, int(plan.options["epochs"]), keys)
    return runs, excluded, s.set_index("run_id").loc[runs["run_id"]]


@conjecture(PLANS)
def train_val_falls_after_onset(table: SweepTable, plans: Plans, *,
                                n_perm: int = N_PERM, n_boot: int = N_BOOT,
                                rng_seed: int = 0) -> list[Verdict]:
    """Train–val sign stiffness is closer to 0 in the last `epochs` epochs than
    in the `epochs` epochs up to the onset of overfitting (min validation
    loss); one verdict per planned metric (`plan.metric`, `plan.options["epochs"]`)."""
    out = []
    for key, plan in plans.items():
        metric, window = plan.metric, int(plan.options["epochs"])
        runs, excluded, s = _summary(table, plan, (metric,))
        if not table.has(metric, VAL_LOSS):
            out.append(verdict_of(plan, None, name=key, n=0,
                                  reason=f"{metric} or {VAL_LOSS} was not logged", **excluded))
            continue
        short = f"tv_{metric.rsplit('/', 1)[-1]}"
        before, after = s[f"{short}_before"].to_numpy(float), s[f"{short}_after"].to_numpy(float)
        details = {**excluded, "excluded_no_onset": int(s["onset_step"].isna().sum()),
                   "window": window, "metric": metric, "mean_before": _nanmean(before),
                   "mean_after": _nanmean(after),
                   "onset_epochs": [int(e) for e in s["onset_epoch"].dropna()]}
        res = sign_flip_test(np.abs(before) - np.abs(after), n_perm=n_perm, n_boot=n_boot,
                             rng_seed=rng_seed, alpha=plan.alpha, bounds=(-1.0, 1.0))  # of |stiffness| ≤ 1
        out.append(verdict_of(plan, res, name=key, **details))
    return out


@conjecture(PLANS)
def within_exceeds_between(table: SweepTable, plans: Plans, *,
                           n_perm: int = N_PERM, n_boot: int = N_BOOT,
                           rng_seed: int = 0) -> list[Verdict]:
    """Within-class sign stiffness exceeds between-class, on average over epoch
    ends, for each planned pair set (`plan.options["pair"]`)."""
    out = []
    for key, plan in plans.items():
        pair = plan.options["pair"]
        runs, excluded = table.usable()
        if not table.has(plan.metric, plan.options["between"]):
            out.append(verdict_of(plan, None, name=key, n=0, pair=pair, **excluded,
                                  reason=f"{plan.metric} and {plan.options['between']} were not logged"))
            continue
        s = trial_summary(table).set_index("run_id").loc[runs["run_id"]]
        res = sign_flip_test(s[f"within_minus_between_{pair}"].to_numpy(float), n_perm=n_perm,
                             n_boot=n_boot, rng_seed=rng_seed, alpha=plan.alpha, bounds=(-2.0, 2.0))
        out.append(verdict_of(plan, res, name=key, **excluded, pair=pair))
    return out


@conjecture(PLANS)
def xi_vs_lr(table: SweepTable, plans: Plans, *,
             n_perm: int = N_PERM, n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """ξ (final value per trial) changes with η; its direction is reported, not predicted.

    A two-sided stratified Spearman trend of ξ in log η (strata: the other
    varied config fields), read by `magnitude`: the tested effect is |ρ|, so
    a significant trend either way is "ξ changes with η" (supported, the
    direction in details["direction"], named where the raw p < alpha; the
    verdict after Holm decides) and nothing refutes."""
    (plan,) = plans.values()
    runs, excluded = table.usable()
    if not table.has(plan.metric):
        return [verdict_of(plan, None, n=0, **excluded, direction="none found",
                           reason=f"{plan.metric} was not logged (within-class stiffness never "
                                  "crossed 0 with input distance, or the stiffness probe was off)")]
    s = trial_summary(table).set_index("run_id").loc[runs["run_id"]]
    s = s[np.isfinite(s["xi"].to_numpy(float))]
    details = {**excluded, "excluded_no_xi": int(len(runs) - len(s)), "metric": plan.metric}
    x, log_x = plan.options["x"], bool(plan.options["log_x"])
    if x not in runs or len(s) < 3:
        return [verdict_of(plan, None, n=len(s), **details, direction="none found",
                           reason=f"only {len(s)} trials with ξ and η")]
    held = [c for c in runs.columns if "." in str(c) and "/" not in str(c) and c != x
            and not str(c).endswith("seed") and runs[c].astype(str).nunique() > 1]
    groups = runs.set_index("run_id").loc[s.index, held].astype(str).agg("|".join, axis=1) \
        if held else None
    res = magnitude(trend_test(param(s, x).to_numpy(float), s["xi"].to_numpy(float), groups,
                               alpha=plan.alpha, log_x=log_x, n_perm=n_perm, n_boot=n_boot,
                               rng_seed=rng_seed))
    sign = res.details["direction"]
    found = (f"ξ {'increases' if sign > 0 else 'decreases'} with η"
             if np.isfinite(res.p_value) and res.p_value < plan.alpha and sign != 0
             else "none found")
    return [verdict_of(plan, res, **details, strata=held, direction=found)]


# ----------------------------------------------------------------- stopper
def evaluate_stopper(table: SweepTable, threshold: float = 0.5, patience: int = 3,
                     relative: bool = False, run_ids: Iterable[str] | None = None,
                     key: str = TV_SIGN_WITHIN, *, stopper: StiffnessStopper | None = None,
                     stops: Mapping[str, float | None] | None = None
                     ) -> tuple[pd.DataFrame, dict[str, float]]:
    """Score the stopper on (held-out) trials against the true onset.

    The rule is `stopper` (default: one built from `threshold`, `patience`,
    `relative` and `key`), applied to each trial's logged series; `stops`
    gives instead the stop epochs measured online (1-based, by run id of
    `table`, None where the trial was not stopped: the Tune stopper's
    `stopper/epoch` tags), scored against the same un-stopped trials.
    Per trial: the onset epoch (min val loss, 1-based), the stop epoch, their
    absolute difference in epochs, val/acc at the stop and its best value, and
    the accuracy given up (best − at stop). Summary: mean absolute error and
    mean accuracy given up over trials that stopped, and how many never did.
    Trials that are not finished, or have no val/loss, are left out."""
    stopper = stopper or StiffnessStopper(threshold=threshold, patience=patience,
                                          relative=relative, metric=key)
    runs, _ = table.usable()
    chosen = runs["run_id"] if run_ids is None else [r for r in runs["run_id"] if r in set(run_ids)]
    rows = []
    for rid in chosen:
        val = table.per_epoch(rid, VAL_LOSS).dropna()
        if val.empty:
            continue
        acc = table.per_epoch(rid, VAL_ACC).reindex(val.index).to_numpy(float)
        if stops is None:
            stop = stopper.stop_index(table.per_epoch(rid, stopper.metric).reindex(val.index).to_numpy(float))
        else:
            online = stops.get(rid)
            stop = None if online is None or not np.isfinite(online) else int(online) - 1
        true = int(np.argmin(val.to_numpy(float)))
        row = {"run_id": rid, "onset_epoch": true + 1,
               "stop_epoch": np.nan if stop is None else stop + 1,
               "abs_error_epochs": np.nan if stop is None else abs(stop - true),
               "best_val_acc": float(np.nanmax(acc)) if np.isfinite(acc).any() else np.nan,
               "val_acc_at_stop": np.nan if stop is None else float(acc[stop])}
        row["acc_given_up"] = row["best_val_acc"] - row["val_acc_at_stop"]
        rows.append(row)
    cols = ["run_id", "onset_epoch", "stop_epoch", "abs_error_epochs", "best_val_acc",
            "val_acc_at_stop", "acc_given_up"]
    df = pd.DataFrame(rows, columns=cols)
    stopped = df["stop_epoch"].notna()
    summary = {"n": int(len(df)), "n_stopped": int(stopped.sum()),
               "n_never_stopped": int((~stopped).sum()),
               "mean_abs_error_epochs": _nanmean(df["abs_error_epochs"]),
               "mean_acc_given_up": _nanmean(df["acc_given_up"]),
               "threshold": stopper.threshold, "patience": stopper.patience,
               "relative": stopper.relative, "metric": stopper.metric,
               "measured": "offline" if stops is None else "online"}
    return df, summary


def _nanmean(x: Any) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan


# ------------------------------------------------------------------- tables
def onsets_table(table: SweepTable) -> pd.DataFrame | None:
    """Per trial: onset epoch, train–val stiffness before/after, ξ, stop epoch."""
    if not table.has(VAL_LOSS):
        return None
    return trial_summary(table)
