"""Two regimes of deep-network training (Leclerc & Madry 2020).

Each trial is classified from its per-epoch training loss (`classify_regimes`):
- `diverged`: status is diverged, or the loss curve has a non-finite value;
- `small-step`: the loss decreases consistently, i.e. at least
  `min_decrease_frac` (a plan option, 0.9) of the epoch-to-epoch changes are negative;
- `non-training`: the loss does not decrease consistently *and* the last
  per-epoch train loss is still at least `nontrain_frac` (a plan option, 0.9) of the
  chance-level loss ln C (C classes): the trial neither diverged nor learned
  (it sits at, or has fallen back to, chance). Like diverged trials these are
  excluded from every comparison and counted in details (`n_non-training`).
  C comes from the `n_classes` option, else from `data.dataset` (`N_CLASSES`);
  where neither gives it, the rule is off for that trial. `nontrain_frac=None`
  turns it off everywhere. A consistently decreasing curve is small-step
  however high its loss (a small η that learns slowly is still small-step);
- `large-step`: otherwise (the loss does not decrease consistently, but the
  trial trains);
- `unknown`: errored/running trials or fewer than 2 epochs logged.
The regime is a post-treatment subgroup: it comes from the curve whose outcome
is then tested, which `AnalysisPlan`'s `subgroups_from` rule refuses for any
plan that declares it. These plans predate a calibrated regime map; their
verdicts are exploratory in that sense (docs/science.md, "A plan is the whole
analysis").

Conjectures, each verdict under its plan (`PLANS`):
- `regimes.momentum[small-step]`: in small-step trials momentum lowers the
  final train loss (stratified Spearman of μ vs final loss within each η,
  seeds as blocks, predicted −); an η stratum whose informative cells hold
  fewer than 3 trials (at a regime boundary: one seed with two μ in the
  regime) is excluded and counted (`thin_strata`);
  `regimes.momentum[large-step]`: in large-step trials it does not: the same
  test, predicted +, so a significant decrease refutes; a null result is
  inconclusive (no test shows an absence).
- `regimes.large_step_generalizes`: final test accuracy of large-step trials
  is higher than that of small-step trials (difference of means).
These three are the Holm family `regimes` (one sweep, `two_regimes.yaml`).
- `regimes.two_stage[T=<T>]`: for each stage-1 length T of the ablation, the
  two-stage schedule's final test accuracy is not worse than the tuned 3-step
  schedule's (its best initial η in the sweep) by more than `tol` (0.02):
  non-inferiority, paired by seed (trials that share a seed share their
  initialisation), a permutation test of H0: d = −tol for d = mean over
  seeds of acc(two-stage) − acc(3-step), two-sided so that a significant
  d < −tol refutes. The Ts are the Holm family `regimes.two_stage` (its own
  sweep, `two_stage.yaml`, sized by `two_stage_pilot.yaml`).
Minimum n: 10 trials for a trend (3 per η stratum), 5 per arm for a
comparison (3 against 3 cannot reach p < 0.05 in a permutation test).
Effects of interest: |rho| 0.5; 0.02 of accuracy (two points), which for
the two-stage schedule is its margin: the seeds it needs at 80 % power are
`seeds_for_margin` of the pilot's spread of the paired difference (a margin
of 0.01 would need about four times as many, beyond a 2-core budget).
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from sweeps.conjectures.plan import FROM_PLAN, AnalysisPlan
from sweeps.conjectures.stats import ALPHA, POWER
from sweeps.conjectures.verdict import (N_BOOT, N_PERM, compare_groups, trend_test, Verdict,
                                        verdict_of)
from sweeps.experiments import Experiment, Sources, own_plans, register
from sweeps.table import SweepTable, param
from sweeps.plotting import DPI, lr_colors

LR, MOM = "optim.lr", "optim.momentum"
KIND, STAGE1 = "optim.schedule.kind", "optim.schedule.stage1_epochs"
MILESTONES, FACTOR = "optim.schedule.milestones", "optim.schedule.factor"
REGIMES = ("diverged", "non-training", "large-step", "small-step", "unknown")
# classes of the classification datasets dynamics_core.data loads
N_CLASSES = {"mnist1d": 10, "cifar10": 10, "mnist": 10, "fashion_mnist": 10}
# the regime rule: part of every plan that reads regimes (see the module docstring)
_RULE = {"min_decrease_frac": 0.9, "nontrain_frac": 0.9}
TOL = 0.02
_TREND = dict(statistic="stratified_spearman",
              exclusions=("unfinished", "diverged", "non_training", "thin_strata"),
              family="regimes", min_n=10, min_per_stratum=3, effect_of_interest=0.5)
PLANS = {
    "regimes.momentum[small-step]": AnalysisPlan(
        conjecture="regimes.momentum", **_TREND, metric="final/train_loss", predicted_sign=-1,
        statement="momentum lowers the final train loss in the small-step regime",
        options={"regime": "small-step", **_RULE}),
    "regimes.momentum[large-step]": AnalysisPlan(
        conjecture="regimes.momentum", **_TREND, metric="final/train_loss", predicted_sign=+1,
        statement="momentum does not lower the final train loss in the large-step regime "
                  "(a significant decrease refutes)",
        options={"regime": "large-step", **_RULE}),
    "regimes.large_step_generalizes": AnalysisPlan(
        conjecture="regimes.large_step_generalizes", metric="final/val_acc",
        statistic="difference_of_means", predicted_sign=+1,
        exclusions=("unfinished", "diverged", "non_training"), family="regimes", min_n=10,
        min_per_stratum=5, effect_of_interest=0.02, options=dict(_RULE),
        statement="large-step trials reach a higher final test accuracy than small-step trials "
                  "(diverged and non-training trials excluded)"),
    "regimes.two_stage": AnalysisPlan(
        conjecture="regimes.two_stage", metric="final/val_acc", statistic="non_inferiority",
        predicted_sign=+1, exclusions=("unfinished",), family="regimes.two_stage", min_n=10,
        min_per_stratum=5, effect_of_interest=TOL,
        options={"tol": TOL, "baseline": "3-step at the best initial η of the sweep",
                 "pairing": "seed"},
        statement=f"the two-stage schedule matches (within {TOL}) or beats the tuned 3-step "
                  "schedule"),
}


def classify_loss_curve(losses: np.ndarray,
                        min_decrease_frac: float = _RULE["min_decrease_frac"],
                        chance_loss: float | None = None,
                        nontrain_frac: float | None = _RULE["nontrain_frac"]) -> str:
    """Regime of one per-epoch loss curve (see module docstring).

    `chance_loss` is ln C; without it (or with `nontrain_frac=None`) no curve
    is called non-training.
    """
    v = np.asarray(losses, dtype=float)
    if v.size and not np.all(np.isfinite(v)):
        return "diverged"
    if v.size < 2:
        return "unknown"
    frac = float(np.mean(np.diff(v) < 0))
    if frac >= min_decrease_frac:
        return "small-step"
    if (nontrain_frac is not None and chance_loss is not None and np.isfinite(chance_loss)
            and v[-1] >= nontrain_frac * chance_loss):
        return "non-training"
    return "large-step"


def chance_loss(row: pd.Series | dict, n_classes: int | None = None) -> float | None:
    """ln C for one trial: C from `n_classes`, else from its `data.dataset`; None if unknown."""
    c = n_classes if n_classes is not None else N_CLASSES.get(str(row.get("data.dataset", "")))
    return float(np.log(c)) if c is not None and c >= 2 else None


def classify_regimes(table: SweepTable, min_decrease_frac: float = _RULE["min_decrease_frac"],
                     nontrain_frac: float | None = _RULE["nontrain_frac"],
                     n_classes: int | None = None) -> pd.Series:
    """Regime per run_id, from status and the per-epoch `train/loss`."""
    out = {}
    for _, r in table.runs.iterrows():
        rid, status = r["run_id"], str(r["status"])
        if status == "diverged":
            out[rid] = "diverged"
        elif status != "finished":
            out[rid] = "unknown"
        else:
            out[rid] = classify_loss_curve(table.per_epoch(rid, "train/loss").to_numpy(),
                                           min_decrease_frac, chance_loss(r, n_classes),
                                           nontrain_frac)
    return pd.Series(out, name="regime", dtype=object)


def _with_regimes(table: SweepTable, plan: AnalysisPlan,
                  n_classes: int | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Runs with their regime under the plan's rule (`min_decrease_frac`, `nontrain_frac`)."""
    min_decrease_frac = float(plan.options["min_decrease_frac"])
    nontrain_frac = plan.options["nontrain_frac"]
    runs = table.runs.set_index("run_id", drop=False)
    reg = classify_regimes(table, min_decrease_frac, nontrain_frac, n_classes)
    runs = runs.assign(regime=reg.reindex(runs.index))
    counts: dict[str, Any] = {f"n_{k}": int((runs["regime"] == k).sum()) for k in REGIMES}
    counts["min_decrease_frac"] = min_decrease_frac
    counts["nontrain_frac"] = nontrain_frac
    losses = {chance_loss(r, n_classes) for _, r in runs.iterrows()}
    counts["chance_loss"] = sorted(x for x in losses if x is not None) or None
    if None in losses and nontrain_frac is not None:
        counts["nontrain_rule_off"] = "number of classes unknown for some trials (give n_classes)"
    return runs, counts


