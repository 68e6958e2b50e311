"""The stiffness experiment's per-trial summaries, conjectures and the
stopper's scores against its baselines (see the package docstring and
`plans.py`, where every number that decides a verdict is registered)."""
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
                                                VAL_LOSS, WINDOW, XI, between_key, within_key)
from sweeps.stoppers import StiffnessStopper
from sweeps.table import SweepTable, param


# ------------------------------------------------------------- per trial
def onset(val_loss: pd.Series, window: int = WINDOW) -> tuple[Any, int] | None:
    """(step, position) of the minimum validation loss, or None when fewer
    than `window` epoch ends follow it (the onset was not observed)."""
    v = val_loss.dropna()
    if v.empty:
        return None
    pos = int(np.argmin(v.to_numpy(float)))
    if len(v) - 1 - pos < window:
        return None
    return v.index[pos], pos


def before_after(series: pd.Series, onset_pos: int, window: int = WINDOW,
                 lag: int = 0) -> tuple[float, float]:
    """Mean of the epoch-end `series` over its `window` values up to and
    including position `onset_pos`, and over the `window` values starting
    `lag` epochs after it (NaN where the run ends before that window)."""
    v = series.to_numpy(float)
    pre = v[max(0, onset_pos - window + 1):onset_pos + 1]
    post = v[onset_pos + lag:onset_pos + lag + window]
    return (_nanmean(pre) if len(pre) else math.nan,
            _nanmean(post) if len(post) == window else math.nan)


def es_stop_epoch(val_loss: Sequence[float], patience: int) -> int | None:
    """Ordinary early stopping: the index of the first epoch end `patience`
    epochs after the running minimum of the validation loss, or None."""
    best, at = math.inf, -1
    for i, v in enumerate(np.asarray(val_loss, dtype=float)):
        if np.isfinite(v) and v < best:
            best, at = v, i
        elif at >= 0 and i - at >= patience:
            return i
    return None


def stop_scores(val_loss: np.ndarray, val_acc: np.ndarray, stop: int | None) -> dict[str, float]:
    """A rule's stop (0-based; None: it never fired and trains to the end)
    scored: its 1-based epoch, |stop − onset| and the accuracy given up."""
    last = len(val_loss) - 1
    at = last if stop is None else min(int(stop), last)
    true = int(np.nanargmin(val_loss))
    return {"epoch": at + 1, "error": float(abs(at - true)),
            "acc": float(np.nanmax(val_acc) - val_acc[at])}


def _short(key: str) -> str:
    """tv_/tt_/vv_ (the pair set) and the key's last part: tv_sign_within."""
    pair = "tv" if "/train_val/" in key else "tt" if "/train_train/" in key else "vv"
    return f"{pair}_{key.rsplit('/', 1)[-1]}"


def trial_summary(table: SweepTable, window: int = WINDOW, lag: int = 0,
                  keys: Sequence[str] = (TV_SIGN, TV_SIGN_WITHIN),
                  stopper: StiffnessStopper | None = None) -> pd.DataFrame:
    """One row per trial: the onset step and epoch (min val loss), each key's
    mean over `window` epoch ends up to the onset and from `lag` epochs after
    it (`<short>_before`, `<short>_after`, short = tv_/tt_ and the key's last
    part), its mean over the first `window` epoch ends (`<short>_early`),
    mean within − between class sign stiffness per pair set, final ξ, and
    the epoch `stopper` (default: the stiffness stopper's defaults) stops at
    on the logged series."""
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
            s = table.per_epoch(rid, key).reindex(val.index)
            short = _short(key)
            row[f"{short}_before"], row[f"{short}_after"] = (
                before_after(s, found[1], window, lag) if found and len(s) else (np.nan, np.nan))
            row[f"{short}_early"] = _nanmean(s.to_numpy(float)[:window]) if len(s) >= window else np.nan
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
def _summary(table: SweepTable, plan: AnalysisPlan, lag: int = 0):
    runs, excluded = table.usable()
    s = trial_summary(table, int(plan.options["window"]), lag, (plan.metric,))
    return runs, excluded, s.set_index("run_id").loc[runs["run_id"]]


