"""Large initial learning rate (Li, Wei & Ma 2019).

Arms, told apart by their config (`lr_arm`):
- `large-anneal`: step schedule with a single milestone (e.g. ×0.04 at
  half-training), no pre-activation noise (a 3-step schedule is `other`);
- `small`: constant schedule, no noise;
- `small+noise`: `model.preact_noise` > 0 (switched off at
  `optim.schedule.noise_off_epoch`);
- `other`: anything else (ignored).

Conjecture `large_lr.anneal_crossover`: the small LR is better before
annealing (test accuracy after the last epoch before the large arm's LR drop
is higher for `small`) and worse after (final test accuracy lower). One
intersection–union test of the two differences (small − large, before: +,
after: −): supported when both are significant with the predicted sign,
refuted by a significant reversal of either; statistic = effect = the
smaller signed difference, the parts with their CIs in details.

Manipulation checks (the mechanism the paper explains the crossover by; a
sweep without it did not test the claim): `small_fits_as_fast`, the small
arm's mean train loss at the annealing epoch is at most the large arm's;
`small_learns_patch`, its patch-only accuracy (`patch/acc`) is higher there.
Either failing gives `invalid_protocol` with the numbers.

Plan (`PLANS`): family `large_lr`, alpha 0.05, at least 5 trials per arm (the
spec's 5 seeds: 3 against 3 cannot reach p < 0.05 in a permutation test),
10 in all; effect of interest 0.02 (two accuracy points).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweeps.conjectures.plan import AnalysisPlan, Check
from sweeps.conjectures.verdict import (N_BOOT, N_PERM, Verdict, compare_groups, final_value,
                                        intersection_union, judge, per_epoch)
from sweeps.experiments import Experiment, Sources, own_plans, register
from sweeps.experiments.regimes import _as_tuple
from sweeps.report import DPI, finished_runs, has_metrics, mean_curve

KIND, MILESTONES = "optim.schedule.kind", "optim.schedule.milestones"
NOISE, EPOCHS, LR = "model.preact_noise", "train.epochs", "optim.lr"
ARMS = ("large-anneal", "small", "small+noise")


def lr_arm(row: pd.Series) -> str:
    """Which arm of the large-LR experiment a run belongs to."""
    noise = pd.to_numeric(pd.Series([row.get(NOISE, 0.0)]), errors="coerce").fillna(0.0).iloc[0]
    kind = str(row.get(KIND, "constant"))
    if noise > 0:
        return "small+noise"
    if kind == "step" and len(_as_tuple(row.get(MILESTONES, (0.5, 0.75)))) == 1:
        return "large-anneal"
    if kind == "constant":
        return "small"
    return "other"


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


NAME = "large_lr.anneal_crossover"
PLANS = {NAME: AnalysisPlan(
    conjecture=NAME,
    statement="small LR reaches higher test accuracy before annealing and lower after",
    metric="val/acc", statistic="intersection_union", predicted_sign=+1,
    exclusions=("unfinished",), family="large_lr", alpha=0.05, min_n=10, min_per_stratum=5,
    effect_of_interest=0.02,
    checks=(Check("small_fits_as_fast", "at the annealing epoch the small arm's mean train/loss "
                  "is at most the large arm's"),
            Check("small_learns_patch", "at the annealing epoch the small arm's mean patch/acc "
                  "is higher than the large arm's")))}


def _at_anneal(table: Any, runs: pd.DataFrame, key: str, epoch: int) -> pd.Series:
    """`key` of every run at the end of `epoch` (NaN where not logged)."""
    out = {}
    for rid, r in runs.iterrows():
        epochs = int(r[EPOCHS]) if EPOCHS in r and pd.notna(r[EPOCHS]) else None
        out[rid] = value_at_epoch(per_epoch(table, rid, key), epoch, epochs)
    return pd.Series(out, dtype=float)


def _checks(train_loss: tuple[float, float], patch: tuple[float, float]) -> dict[str, tuple]:
    """Manipulation-check outcomes from (small, large) means at the annealing epoch."""
    (ls, ll), (ps, pl) = train_loss, patch
    fits = (bool(np.isfinite(ls) and np.isfinite(ll) and ls <= ll),
            f"train/loss small {ls:.4g} vs large {ll:.4g}" if np.isfinite(ls + ll)
            else "train/loss not logged in both arms")
    learns = (bool(np.isfinite(ps) and np.isfinite(pl) and ps > pl),
              f"patch/acc small {ps:.4g} vs large {pl:.4g}" if np.isfinite(ps + pl)
              else "patch/acc not logged in both arms")
    return {"small_fits_as_fast": fits, "small_learns_patch": learns}


def anneal_crossover(table: Any, plans: Mapping[str, AnalysisPlan] | None = None, *,
                     epoch: int | None = None, n_perm: int = N_PERM, n_boot: int = N_BOOT,
                     rng_seed: int = 0) -> list[Verdict]:
    """Small LR is better than large-then-anneal before annealing and worse after."""
    plan = own_plans(PLANS, NAME, plans)[NAME]
    runs = table.runs.set_index("run_id", drop=False)
    status = runs["status"].astype(str)
    counts = {"excluded_diverged": int((status == "diverged").sum()),
              "excluded_other": int(((status != "diverged") & (status != "finished")).sum())}
    runs = runs[status == "finished"]
    arm = runs.apply(lr_arm, axis=1) if len(runs) else pd.Series(dtype=object)
    counts.update({f"n_{a}": int((arm == a).sum()) for a in ARMS})
    e_a = epoch if epoch is not None else anneal_epoch(runs)
    if e_a is None:
        why = "no large-anneal arm to date the annealing"
        return [judge(plan, None, checks={c.name: (False, why) for c in plan.checks}, n=0,
                      reason=why, **counts)]
    pick = lambda s, a: s.reindex(arm.index[arm == a])  # noqa: E731
    means = lambda s: (float(pick(s, "small").mean()), float(pick(s, "large-anneal").mean()))  # noqa: E731
    before = _at_anneal(table, runs, plan.metric, e_a)
    after = final_value(table, "final/val_acc", fallback="val/acc")
    checks = _checks(means(_at_anneal(table, runs, "train/loss", e_a)),
                     means(_at_anneal(table, runs, "patch/acc", e_a)))
    kw = dict(n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=plan.alpha)
    pre = compare_groups(pick(before, "small"), pick(before, "large-anneal"), **kw)
    post = compare_groups(pick(after, "small"), pick(after, "large-anneal"), **kw)
    noise_post = compare_groups(pick(after, "small+noise"), pick(after, "large-anneal"), **kw)
    res = intersection_union([pre, post], [+1, -1])
    return [judge(plan, res, checks=checks, **counts, anneal_epoch=e_a,
                  before_minus=pre.statistic, after_minus=post.statistic,
                  noise_after={"diff_noise_minus_large": noise_post.statistic,
                               "p_value": noise_post.p_value})]


# ------------------------------------------------------------------ figures
def fig_large_lr(table: Any, sources: Sources | None = None) -> Figure | None:
    """Li/Wei/Ma: test accuracy (and patch-only accuracy, when logged) over steps
    per arm, mean over seeds; dotted line at the large arm's annealing."""
    runs = finished_runs(table)
    if runs.empty or not has_metrics(table, "val/acc"):
        return None
    arms = runs.apply(lr_arm, axis=1)
    if not (arms == "large-anneal").any():
        return None
    keys = ["val/acc"] + (["patch/acc"] if has_metrics(table, "patch/acc") else [])
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
    for ax, key in zip(axes, keys):
        for i, arm in enumerate(("large-anneal", "small", "small+noise")):
            ids = runs["run_id"][arms == arm]
            if len(ids):
                c = mean_curve(table, ids, key)
                ax.plot(c.index, c.to_numpy(), color=f"C{i}", label=f"{arm} (n={len(ids)})")
        if anneal_step is not None:
            ax.axvline(anneal_step, color="grey", ls=":", lw=1)
        ax.set(xlabel="step", ylabel=key, title={"val/acc": "test accuracy",
                                                 "patch/acc": "patch-only accuracy"}[key])
        ax.legend(fontsize=6)
    return fig


# --------------------------------------------------------------- registry
EXPERIMENT = register(Experiment(
    name="large_lr",
    title="A large initial learning rate (Li, Wei & Ma 2019)",
    conjectures={"large_lr.anneal_crossover": anneal_crossover},
    figures={"large_lr_accuracy.png": fig_large_lr},
    specs=("large_lr.yaml",),
    plans=PLANS,
))