def _final_train_loss(table: SweepTable) -> pd.Series:
    return table.final("final/train_loss", fallback="train/loss")


def _final_val_acc(table: SweepTable) -> pd.Series:
    return table.final("final/val_acc", fallback="val/acc")


# -------------------------------------------------------------- momentum
def momentum(table: SweepTable, plans: Mapping[str, AnalysisPlan] | None = None, *,
             min_decrease_frac: Any = FROM_PLAN, nontrain_frac: Any = FROM_PLAN,
             n_classes: int | None = None, n_perm: int = N_PERM, n_boot: int = N_BOOT,
             rng_seed: int = 0) -> list[Verdict]:
    """Momentum lowers the final train loss in the small-step regime, not in the large-step one.

    One verdict per regime (see module docstring): μ vs final train loss
    within each η, seeds as blocks. Diverged and non-training trials are
    excluded and counted. `min_decrease_frac`/`nontrain_frac` given here override
    the plan's (an exploratory verdict).
    """
    out = []
    for key, plan in own_plans(PLANS, "regimes.momentum", plans).items():
        plan = plan.with_options(min_decrease_frac=min_decrease_frac, nontrain_frac=nontrain_frac)
        runs, counts = _with_regimes(table, plan, n_classes)
        reg = plan.options["regime"]
        if MOM not in runs.columns:
            out.append(verdict_of(plan, None, name=key, n=0, reason=f"no column {MOM}", **counts))
            continue
        loss = table.final(plan.metric, fallback="train/loss")
        sub = runs.assign(final_loss=loss.reindex(runs.index))
        sub = sub[(sub["regime"] == reg) & np.isfinite(sub["final_loss"].astype(float))]
        if len(sub) < 3:
            out.append(verdict_of(plan, None, name=key, n=len(sub),
                             reason=f"only {len(sub)} {reg} trials", **counts))
            continue
        sub, thin = _drop_thin_strata(sub, plan)
        if len(sub) < 3:
            out.append(verdict_of(plan, None, name=key, n=len(sub), reason=f"only {len(sub)} {reg} "
                             "trials in strata of the minimum size", **counts, thin_strata=thin))
            continue
        strata = param(sub, LR).astype(str).to_numpy() if LR in sub.columns else None
        res = trend_test(param(sub, MOM).to_numpy(float), sub["final_loss"].to_numpy(float),
                         strata, blocks=sub["seed"].astype(str).to_numpy(), n_perm=n_perm,
                         n_boot=n_boot, rng_seed=rng_seed, alpha=plan.alpha)
        out.append(verdict_of(plan, res, name=key, **counts, regime=reg, thin_strata=thin))
    return out


