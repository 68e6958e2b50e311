"""Large initial learning rate (Li, Wei & Ma 2019).

Two specs, run in this order:

1. `large_lr_calibration.yaml`: a constant-η grid on the patch data, every η
   trained for the main spec's pre-annealing epochs. Per η: did it train
   (every seed reached the train-accuracy target `target_train_acc`, none
   diverged), the steps to that target, the train loss at the last epoch
   (`large_lr_calibration.csv`). The rule (plan options): the large η is the
   largest η that trains, and the grid must hold a larger one that does not
   (check `edge_bracketed`: the large η sits at the edge); the small η is the
   largest η at most η_large / `min_ratio` that reaches the target in at most
   as many steps as the large η (check `small_lr_found`). Conjecture
   `large_lr.calibration`: the chosen small η ends the calibration with the
   lower train loss (small − large, paired by seed, predicted −), so it fits
   the training set at least as fast. The main spec writes down the η pair
   this run chose.
2. `large_lr.yaml`: the chosen η pair on the patch data and on clean data
   (the no-patch control), seeds shared by all arms (paired: a seed fixes the
   initialisation and the data order).

Arms, told apart by their config (`lr_arm`); `has_patch` tells patch data
from the control:
- `large-anneal`: step schedule with a single milestone (×factor at a
  fraction of training), no pre-activation noise (a 3-step schedule is `other`);
- `small`: constant schedule, no noise;
- `small+noise`: `model.preact_noise` > 0 (switched off at
  `optim.schedule.noise_off_epoch`); not in the shipped spec, judged nowhere,
  drawn when present;
- `other`: anything else (ignored).

Conjecture `large_lr.anneal_crossover` (patch arms): the small η is better
before annealing (test accuracy averaged over the `before_epochs` epochs up
to the large arm's LR drop) and worse after (final test accuracy). One
intersection–union test of the two paired differences (small − large,
before: +, after: −): supported when both are significant with the
predicted sign, refuted by a significant reversal of either; statistic =
effect = the smaller signed difference, the parts with their CIs in details.

Manipulation checks, over the same window before annealing (the mechanism
the paper explains the crossover by; a sweep without it did not test the
claim): `small_fits_as_fast`, the small arm's mean train loss is at most the
large arm's; `small_learns_patch`, its patch-only accuracy (`patch/acc`) is
higher. Either failing gives `invalid_protocol` with the numbers.

Conjecture `large_lr.patch_hurts_small` (the control): the patch costs the
small η more final test accuracy than it costs the large η. Per seed the
contrast (small_patch − small_clean) − (large_patch − large_clean), a
sign-flip test of its mean, predicted −; judged only when
`small_learns_patch` passes.

Plans (`PLANS`). The crossover and the control are family `large_lr` (Holm
over the 2), alpha 0.05. Both are paired by seed, so a permutation test has
2^seeds arrangements: 6 seeds give a smallest two-sided p of 2/64 = 0.031,
which Holm over 2 doubles past 0.05, hence at least 7 per arm; detecting the
effect of interest, 0.02 (two accuracy points), at 80 % power with the
seed-to-seed spread the first 8-seed run showed takes about 12 (the spec). The
calibration stands alone (family `large_lr.calibration`): 6 seeds per η
(2/64 < 0.05).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweeps.conjectures.plan import FROM_PLAN, AnalysisPlan, Check
from sweeps.conjectures.inference import sign_flip_test
from sweeps.conjectures.verdict import (N_BOOT, N_PERM, compare_groups, intersection_union, Verdict,
                                        verdict_of)
from sweeps.experiments import Experiment, Sources, own_plans, register
from sweeps.experiments.regimes import _as_tuple
from sweeps.table import SweepTable
from sweeps.plotting import DPI

KIND, MILESTONES = "optim.schedule.kind", "optim.schedule.milestones"
NOISE, EPOCHS, LR, PATCH = "model.preact_noise", "train.epochs", "optim.lr", "data.patch.fraction"
ARMS = ("large-anneal", "small", "small+noise")


def lr_arm(row: pd.Series) -> str:
    """Which arm of the large-LR experiment a run belongs to."""
    noise = _number(row.get(NOISE, 0.0))
    kind = str(row.get(KIND, "constant"))
    if noise > 0:
        return "small+noise"
    if kind == "step" and len(_as_tuple(row.get(MILESTONES, (0.5, 0.75)))) == 1:
        return "large-anneal"
    if kind == "constant":
        return "small"
    return "other"


def has_patch(row: pd.Series) -> bool:
    """Whether a run trained on patch data (`data.patch.fraction` > 0)."""
    return _number(row.get(PATCH, 0.0)) > 0


def _number(value: Any) -> float:
    v = pd.to_numeric(pd.Series([value]), errors="coerce").fillna(0.0).iloc[0]
    return float(v)


def anneal_epoch(runs: pd.DataFrame) -> int | None:
    """Epoch after which the large arm's LR drops: first milestone × epochs."""
    large = runs[runs.apply(lr_arm, axis=1) == "large-anneal"] if len(runs) else runs
    if large.empty or EPOCHS not in large.columns:
        return None
    r = large.iloc[0]
    ms = _as_tuple(r.get(MILESTONES, (0.5,))) or (0.5,)
    return max(1, int(round(ms[0] * float(r[EPOCHS]))))


