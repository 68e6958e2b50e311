"""Stiffness (Fort, Nowak, Jastrzebski, Narayanan 2019): conjectures, figures,
tables, and a stopper that needs no validation loss.

Stiffness of a pair (x₁, x₂) is the sign (or cosine) of g₁·g₂, the product of
their per-example loss gradients: positive when a step on x₁ also lowers the
loss on x₂. The probe logs it each epoch (`probes.schedule.kind: epoch`) for
train–train, train–val and val–val pairs, as a mean over pairs (`sign`,
`cos`) and as class means: within-class (diagonal of the class matrix C(a, b))
and between-class (off-diagonal).

Onset of overfitting: the epoch of minimum validation loss (`val/loss` at
epoch ends). A trial whose validation loss is still at its minimum fewer than
`window` epochs before the end never showed the onset and is excluded and
counted (`excluded_no_onset`).

Conjectures, each verdict under its plan (`PLANS`), all in the Holm family
`stiffness` (one sweep asks them together: up to 6 tests):
- `stiffness.train_val_falls_after_onset[<key>]`: per trial, the mean
  train–val sign stiffness over the 3 epochs up to and including the onset
  (before) and over the last 3 epochs of the run, all strictly after the
  onset (after). Predicted: |before| − |after| > 0 (stiffness moves toward 0
  once the model overfits), judged by the one-sample sign-flip test of the
  per-trial differences (`paired_sign_flip`); one verdict for the mean over
  all pairs (`sign`, mostly between-class pairs, negative early in training)
  and one for within-class pairs (`sign_within`, the class-matrix diagonal).
- `stiffness.within_exceeds_between[<pair>]`: per trial and pair set, the
  mean over epoch ends of within-class minus between-class sign stiffness.
  Predicted > 0 (`paired_sign_flip`); one verdict per pair set.
- `stiffness.xi_vs_lr`: the critical length ξ (input distance 1 − cos(x₁, x₂)
  at which within-class stiffness crosses 0) against η. The paper's versions
  disagree on its direction, so none is assumed: a two-sided stratified
  Spearman trend in log η read by `inference.magnitude`, whose tested effect
  is |ρ| (predicted > 0). A significant trend either way is supported ("ξ
  changes with η", the direction in details["direction"]); nothing refutes.
  Of the options (a predicted sign with a note, or a new "two-sided" mode
  of the plan and the verdict rules) this one changes no rule of the engine
  and tests exactly the claim.
Numbers of the plans: alpha 0.05. `min_n` 8 for the sign-flip tests: the
exact p cannot go below 2/2ⁿ, and Holm's first rejection among the family's
6 tests needs p < 0.05/6 = 0.0083, so n ≥ 8 (2/256 = 0.0078). `min_n` 9 for
ξ (3 η × 3 seeds, the shipped design: its exact p floor is 2/1680). Effects
of interest: 0.1 of sign stiffness (a tenth of its [−1, 1] scale; the
pilot's within-class fall after the onset, 0.97 → 0.87), |ρ| 0.5 for ξ.

The stopper (`sweeps.stoppers.StiffnessStopper`, its rule
`stiffness_stop_epoch`) stops a trial once train–val within-class sign
stiffness, after having been above a threshold (absolute, or a fraction of
its running maximum), stays below it for `patience` consecutive epochs; a
spec's `stopper: {kind: stiffness}` runs it in Tune, and `evaluate_stopper`
scores it on held-out trials against the true onset, from the logged series
(offline) or from the stop epochs the Tune stopper recorded (online). In a
pilot (MNIST-1D, 1-D CNN, 500 examples, η ∈ {0.1, 0.2} × 3 seeds, 60
epochs) within-class train–val sign stiffness fell from 0.97 to 0.87 after
the onset but never near 0: a bar of 0.5 never fired, an absolute 0.95
stopped all six trials 12.5 epochs from the onset on average, giving up
0.076 validation accuracy. The stopper's defaults (absolute 0.97, patience
3) were chosen on seeds 0–2 of `stiffness.yaml`.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweeps.conjectures.inference import magnitude, sign_flip_test
from sweeps.conjectures.plan import AnalysisPlan
from sweeps.conjectures.verdict import N_BOOT, N_PERM, trend_test, Verdict, verdict_of
from sweeps.experiments import Experiment, Plans, Sources, conjecture, register
from sweeps.table import SweepTable, param
from sweeps.plotting import DPI, lr_colors
from sweeps.stoppers import StiffnessStopper, stiffness_stop_epoch  # noqa: F401  (the rule lives there)

LR = "optim.lr"
PAIRS = ("train_train", "train_val", "val_val")
TV_SIGN = "stiffness/train_val/sign"
TV_SIGN_WITHIN = "stiffness/train_val/sign_within"
VAL_LOSS, VAL_ACC, TRAIN_LOSS = "val/loss", "val/acc", "train/loss"
# ξ of within-class train–train sign stiffness (logged where it crosses 0), and the
# distance-binned stiffness it is read from (artifact rows: centres, sign, cos).
XI = "stiffness/train_train/xi"
DISTANCE_ARTIFACT = "stiffness_distance"
WINDOW = 3          # epoch ends averaged before and after the onset


def within_key(pair: str, kind: str = "sign") -> str:
    return f"stiffness/{pair}/{kind}_within"


def between_key(pair: str, kind: str = "sign") -> str:
    return f"stiffness/{pair}/{kind}_between"


_ONE_SAMPLE = dict(statistic="paired_sign_flip", predicted_sign=+1, family="stiffness",
                   min_n=8, min_per_stratum=1, effect_of_interest=0.1)
_ONSET = {"epochs": WINDOW, "onset": f"epoch end of the minimum of {VAL_LOSS}",
          "before": f"mean over the {WINDOW} epoch ends up to and including the onset",
          "after": f"mean over the last {WINDOW} epoch ends, all after the onset",
          "contrast": "|before| - |after| per trial"}
PLANS = {
    **{f"stiffness.train_val_falls_after_onset[{key}]": AnalysisPlan(
        conjecture="stiffness.train_val_falls_after_onset", metric=key, **_ONE_SAMPLE,
        exclusions=("unfinished", "no_onset"), options=_ONSET,
        statement=f"train–val sign stiffness ({key}) moves toward 0 after the onset of "
                  f"overfitting (|mean over the {WINDOW} epochs up to the min of val/loss| − "
                  f"|mean over the last {WINDOW} epochs| > 0)")
       for key in (TV_SIGN, TV_SIGN_WITHIN)},
    **{f"stiffness.within_exceeds_between[{pair}]": AnalysisPlan(
        conjecture="stiffness.within_exceeds_between", metric=within_key(pair), **_ONE_SAMPLE,
        exclusions=("unfinished",),
        options={"pair": pair, "between": between_key(pair),
                 "contrast": "per trial, mean over epoch ends of within − between"},
        statement=f"{pair.replace('_', '–')} within-class sign stiffness exceeds between-class "
                  "(mean over epoch ends of within − between > 0)")
       for pair in PAIRS},
    "stiffness.xi_vs_lr": AnalysisPlan(
        conjecture="stiffness.xi_vs_lr", metric=XI, statistic="stratified_spearman",
        predicted_sign=+1, family="stiffness", min_n=9, min_per_stratum=3,
        effect_of_interest=0.5, exclusions=("unfinished", "no_xi"),
        options={"x": LR, "log_x": True, "value": "final ξ per trial",
                 "strata": "the other varied config fields",
                 "direction": "reported, not predicted: a two-sided test read by magnitude(); "
                              "the tested effect is |rho|, predicted > 0; nothing refutes"},
        statement="the critical length ξ changes with η (direction reported, not predicted)"),
}


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


# ------------------------------------------------------------------ figures
def _epochs(table: SweepTable, rid: str, s: pd.Series) -> np.ndarray:
    """Epoch numbers of the epoch-end steps in `s` (from train/epoch when logged)."""
    ep = table.series(rid, "train/epoch")
    if len(ep):
        return pd.Series(ep.to_numpy(float), index=ep.index).reindex(s.index).to_numpy(float)
    return np.arange(1, len(s) + 1, dtype=float)


def _first_seed_per_lr(runs: pd.DataFrame) -> pd.DataFrame:
    if LR not in runs:
        return runs.head(1)
    return runs.sort_values(["seed"]).groupby(LR, sort=True).head(1).sort_values(LR)


def fig_dynamics(table: SweepTable, sources: Sources | None = None, pair: str = "train_train") -> Figure | None:
    """Paper Fig. 5 analog, one panel per η (first seed): train and val loss
    (left axis), within- and between-class sign stiffness and train–val sign
    stiffness, all pairs and within-class (right axis) over epochs; dotted
    line at the onset (min val loss)."""
    if not table.has(within_key(pair), between_key(pair)):
        return None
    runs = _first_seed_per_lr(table.finished())
    if runs.empty:
        return None
    fig = Figure(figsize=(3.6 * len(runs), 3.2), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(runs), squeeze=False)[0])
    for ax, (_, r) in zip(axes, runs.iterrows()):
        rid, right = r["run_id"], ax.twinx()
        for key, style in ((TRAIN_LOSS, "k-"), (VAL_LOSS, "k--")):
            s = table.per_epoch(rid, key)
            ax.plot(_epochs(table, rid, s), s.to_numpy(float), style, lw=1, label=key)
        for key, label, c in ((within_key(pair), "within", "C0"), (between_key(pair), "between", "C3"),
                              (TV_SIGN, "train–val", "C2"), (TV_SIGN_WITHIN, "train–val within", "C1")):
            s = table.per_epoch(rid, key)
            right.plot(_epochs(table, rid, s), s.to_numpy(float), color=c, lw=1, label=label)
        right.axhline(0, color="grey", lw=0.5)
        val = table.per_epoch(rid, VAL_LOSS)
        found = onset(val, window=1)
        if found:
            ax.axvline(_epochs(table, rid, val)[found[1]], color="grey", ls=":", lw=1)
        title = f"η={r[LR]:g}" if LR in r else str(rid)
        ax.set(xlabel="epoch", ylabel="loss", title=title)
        right.set_ylabel("sign stiffness")
    axes[0].legend(fontsize=6, loc="upper left")
    right.legend(fontsize=6, loc="upper right")
    return fig


def fig_class_matrices(table: SweepTable, sources: Sources | None = None, pair: str = "train_train",
                       n_epochs: int = 4) -> Figure | None:
    """Class sign-stiffness matrices C(a, b) of one trial (smallest η, first
    seed) at `n_epochs` probe steps spread over the run. Needs the class
    matrices as arrays (`sources.probe_arrays(run_id, "stiffness_<pair>")`:
    a C×C sign matrix, or a 2×C×C stack sign, cos); None otherwise."""
    runs = _first_seed_per_lr(table.finished())
    if sources is None or runs.empty:
        return None
    rid = runs.iloc[0]["run_id"]
    arrays = sources.probe_arrays(rid, f"stiffness_{pair}")
    if not arrays:
        return None
    steps = sorted(arrays)
    picks = sorted({steps[i] for i in np.linspace(0, len(steps) - 1, min(n_epochs, len(steps))).astype(int)})
    fig = Figure(figsize=(2.8 * len(picks) + 0.8, 2.8), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(picks), squeeze=False)[0])
    for ax, step in zip(axes, picks):
        c = np.asarray(arrays[step], dtype=float)
        c = c[0] if c.ndim == 3 else c
        im = ax.imshow(c, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set(title=f"step {step}", xlabel="class b", ylabel="class a")
    fig.colorbar(im, ax=list(axes), label=f"{pair} sign stiffness C(a, b)")
    return fig


def fig_distance(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Within-class sign stiffness against input distance 1 − cos(x₁, x₂) at the
    last probe step, one line per η (first seed), ξ where it crosses 0. Needs
    the distance-binned artifact (rows: bin centres, sign, cos); None otherwise."""
    runs = _first_seed_per_lr(table.finished())
    if sources is None or runs.empty:
        return None
    color, sm = lr_colors(runs[LR] if LR in runs else [])
    fig, drawn = Figure(figsize=(5, 3.4), dpi=DPI, layout="constrained"), 0
    ax = fig.subplots()
    for _, r in runs.iterrows():
        arrays = sources.probe_arrays(r["run_id"], DISTANCE_ARTIFACT)
        if not arrays:
            continue
        a = np.asarray(arrays[max(arrays)], dtype=float)
        ax.plot(a[0], a[1], "-o", ms=3, color=color(r[LR]) if LR in r else None)
        drawn += 1
    if not drawn:
        return None
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="input distance 1 − cos(x₁, x₂)", ylabel="within-class sign stiffness")
    fig.colorbar(sm, ax=ax, label="η")
    return fig


# ------------------------------------------------------------------- tables
def onsets_table(table: SweepTable) -> pd.DataFrame | None:
    """Per trial: onset epoch, train–val stiffness before/after, ξ, stop epoch."""
    if not table.has(VAL_LOSS):
        return None
    return trial_summary(table)


# ----------------------------------------------------------------- registry
EXPERIMENT = register(Experiment(
    name="stiffness",
    title="Stiffness (Fort et al. 2019)",
    conjectures=[train_val_falls_after_onset, within_exceeds_between, xi_vs_lr],
    figures={"stiffness_fig5_dynamics.png": fig_dynamics,
             "stiffness_class_matrices.png": fig_class_matrices,
             "stiffness_vs_distance.png": fig_distance},
    tables={"stiffness_onsets.csv": onsets_table},
    specs=("stiffness.yaml", "stiffness-cluster.yaml", "stiffness_heldout.yaml", "stiffness_stopper.yaml"),
))