def _drop_thin_strata(sub: pd.DataFrame, plan: AnalysisPlan) -> tuple[pd.DataFrame, dict[str, int]]:
    """With the plan's `thin_strata` exclusion: drop the η strata whose informative cells
    hold fewer than `min_per_stratum` trials; {η: trials dropped} of those.

    A cell is what `trend_test` keeps: the trials of one (η, seed) with at least
    2 trials and 2 μ levels. At a regime boundary an η may hold one such cell of
    2 (one seed has two μ in the regime, the others one): such a stratum is
    dropped and counted rather than making the whole verdict underpowered.
    """
    if "thin_strata" not in plan.exclusions or LR not in sub.columns or sub.empty:
        return sub, {}
    lr, mu, seed = param(sub, LR).astype(float), param(sub, MOM).astype(float), sub["seed"].astype(str)
    informative = pd.Series(False, index=sub.index)
    for _, cell in sub.groupby([lr, seed]):
        if len(cell) >= 2 and mu.reindex(cell.index).nunique() >= 2:
            informative[cell.index] = True
    size = informative.groupby(lr).sum()
    thin = [v for v, k in size.items() if 0 < k < plan.min_per_stratum]
    keep = ~lr.isin(thin)
    return sub[keep], {f"{v:g}": int((lr == v).sum()) for v in thin}