def value_at_epoch(series: pd.Series, epoch: int, epochs: int | None) -> float:
    """Value logged at the end of `epoch` (1-based) of a per-epoch series.

    A series with more entries than epochs is taken to start with an
    evaluation at initialization, so it is offset by the surplus.
    """
    n = len(series)
    if n == 0:
        return float("nan")
    offset = n - epochs if epochs is not None and n > epochs else 0
    return float(series.iloc[min(n - 1, offset + epoch - 1)])


def window_mean(series: pd.Series, last: int, width: int, epochs: int | None) -> float:
    """Mean of a per-epoch series over the `width` epochs ending at `last` (1-based)."""
    vals = [value_at_epoch(series, e, epochs) for e in range(max(1, last - width + 1), last + 1)]
    return float(np.mean(vals)) if vals else float("nan")


# -------------------------------------------------------------------- plans
CAL, NAME, CONTROL = "large_lr.calibration", "large_lr.anneal_crossover", "large_lr.patch_hurts_small"
FITS = Check("small_fits_as_fast", "over the epochs before annealing the small arm's mean "
             "train/loss is at most the large arm's")
LEARNS = Check("small_learns_patch", "over the epochs before annealing the small arm's mean "
               "patch/acc is higher than the large arm's")
PLANS = {
    CAL: AnalysisPlan(
        conjecture=CAL,
        statement="the calibrated small LR ends the pre-annealing budget with a lower train "
                  "loss than the largest LR that trains",
        metric="train/loss", statistic="difference_of_means", predicted_sign=-1,
        exclusions=("diverged",), family="large_lr.calibration", alpha=0.05, min_n=12,
        min_per_stratum=6, effect_of_interest=0.05,
        checks=(Check("edge_bracketed", "the grid holds an η that trains and a larger one that "
                      "does not (diverges or misses the train-accuracy target)"),
                Check("small_lr_found", "some η at most η_large / min_ratio trains and reaches "
                      "the target in at most as many steps as η_large")),
        options={"target_train_acc": 0.85, "min_ratio": 10}),
    NAME: AnalysisPlan(
        conjecture=NAME,
        statement="small LR reaches higher test accuracy before annealing and lower after",
        metric="val/acc", statistic="intersection_union", predicted_sign=+1,
        exclusions=("unfinished", "no_patch"), family="large_lr", alpha=0.05, min_n=14,
        min_per_stratum=7, effect_of_interest=0.02, checks=(FITS, LEARNS),
        options={"before_epochs": 3, "anneal_epoch": None, "part_signs": [+1, -1],
                 "parts": "val/acc before annealing (small − large), final test accuracy"}),
    CONTROL: AnalysisPlan(
        conjecture=CONTROL,
        statement="the patch lowers the small LR's final test accuracy more than the large LR's",
        metric="final/val_acc", statistic="paired_sign_flip", predicted_sign=-1,
        exclusions=("unfinished", "incomplete_seed"), family="large_lr", alpha=0.05, min_n=7,
        min_per_stratum=1, effect_of_interest=0.02, checks=(LEARNS,),
        options={"before_epochs": 3, "anneal_epoch": None})}
# anneal_epoch: the epoch after which the large arm's η drops; null: its first
# milestone × its epochs (`anneal_epoch()`)