@conjecture(PLANS)
def rises_during_training(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                          n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Within-class sign stiffness rises during training: per trial, its mean
    over the `window` epoch ends up to the onset minus over the first
    `window` epoch ends > 0; trials without an onset are excluded and counted."""
    out = []
    for key, plan in plans.items():
        metric = plan.metric
        if not table.has(metric, VAL_LOSS):
            out.append(verdict_of(plan, None, name=key, n=0, **table.usable()[1],
                                  reason=f"{metric} or {VAL_LOSS} was not logged"))
            continue
        runs, excluded, s = _summary(table, plan)
        short = _short(metric)
        early = s[f"{short}_early"].to_numpy(float)
        late = np.where(s["onset_step"].notna(), s[f"{short}_before"].to_numpy(float), np.nan)
        res = sign_flip_test(late - early, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed,
                             alpha=plan.alpha, bounds=(-2.0, 2.0))
        out.append(verdict_of(plan, res, name=key, **excluded, metric=metric,
                              excluded_no_onset=int(s["onset_step"].isna().sum()),
                              mean_early=_nanmean(early), mean_late=_nanmean(late)))
    return out


@conjecture(PLANS)
def near_zero_after_onset(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                          n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Within-class sign stiffness lies within the registered `band` of 0
    from `lag` epochs after the onset: per trial, band − |mean over `window`
    epoch ends from onset + lag| > 0. Trials without an onset, or whose run
    ends before that window, are excluded and counted; the mean before the
    onset and the fall are reported beside."""
    out = []
    for key, plan in plans.items():
        metric, band, lag = plan.metric, float(plan.options["band"]), int(plan.options["lag"])
        if not table.has(metric, VAL_LOSS):
            out.append(verdict_of(plan, None, name=key, n=0, **table.usable()[1],
                                  reason=f"{metric} or {VAL_LOSS} was not logged"))
            continue
        runs, excluded, s = _summary(table, plan, lag)
        short = _short(metric)
        before, after = s[f"{short}_before"].to_numpy(float), s[f"{short}_after"].to_numpy(float)
        has_onset = s["onset_step"].notna().to_numpy()
        res = sign_flip_test(band - np.abs(after), n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed,
                             alpha=plan.alpha, bounds=(band - 1.0, band))
        out.append(verdict_of(plan, res, name=key, **excluded, metric=metric, band=band, lag=lag,
                              excluded_no_onset=int((~has_onset).sum()),
                              excluded_short=int((has_onset & ~np.isfinite(after)).sum()),
                              mean_before=_nanmean(before), mean_after=_nanmean(after),
                              mean_abs_after=_nanmean(np.abs(after)),
                              onset_epochs=[int(e) for e in s["onset_epoch"].dropna()]))
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

    ξ is where within-class stiffness falls to the plan's `xi_level`; every
    trial must have logged it at that level (`probes.stiffness_xi_level`),
    else no test runs. A two-sided stratified Spearman trend of ξ in log η
    (strata: the other varied config fields), read by `magnitude`: the
    tested effect is |ρ|, so a significant trend either way is "ξ changes
    with η" (supported, the direction in details["direction"], named where
    the raw p < alpha; the verdict after Holm decides) and nothing refutes."""
    (plan,) = plans.values()
    runs, excluded = table.usable()
    level = float(plan.options["xi_level"])
    field = plan.options["xi_level_field"]
    logged = {float(v) for v in param(runs, field, 0.0).astype(float)}
    if logged - {level}:
        return [verdict_of(plan, None, n=0, **excluded, direction="none found",
                           reason=f"the trials logged ξ at {field} "
                                  f"{sorted(logged)}, the plan registers {level:g}")]
    if not table.has(plan.metric):
        return [verdict_of(plan, None, n=0, **excluded, direction="none found",
                           reason=f"{plan.metric} was not logged (within-class stiffness never "
                                  f"fell to {level:g} with input distance, or the stiffness probe was off)")]
    s = trial_summary(table).set_index("run_id").loc[runs["run_id"]]
    s = s[np.isfinite(s["xi"].to_numpy(float))]
    details = {**excluded, "excluded_no_xi": int(len(runs) - len(s)), "metric": plan.metric,
               "xi_level": level}
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


def stopper_of(options: Mapping[str, Any]) -> StiffnessStopper:
    """The stiffness stopper a plan registers (`options["stopper"]`)."""
    return StiffnessStopper(**options["stopper"])


def baselines_table(table: SweepTable, options: Mapping[str, Any]) -> pd.DataFrame:
    """Per usable trial, the three rules of a `stopper_vs_baselines` plan read
    off its logged series: `<rule>_epoch`, `<rule>_error` (|stop − onset|)
    and `<rule>_acc` (accuracy given up), rule ∈ stopper, fixed_epoch,
    patience; NaN scores where the trial has no observed onset."""
    stopper, window = stopper_of(options), int(options["window"])
    fixed, patience = int(options["fixed_epoch"]), int(options["es_patience"])
    runs, _ = table.usable()
    rows = []
    for rid in runs["run_id"]:
        val = table.per_epoch(rid, VAL_LOSS).dropna()
        row: dict[str, Any] = {"run_id": rid}
        found = onset(val, window) if len(val) else None
        row["onset_epoch"] = found[1] + 1 if found else np.nan
        if found:
            v = val.to_numpy(float)
            acc = table.per_epoch(rid, VAL_ACC).reindex(val.index).to_numpy(float)
            tv = table.per_epoch(rid, stopper.metric).reindex(val.index).to_numpy(float)
            stops = {"stopper": stopper.stop_index(tv), "fixed_epoch": fixed - 1,
                     "patience": es_stop_epoch(v, patience)}
            for rule, stop in stops.items():
                for k, x in stop_scores(v, acc, stop).items():
                    row[f"{rule}_{k}"] = x
            row["stopper_fired"] = stops["stopper"] is not None
        rows.append(row)
    return pd.DataFrame(rows)


@conjecture(PLANS)
def stopper_vs_baselines(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                         n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """The stiffness stopper against a fixed epoch and val-loss early
    stopping, paired per trial on trials trained to the end: baseline's
    score − stopper's > 0 (score: |stop − onset| or accuracy given up)."""
    out = []
    for key, plan in plans.items():
        base, score = plan.options["baseline"], plan.options["score"]
        metric = plan.options["stopper"]["metric"]
        runs, excluded = table.usable()
        if not table.has(metric, VAL_LOSS, VAL_ACC):
            out.append(verdict_of(plan, None, name=key, n=0, **excluded,
                                  reason=f"{metric}, {VAL_LOSS} or {VAL_ACC} was not logged"))
            continue
        b = baselines_table(table, plan.options)
        if f"stopper_{score}" not in b:
            out.append(verdict_of(plan, None, name=key, n=0, **excluded,
                                  excluded_no_onset=int(len(b)),
                                  reason="no trial showed the onset of overfitting"))
            continue
        ours, theirs = b[f"stopper_{score}"].to_numpy(float), b[f"{base}_{score}"].to_numpy(float)
        res = sign_flip_test(theirs - ours, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed,
                             alpha=plan.alpha, bounds=(-1.0, 1.0) if score == "acc" else None)
        out.append(verdict_of(plan, res, name=key, **excluded, baseline=base, score=score,
                              excluded_no_onset=int(b["onset_epoch"].isna().sum()),
                              mean_stopper=_nanmean(ours), mean_baseline=_nanmean(theirs),
                              stopper_never_fired=int((b["stopper_fired"].dropna() == 0).sum()),
                              fixed_epoch=int(plan.options["fixed_epoch"]),
                              es_patience=int(plan.options["es_patience"])))
    return out


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