# ------------------------------------------------------- generalization
def large_step_generalizes(table: SweepTable, plans: Mapping[str, AnalysisPlan] | None = None, *,
                           min_decrease_frac: Any = FROM_PLAN,
                           nontrain_frac: Any = FROM_PLAN,
                           n_classes: int | None = None,
                           momentum_value: float | None = None,
                           n_perm: int = N_PERM, n_boot: int = N_BOOT,
                           rng_seed: int = 0) -> list[Verdict]:
    """Final test accuracy is higher in large-step trials than in small-step ones.

    Two-sample permutation test on mean final `val/acc` (large - small); with
    `momentum_value` only trials at that μ are compared (e.g. 0.0). Diverged
    and non-training trials (see module docstring) are excluded and counted:
    a trial that never left chance level is not in the large-step regime.
    """
    name = "regimes.large_step_generalizes"
    plan = own_plans(PLANS, name, plans)[name].with_options(
        min_decrease_frac=min_decrease_frac, nontrain_frac=nontrain_frac)
    runs, counts = _with_regimes(table, plan, n_classes)
    if momentum_value is not None and MOM in runs.columns:
        runs = runs[np.isclose(param(runs, MOM).astype(float), momentum_value)]
        counts["momentum"] = momentum_value
    acc = _final_val_acc(table).reindex(runs.index)
    a = acc[runs["regime"] == "large-step"]
    b = acc[runs["regime"] == "small-step"]
    res = compare_groups(a, b, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=plan.alpha)
    return [verdict_of(plan, res, **counts, groups={"a": "large-step", "b": "small-step"})]


# -------------------------------------------------------------- two-stage
def _as_tuple(v: Any) -> tuple[float, ...]:
    if isinstance(v, str):
        try:
            v = json.loads(v.replace("(", "[").replace(")", "]"))
        except ValueError:
            return ()
    if isinstance(v, (list, tuple, np.ndarray)):
        return tuple(float(x) for x in v)
    return () if v is None or (isinstance(v, float) and np.isnan(v)) else (float(v),)


def is_three_step(row: pd.Series) -> bool:
    """Step schedule with two milestones (the classic 3-step: ×0.1 at 50% and 75%)."""
    return (str(row.get(KIND, "")) == "step"
            and len(_as_tuple(row.get(MILESTONES, (0.5, 0.75)))) == 2)