# -------------------------------------------------------------- calibration
def calibration_frame(table: SweepTable, target: float) -> pd.DataFrame:
    """One row per run of a constant-η sweep: lr, seed, status, the step at
    which train/acc first reached `target` (NaN: never), train loss, train and
    test accuracy at the last epoch, and whether it trained."""
    rows = []
    for _, r in table.runs.iterrows():
        rid = r["run_id"]
        acc = table.per_epoch(rid, "train/acc").astype(float)
        loss = table.per_epoch(rid, "train/loss").astype(float)
        val = table.per_epoch(rid, "val/acc").astype(float)
        hit = acc[acc >= target]
        status = str(r["status"])
        rows.append({"run_id": rid, "lr": _number(r.get(LR)), "seed": r.get("seed"),
                     "status": status, "steps_to_target": float(hit.index[0]) if len(hit) else np.nan,
                     "train_loss_last": float(loss.iloc[-1]) if len(loss) else np.nan,
                     "train_acc_last": float(acc.iloc[-1]) if len(acc) else np.nan,
                     "val_acc_last": float(val.iloc[-1]) if len(val) else np.nan,
                     "trains": status == "finished" and len(hit) > 0})
    return pd.DataFrame(rows, columns=["run_id", "lr", "seed", "status", "steps_to_target",
                                       "train_loss_last", "train_acc_last", "val_acc_last",
                                       "trains"])


