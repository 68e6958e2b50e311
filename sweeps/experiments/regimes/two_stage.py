"""The two-stage schedule against a tuned 3-step schedule (Leclerc & Madry 2020, §5):
the baseline, the paired non-inferiority test, the seeds a margin needs, the
power table (see `plans.py` for the plan)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from sweeps.conjectures.stats import ALPHA, POWER
from sweeps.conjectures.verdict import N_BOOT, N_PERM, Verdict, compare_groups, verdict_of
from sweeps.experiments.registry import Plans, conjecture
from sweeps.experiments.regimes.plans import KIND, LR, MILESTONES, PLANS, STAGE1
from sweeps.table import SweepTable, as_tuple, param


def _final_val_acc(table: SweepTable) -> pd.Series:
    return table.final("final/val_acc", fallback="val/acc")


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