def three_step_baseline(runs: pd.DataFrame, acc: pd.Series) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(the 3-step trials of the baseline, how it was chosen) among finished `runs`.

    A sweep may hold the 3-step schedule at several initial η (a tuning
    grid): the baseline is the η with the best mean final test accuracy over
    its finished trials (the best of the grid); with one η (or none
    recorded), every 3-step trial. The record gives the grid's means.
    """
    base = runs[runs.apply(is_three_step, axis=1).astype(bool)] if len(runs) else runs
    if base.empty or LR not in base.columns or base[LR].isna().all():
        return base, {"three_step_lr": None}
    lr = param(base, LR).astype(float)
    grid = acc.reindex(base.index).groupby(lr).mean()
    best = float(grid.idxmax())
    return base[np.isclose(lr, best)], {"three_step_lr": best,
                                        "three_step_grid": {f"{k:g}": float(v)
                                                            for k, v in grid.items()}}


def paired_by_seed(a: pd.Series, seeds_a: pd.Series, b: pd.Series,
                   seeds_b: pd.Series) -> tuple[pd.Series, pd.Series, list[str]]:
    """`a` and `b` restricted to the seeds both hold (one trial per seed each), and those seeds."""
    sa, sb = seeds_a.astype(str), seeds_b.astype(str)
    common = sorted(set(sa[np.isfinite(a.astype(float))]) & set(sb[np.isfinite(b.astype(float))]))

    def per_seed(v: pd.Series, s: pd.Series) -> pd.Series:
        keep = s.isin(common)
        return v[keep].groupby(s[keep]).mean().reindex(common)

    return per_seed(a, sa), per_seed(b, sb), common


def seeds_for_margin(sd: float, tol: float, n_tests: int = 1, alpha: float = ALPHA,
                     power: float = POWER) -> int:
    """Seeds a paired non-inferiority test needs to reject d = −tol with `power` when d = 0.

    n = ⌈((z_{1−α/(2m)} + z_power) · sd / tol)²⌉ with m = `n_tests` (the
    Holm family: its smallest p must pass α/m), `sd` the per-seed standard
    deviation of the paired difference; at least the n whose exact sign-flip
    test can reach α/m at all (2 / 2^n < α/m).
    """
    if not (np.isfinite(sd) and tol > 0):
        return 0
    level = alpha / max(n_tests, 1)
    z = stats.norm.ppf(1 - level / 2) + stats.norm.ppf(power)
    floor = 1
    while 2 / 2 ** floor >= level:
        floor += 1
    return max(int(np.ceil((z * sd / tol) ** 2)), floor)


def _schedule_arms(table: SweepTable) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, dict[str, Any],
                                        dict[float, pd.DataFrame]]:
    """(finished runs, their final test accuracy, the 3-step baseline, how it was chosen,
    two-stage trials by T)."""
    runs = table.runs.set_index("run_id", drop=False)
    runs = runs[runs["status"].astype(str) == "finished"]
    acc = _final_val_acc(table).reindex(runs.index)
    if KIND not in runs.columns:
        return runs, acc, runs.iloc[:0], {"three_step_lr": None}, {}
    base, chosen = three_step_baseline(runs, acc)
    two = runs[runs[KIND].astype(str) == "two_stage"]
    t_col = param(two, STAGE1, 0).astype(float)
    return runs, acc, base, chosen, {float(t): g for t, g in two.groupby(t_col)}


def two_stage(table: SweepTable, plans: Mapping[str, AnalysisPlan] | None = None, *,
              stage1_epochs: int | None = None, n_perm: int = N_PERM, n_boot: int = N_BOOT,
              rng_seed: int = 0) -> list[Verdict]:
    """Two-stage schedule's final test accuracy ≥ the 3-step schedule's − tol, per stage-1 T.

    One verdict `regimes.two_stage[T=<T>]` per T of the ablation (only
    `stage1_epochs` when given), all under the one plan; Holm over the Ts is
    `finalize`'s (family `regimes.two_stage`). The baseline is the 3-step
    schedule at its best η of the sweep (`three_step_baseline`). Trials that
    share a seed share their initialisation, so the design is paired: per
    seed d = acc(two-stage) − acc(3-step), permutation within seeds.
    Non-inferiority: supported when mean d is significantly above −tol,
    refuted when significantly below it. Diverged trials are excluded and
    counted (a seed missing from either arm drops out of that comparison).
    """
    name = "regimes.two_stage"
    plan = own_plans(PLANS, name, plans)[name]
    tol = float(plan.options["tol"])
    status = table.runs["status"].astype(str)
    counts = {"excluded_diverged": int((status == "diverged").sum()),
              "excluded_other": int(((status != "diverged") & (status != "finished")).sum()),
              "tol": tol}
    runs, acc, base, chosen, by_t = _schedule_arms(table)
    if KIND not in runs.columns:
        return [verdict_of(plan, None, n=0, reason=f"no column {KIND}", **counts)]
    if stage1_epochs is not None:
        by_t = {t: g for t, g in by_t.items() if t == float(stage1_epochs)}
    n_two = int(sum(len(g) for g in by_t.values()))
    if not by_t or base.empty:
        return [verdict_of(plan, None, n=n_two + len(base), reason="need two-stage and 3-step trials",
                      **counts, n_two_stage=n_two, n_three_step=int(len(base)))]
    b_acc = acc.reindex(base.index)
    means = {t: float(acc.reindex(g.index).mean()) for t, g in by_t.items()}
    out = []
    for t, g in sorted(by_t.items()):
        a, b, seeds = paired_by_seed(acc.reindex(g.index), g["seed"], b_acc, base["seed"])
        res = compare_groups(a, b, blocks_a=seeds, blocks_b=seeds, n_perm=n_perm, n_boot=n_boot,
                             rng_seed=rng_seed, alpha=plan.alpha, shift=tol,
                             alternative="two-sided")
        d = (a - b).to_numpy(float)
        sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
        out.append(verdict_of(plan, res, name=f"{name}[T={t:g}]", **counts, **chosen,
                         stage1_epochs=t, n_T_tried=len(by_t), mean_acc_by_T=means,
                         mean_acc_three_step=float(b_acc.mean()), n_seeds=len(seeds),
                         sd_paired_diff=sd,
                         seeds_needed=seeds_for_margin(sd, tol, len(by_t), plan.alpha)))
    return out


def tab_two_stage_power(table: SweepTable) -> pd.DataFrame | None:
    """Per stage-1 T: paired difference two-stage − 3-step over seeds (mean, sd) and the
    seeds the non-inferiority margin needs at 80 % power with Holm over the Ts
    (`seeds_for_margin`); the 3-step grid's rows give each η's mean and which is the baseline."""
    tol = float(PLANS["regimes.two_stage"].options["tol"])
    runs, acc, base, chosen, by_t = _schedule_arms(table)
    if base.empty and not by_t:
        return None
    rows = [{"arm": "3-step", "lr": float(k), "T": math.nan, "n_seeds": math.nan,
             "mean_acc": v, "baseline": chosen["three_step_lr"] == float(k)}
            for k, v in chosen.get("three_step_grid", {}).items()]
    b_acc = acc.reindex(base.index)
    for t, g in sorted(by_t.items()):
        a, b, seeds = paired_by_seed(acc.reindex(g.index), g["seed"], b_acc, base["seed"])
        d = (a - b).to_numpy(float)
        sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
        rows.append({"arm": "two-stage", "lr": float(param(g, LR).iloc[0]) if LR in g else math.nan,
                     "T": t, "n_seeds": len(seeds), "mean_acc": float(a.mean()),
                     "baseline": False, "mean_diff": float(d.mean()) if len(d) else math.nan,
                     "sd_diff": sd, "tol": tol,
                     "seeds_needed": seeds_for_margin(sd, tol, len(by_t))})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ figures
def fig_loss_trajectories(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Paper Fig. 1: train loss over steps, one panel per μ, one line per η
    (dashed, ending with ×: diverged; dotted: non-training)."""
    runs = table.runs
    if not table.has("train/loss") or LR not in runs:
        return None
    runs = runs.dropna(subset=[LR])
    moms = sorted(runs[MOM].dropna().unique()) if MOM in runs else [None]
    color, sm = lr_colors(runs[LR])
    regime = classify_regimes(table)
    fig = Figure(figsize=(3.2 * len(moms) + 1, 3.2), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(moms), sharey=True))
    for ax, mu in zip(axes, moms):
        sub = runs if mu is None else runs[runs[MOM] == mu]
        for _, r in sub.iterrows():
            s = table.series(r["run_id"], "train/loss").sort_index()
            s = s[np.isfinite(s.to_numpy(float))]
            if s.empty:
                continue
            div = str(r["status"]) == "diverged"
            style = "--" if div else ":" if regime.get(r["run_id"]) == "non-training" else "-"
            ax.plot(s.index, s.to_numpy(), style, color=color(r[LR]), lw=1, alpha=0.8)
            if div:
                ax.plot(s.index[-1], s.iloc[-1], "x", color=color(r[LR]))
        ax.set(yscale="log", xlabel="step", title="all" if mu is None else f"μ={mu:g}")
    axes[0].set_ylabel("train loss")
    fig.colorbar(sm, ax=list(axes), label="η")
    return fig