def calibration_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per η: runs, diverged, trained, and the means of the per-run columns."""
    g = frame.groupby("lr")
    out = pd.DataFrame({
        "n": g.size(), "n_diverged": g["status"].apply(lambda s: int((s == "diverged").sum())),
        "n_trained": g["trains"].sum().astype(int),
        "steps_to_target": g["steps_to_target"].mean(),
        "train_loss_last": g["train_loss_last"].mean(),
        "train_acc_last": g["train_acc_last"].mean(), "val_acc_last": g["val_acc_last"].mean()})
    out["trains"] = out["n_trained"] == out["n"]
    return out.reset_index().sort_values("lr").reset_index(drop=True)


def choose_lrs(summary: pd.DataFrame, min_ratio: float) -> dict[str, Any]:
    """The calibration rule on `calibration_summary`: the η pair and the two checks."""
    trains = summary[summary["trains"]]
    if trains.empty:
        why = "no η trained (every one diverged or missed the target)"
        return {"large": None, "small": None, "edge_bracketed": (False, why),
                "small_lr_found": (False, why)}
    large = float(trains["lr"].max())
    above = summary[summary["lr"] > large]
    edge = (bool(len(above)), f"η_large {large:g}; next η {above['lr'].min():g} does not train"
            if len(above) else f"η_large {large:g} is the largest η of the grid: the edge "
            "was not reached, extend the grid upwards")
    steps_large = float(trains.loc[trains["lr"] == large, "steps_to_target"].iloc[0])
    cand = trains[(trains["lr"] <= large / min_ratio) & (trains["steps_to_target"] <= steps_large)]
    if cand.empty:
        return {"large": large, "small": None, "edge_bracketed": edge, "small_lr_found": (
            False, f"no η <= {large / min_ratio:g} reached the target within {steps_large:g} "
                   "steps (η_large's)")}
    row = cand.loc[cand["lr"].idxmax()]
    small = float(row["lr"])
    return {"large": large, "small": small, "edge_bracketed": edge, "small_lr_found": (
        True, f"η_small {small:g} reached the target at step {row['steps_to_target']:.0f} vs "
              f"{steps_large:.0f} for η_large {large:g}")}


def calibration(table: SweepTable, plans: Mapping[str, AnalysisPlan] | None = None, *,
                n_perm: int = N_PERM, n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """The small η the calibration picks fits the training set faster than the large one."""
    plan = own_plans(PLANS, CAL, plans)[CAL]
    frame = calibration_frame(table, plan.options["target_train_acc"])
    counts = {"excluded_diverged": int((frame["status"] == "diverged").sum())}
    if frame.empty:
        why = "no runs"
        return [verdict_of(plan, None, checks={c.name: (False, why) for c in plan.checks}, n=0,
                      reason=why, **counts)]
    summary = calibration_summary(frame)
    pick = choose_lrs(summary, plan.options["min_ratio"])
    checks = {c: pick[c] for c in ("edge_bracketed", "small_lr_found")}
    chosen = {"lr_large": pick["large"], "lr_small": pick["small"]}
    if pick["small"] is None:
        return [verdict_of(plan, None, checks=checks, n=0, reason=checks["small_lr_found"][1],
                      **counts, **chosen)]
    ok = frame[frame["status"] == "finished"]
    a, b = ok[ok["lr"] == pick["small"]], ok[ok["lr"] == pick["large"]]
    common = sorted(set(a["seed"]) & set(b["seed"]))
    a, b = a[a["seed"].isin(common)], b[b["seed"].isin(common)]
    res = compare_groups(a["train_loss_last"], b["train_loss_last"], blocks_a=a["seed"].to_numpy(),
                         blocks_b=b["seed"].to_numpy(), n_perm=n_perm, n_boot=n_boot,
                         rng_seed=rng_seed, alpha=plan.alpha)
    return [verdict_of(plan, res, checks=checks, **counts, **chosen,
                  steps_to_target={"small": float(a["steps_to_target"].mean()),
                                   "large": float(b["steps_to_target"].mean())})]


def calibration_table(table: SweepTable) -> pd.DataFrame | None:
    """`calibration_summary` of a calibration sweep (constant η only; None otherwise)."""
    runs = table.runs
    if runs.empty or (runs.apply(lr_arm, axis=1) != "small").any():
        return None
    return calibration_summary(calibration_frame(
        table, PLANS[CAL].options["target_train_acc"]))


# ------------------------------------------------------- crossover, control
def _per_run(table: SweepTable, runs: pd.DataFrame, key: str, epoch: int, width: int) -> pd.Series:
    """`key` of every run averaged over the `width` epochs ending at `epoch` (NaN where not logged)."""
    out = {}
    for rid, r in runs.iterrows():
        epochs = int(r[EPOCHS]) if EPOCHS in r and pd.notna(r[EPOCHS]) else None
        out[rid] = window_mean(table.per_epoch(rid, key), epoch, width, epochs)
    return pd.Series(out, dtype=float)


def _checks(train_loss: tuple[float, float], patch: tuple[float, float]) -> dict[str, tuple]:
    """Manipulation-check outcomes from (small, large) means before annealing."""
    (ls, ll), (ps, pl) = train_loss, patch
    fits = (bool(np.isfinite(ls) and np.isfinite(ll) and ls <= ll),
            f"train/loss small {ls:.4g} vs large {ll:.4g}" if np.isfinite(ls + ll)
            else "train/loss not logged in both arms")
    learns = (bool(np.isfinite(ps) and np.isfinite(pl) and ps > pl),
              f"patch/acc small {ps:.4g} vs large {pl:.4g}" if np.isfinite(ps + pl)
              else "patch/acc not logged in both arms")
    return {FITS.name: fits, LEARNS.name: learns}


def _arms(table: SweepTable) -> tuple[pd.DataFrame, pd.Series, pd.Series, dict[str, int]]:
    """Finished runs (by run_id), their arm, whether they carry the patch, and counts."""
    runs = table.runs.set_index("run_id", drop=False)
    status = runs["status"].astype(str)
    counts = {"excluded_diverged": int((status == "diverged").sum()),
              "excluded_other": int(((status != "diverged") & (status != "finished")).sum())}
    runs = runs[status == "finished"]
    arm = runs.apply(lr_arm, axis=1) if len(runs) else pd.Series(dtype=object)
    patch = runs.apply(has_patch, axis=1).astype(bool) if len(runs) else pd.Series(dtype=bool)
    counts.update({f"n_{a}": int(((arm == a) & patch).sum()) for a in ARMS})
    counts.update({f"n_{a}_no_patch": int(((arm == a) & ~patch).sum()) for a in ARMS})
    return runs, arm, patch, counts


def _by_seed(values: pd.Series, runs: pd.DataFrame, mask: pd.Series) -> pd.Series:
    """Values of the runs in `mask`, indexed by seed (the first run of a seed kept)."""
    ids = mask.index[mask]
    s = pd.Series(values.reindex(ids).to_numpy(), index=runs.loc[ids, "seed"].to_numpy())
    return s[~s.index.duplicated()]


def _paired(a: pd.Series, b: pd.Series, **kw: Any):
    """Difference of means a − b over the seeds both hold, permuted within seeds."""
    common = sorted(set(a.index) & set(b.index), key=str)
    a, b = a.reindex(common), b.reindex(common)
    return compare_groups(a.to_numpy(), b.to_numpy(), blocks_a=np.asarray(common, dtype=object),
                          blocks_b=np.asarray(common, dtype=object), **kw)


def anneal_crossover(table: SweepTable, plans: Mapping[str, AnalysisPlan] | None = None, *,
                     epoch: Any = FROM_PLAN, n_perm: int = N_PERM, n_boot: int = N_BOOT,
                     rng_seed: int = 0) -> list[Verdict]:
    """Small LR is better than large-then-anneal before annealing and worse after (patch data)."""
    plan = own_plans(PLANS, NAME, plans)[NAME].with_options(anneal_epoch=epoch)
    epoch = plan.options["anneal_epoch"]
    runs, arm, patch, counts = _arms(table)
    counts["excluded_no_patch"] = int((~patch).sum()) if len(patch) else 0
    width = int(plan.options["before_epochs"])
    e_a = epoch if epoch is not None else anneal_epoch(runs[patch] if len(runs) else runs)
    if e_a is None:
        why = "no large-anneal arm on patch data to date the annealing"
        return [verdict_of(plan, None, checks={c.name: (False, why) for c in plan.checks}, n=0,
                      reason=why, **counts)]
    small, large = patch & (arm == "small"), patch & (arm == "large-anneal")
    at = lambda key: _per_run(table, runs, key, e_a, width)  # noqa: E731
    means = lambda s: (float(s[small].mean()), float(s[large].mean()))  # noqa: E731
    before, after = at(plan.metric), table.final("final/val_acc", fallback="val/acc")
    checks = _checks(means(at("train/loss")), means(at("patch/acc")))
    kw = dict(n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=plan.alpha)
    pre = _paired(_by_seed(before, runs, small), _by_seed(before, runs, large), **kw)
    post = _paired(_by_seed(after, runs, small), _by_seed(after, runs, large), **kw)
    res = intersection_union([pre, post], [int(x) for x in plan.options["part_signs"]])
    control = {}
    c_small, c_large = ~patch & (arm == "small"), ~patch & (arm == "large-anneal")
    if c_small.any() and c_large.any():
        control = {"no_patch_before_minus": float(before[c_small].mean() - before[c_large].mean()),
                   "no_patch_after_minus": float(after.reindex(runs.index)[c_small].mean()
                                                 - after.reindex(runs.index)[c_large].mean())}
    return [verdict_of(plan, res, checks=checks, **counts, anneal_epoch=e_a, before_epochs=width,
                  before_minus=pre.statistic, after_minus=post.statistic, **control)]


def patch_hurts_small(table: SweepTable, plans: Mapping[str, AnalysisPlan] | None = None, *,
                      epoch: Any = FROM_PLAN, n_perm: int = N_PERM, n_boot: int = N_BOOT,
                      rng_seed: int = 0) -> list[Verdict]:
    """The patch costs the small LR more final test accuracy than the large LR (per-seed contrast)."""
    plan = own_plans(PLANS, CONTROL, plans)[CONTROL].with_options(anneal_epoch=epoch)
    epoch = plan.options["anneal_epoch"]
    runs, arm, patch, counts = _arms(table)
    e_a = epoch if epoch is not None else anneal_epoch(runs[patch] if len(runs) else runs)
    if e_a is None:
        why = "no large-anneal arm on patch data"
        return [verdict_of(plan, None, checks={c.name: (False, why) for c in plan.checks}, n=0,
                      reason=why, **counts)]
    width = int(plan.options["before_epochs"])
    small, large = patch & (arm == "small"), patch & (arm == "large-anneal")
    at = lambda key: _per_run(table, runs, key, e_a, width)  # noqa: E731
    checks = {LEARNS.name: _checks((np.nan, np.nan), (float(at("patch/acc")[small].mean()),
                                                      float(at("patch/acc")[large].mean())))[LEARNS.name]}
    final = table.final(plan.metric, fallback="val/acc").reindex(runs.index)
    cells = {(a, p): _by_seed(final, runs, (arm == a) & (patch == p))
             for a in ("small", "large-anneal") for p in (True, False)}
    frame = pd.DataFrame({f"{a}|{p}": s for (a, p), s in cells.items()})
    complete = frame.dropna()
    counts["excluded_incomplete_seed"] = int(len(frame) - len(complete))
    if complete.empty:
        return [verdict_of(plan, None, checks=checks, n=0, reason="no seed holds all four arms "
                      "(small and large-anneal, with and without the patch)", **counts)]
    d = ((complete["small|True"] - complete["small|False"])
         - (complete["large-anneal|True"] - complete["large-anneal|False"]))
    res = sign_flip_test(d.to_numpy(), n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed,
                         alpha=plan.alpha)
    cost = {f"patch_cost_{'small' if a == 'small' else 'large'}":
            float((complete[f"{a}|True"] - complete[f"{a}|False"]).mean())
            for a in ("small", "large-anneal")}
    return [verdict_of(plan, res, checks=checks, **counts, **cost)]


# ------------------------------------------------------------------ figures
def fig_large_lr(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Li/Wei/Ma: test accuracy, patch-only accuracy (when logged) and train
    loss over steps per arm, mean over seeds; solid on patch data, dashed on
    the no-patch control; dotted line at the large arm's annealing."""
    runs = table.finished()
    if runs.empty or not table.has("val/acc"):
        return None
    arms = runs.apply(lr_arm, axis=1)
    if not (arms == "large-anneal").any():
        return None
    patch = runs.apply(has_patch, axis=1).astype(bool)
    keys = ["val/acc"] + [k for k in ("patch/acc", "train/loss") if table.has(k)]
    fig = Figure(figsize=(4.2 * len(keys) + 0.5, 3.3), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    e_a = anneal_epoch(runs)
    anneal_step = None
    large = runs[arms == "large-anneal"]
    if e_a is not None and len(large):
        steps = table.series(large["run_id"].iloc[0], "val/acc").sort_index().index
        n_ep = int(large["train.epochs"].iloc[0]) if "train.epochs" in large else len(steps)
        if len(steps):
            off = max(0, len(steps) - n_ep)
            anneal_step = steps[min(len(steps) - 1, off + e_a - 1)]
    titles = {"val/acc": "test accuracy", "patch/acc": "patch-only accuracy",
              "train/loss": "train loss"}
    for ax, key in zip(axes, keys):
        for i, arm in enumerate(ARMS):
            for on, ls in ((True, "-"), (False, "--")):
                ids = runs["run_id"][(arms == arm) & (patch == on)]
                if len(ids):
                    c = table.mean_curve(ids, key)
                    ax.plot(c.index, c.to_numpy(), color=f"C{i}", ls=ls,
                            label=f"{arm}{'' if on else ' no patch'} (n={len(ids)})")
        if anneal_step is not None:
            ax.axvline(anneal_step, color="grey", ls=":", lw=1)
        if key == "train/loss":
            ax.set_yscale("log")
        ax.set(xlabel="step", ylabel=key, title=titles[key])
        ax.legend(fontsize=6)
    return fig


def fig_calibration(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Calibration: train loss over steps per η (mean over seeds), and the
    steps to the train-accuracy target against η (the chosen pair marked)."""
    summary = calibration_table(table)
    if summary is None or summary.empty:
        return None
    frame = calibration_frame(table, PLANS[CAL].options["target_train_acc"])
    pick = choose_lrs(summary, PLANS[CAL].options["min_ratio"])
    fig = Figure(figsize=(9.0, 3.3), dpi=DPI, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for i, lr in enumerate(summary["lr"]):
        ids = frame.loc[frame["lr"] == lr, "run_id"]
        c = table.mean_curve(ids, "train/loss")
        if len(c):
            ax1.plot(c.index, c.to_numpy(), color=f"C{i % 10}", label=f"η = {lr:g}",
                     lw=2.5 if lr in (pick["large"], pick["small"]) else 1)
    ax1.set(xlabel="step", ylabel="train/loss", title="train loss per η", yscale="log")
    ax1.legend(fontsize=6)
    ok = summary[summary["trains"]]
    ax2.plot(ok["lr"], ok["steps_to_target"], "o-", color="C0")
    for key, mark in (("large", "s"), ("small", "^")):
        if pick[key] is not None:
            y = float(ok.loc[ok["lr"] == pick[key], "steps_to_target"].iloc[0])
            ax2.plot([pick[key]], [y], mark, ms=10, mfc="none", color="C3", label=f"η_{key}")
    for lr in summary.loc[~summary["trains"], "lr"]:
        ax2.axvline(lr, color="grey", ls=":", lw=1)
    target = PLANS[CAL].options["target_train_acc"]
    ax2.set(xscale="log", xlabel="η", ylabel=f"steps to train acc ≥ {target:g}",
            title="fitting speed (dotted: did not train)")
    ax2.legend(fontsize=6)
    return fig


# --------------------------------------------------------------- registry
EXPERIMENT = register(Experiment(
    name="large_lr",
    title="A large initial learning rate (Li, Wei & Ma 2019)",
    conjectures={CAL: calibration, NAME: anneal_crossover, CONTROL: patch_hurts_small},
    figures={"large_lr_accuracy.png": fig_large_lr, "large_lr_calibration.png": fig_calibration},
    tables={"large_lr_calibration.csv": calibration_table},
    specs=("large_lr_calibration.yaml", "large_lr.yaml"),
    plans=PLANS,
))
