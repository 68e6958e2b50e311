"""The two-regimes experiment's regime rule, conjectures and power table
(see the package docstring)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from sweeps.conjectures.plan import FROM_PLAN, AnalysisPlan
from sweeps.conjectures.stats import ALPHA, POWER
from sweeps.conjectures.verdict import (N_BOOT, N_PERM, Verdict, compare_groups, trend_test,
                                        verdict_of)
from sweeps.experiments.registry import Plans, conjecture
from sweeps.experiments.regimes.plans import (KIND, LR, MILESTONES, MOM, N_CLASSES, PLANS,
                                              REGIMES, RULE, STAGE1)
from sweeps.table import SweepTable, as_tuple, param




def classify_loss_curve(losses: np.ndarray,
                        min_decrease_frac: float = RULE["min_decrease_frac"],
                        chance_loss: float | None = None,
                        nontrain_frac: float | None = RULE["nontrain_frac"]) -> str:
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


def classify_regimes(table: SweepTable, min_decrease_frac: float = RULE["min_decrease_frac"],
                     nontrain_frac: float | None = RULE["nontrain_frac"],
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
@conjecture(PLANS)
def momentum(table: SweepTable, plans: Plans, *,
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
    for key, plan in plans.items():
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
@conjecture(PLANS)
def large_step_generalizes(table: SweepTable, plans: Plans, *,
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
    (plan,) = plans.values()
    plan = plan.with_options(min_decrease_frac=min_decrease_frac, nontrain_frac=nontrain_frac)
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
def is_three_step(row: pd.Series) -> bool:
    """Step schedule with two milestones (the classic 3-step: ×0.1 at 50% and 75%)."""
    return (str(row.get(KIND, "")) == "step"
            and len(as_tuple(row.get(MILESTONES, (0.5, 0.75)))) == 2)


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
    runs = table.finished().set_index("run_id", drop=False)
    acc = _final_val_acc(table).reindex(runs.index)
    if KIND not in runs.columns:
        return runs, acc, runs.iloc[:0], {"three_step_lr": None}, {}
    base, chosen = three_step_baseline(runs, acc)
    two = runs[runs[KIND].astype(str) == "two_stage"]
    t_col = param(two, STAGE1, 0).astype(float)
    return runs, acc, base, chosen, {float(t): g for t, g in two.groupby(t_col)}


@conjecture(PLANS)
def two_stage(table: SweepTable, plans: Plans, *,
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
    (plan,) = plans.values()
    tol = float(plan.options["tol"])
    counts = {**table.left_out(), "tol": tol}
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
        out.append(verdict_of(plan, res, name=f"{plan.conjecture}[T={t:g}]", **counts, **chosen,
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