def fig_accuracy_heatmap(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Paper Fig. 2: mean final test accuracy over η × μ (finished trials);
    cells with a diverged trial are marked ×, cells with a non-training trial
    (neither diverged nor trained: `classify_regimes`) ○."""
    runs = table.runs
    if LR not in runs or MOM not in runs or not table.has("val/acc"):
        return None
    acc = table.final("final/val_acc", fallback="val/acc")
    df = runs.assign(acc=runs["run_id"].map(acc),
                     regime=runs["run_id"].map(classify_regimes(table))).dropna(subset=[LR, MOM])
    fin = df[df["status"].astype(str) == "finished"]
    grid = fin.pivot_table(index=MOM, columns=LR, values="acc", aggfunc="mean")
    lrs, moms = sorted(df[LR].unique()), sorted(df[MOM].unique())
    grid = grid.reindex(index=moms, columns=lrs)
    fig = Figure(figsize=(1 + 0.7 * len(lrs) + 1.5, 1 + 0.6 * len(moms)), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(grid.to_numpy(float), origin="lower", aspect="auto", cmap="magma")
    div = set(df[df["status"].astype(str) == "diverged"].groupby([MOM, LR]).size().index)
    stuck = set(df[df["regime"] == "non-training"].groupby([MOM, LR]).size().index)
    for cells, mark, shift in ((div, "×", -0.2), (stuck, "○", 0.2)):
        for mu, lr in sorted(cells):
            dx = shift if (mu, lr) in div & stuck else 0.0   # both in one cell: side by side
            ax.text(lrs.index(lr) + dx, moms.index(mu), mark, ha="center", va="center", color="cyan")
    ax.set_xticks(range(len(lrs)), [f"{v:g}" for v in lrs], rotation=45, fontsize=7)
    ax.set_yticks(range(len(moms)), [f"{v:g}" for v in moms], fontsize=7)
    ax.set(xlabel="η", ylabel="μ", title="final test accuracy (× diverged, ○ non-training)")
    fig.colorbar(im, ax=ax)
    return fig


def fig_schedules(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Paper Fig. 3: test accuracy over steps for the 3-step baseline (its best
    η of the sweep) and each two-stage T (mean over seeds); final accuracy
    against T (the transition ablation) with the 3-step mean ± sd as a band."""
    if KIND not in table.runs or not table.has("val/acc") or table.finished().empty:
        return None
    runs, acc, base, chosen, by_t = _schedule_arms(table)
    if base.empty and not by_t:
        return None
    lr = chosen["three_step_lr"]
    label = "3-step" + (f" η={lr:g}" if lr is not None else "")
    fig = Figure(figsize=(9, 3.4), dpi=DPI, layout="constrained")
    ax_c, ax_t = fig.subplots(1, 2)
    if len(base):
        c = table.mean_curve(base["run_id"], "val/acc")
        ax_c.plot(c.index, c.to_numpy(), "k-", lw=1.5, label=label)
    for i, (t, g) in enumerate(sorted(by_t.items())):
        c = table.mean_curve(g["run_id"], "val/acc")
        ax_c.plot(c.index, c.to_numpy(), color=f"C{i}", lw=1, label=f"two-stage T={t:g}")
    ax_c.set(xlabel="step", ylabel="test accuracy", title="schedules")
    ax_c.legend(fontsize=6)
    if by_t:
        ts = sorted(by_t)
        means = [acc.reindex(by_t[t].index).mean() for t in ts]
        sds = [acc.reindex(by_t[t].index).std() for t in ts]
        ax_t.errorbar(ts, means, yerr=np.nan_to_num(sds), fmt="o-", ms=4, label="two-stage")
    if len(base):
        b = acc.reindex(base.index)
        ax_t.axhline(b.mean(), color="k", lw=1, label=label)
        ax_t.axhspan(b.mean() - np.nan_to_num(b.std()), b.mean() + np.nan_to_num(b.std()),
                     color="k", alpha=0.1)
    ax_t.set(xlabel="T (stage-1 epochs)", ylabel="final test accuracy", title="transition ablation")
    ax_t.legend(fontsize=6)
    return fig


# --------------------------------------------------------------- registry
EXPERIMENT = register(Experiment(
    name="regimes",
    title="Two regimes of training (Leclerc & Madry 2020)",
    conjectures={"regimes.momentum": momentum,
                 "regimes.large_step_generalizes": large_step_generalizes,
                 "regimes.two_stage": two_stage},
    figures={"regimes_fig1_loss.png": fig_loss_trajectories,
             "regimes_fig2_heatmap.png": fig_accuracy_heatmap,
             "regimes_fig3_schedules.png": fig_schedules},
    tables={"regimes_two_stage_power.csv": tab_two_stage_power},
    specs=("two_regimes.yaml", "two_stage_pilot.yaml", "two_stage.yaml"),
    plans=PLANS,
))
