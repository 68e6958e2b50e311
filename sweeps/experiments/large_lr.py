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
is higher for `small`) and worse after (final test accuracy lower). Supported
when both differences are significant with the predicted sign; refuted when
either is significant with the opposite sign. statistic = before-annealing
difference (small − large), effect/CI = final difference (small − large),
p = the larger of the two p-values (intersection–union test).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweeps.conjectures.verdict import (ALPHA, N_BOOT, N_PERM, Verdict, compare_groups,
                                        final_value, inconclusive, per_epoch)
from sweeps.experiments import Experiment, Sources, register
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


def anneal_crossover(table: Any, *, epoch: int | None = None, alpha: float = ALPHA,
                     n_perm: int = N_PERM, n_boot: int = N_BOOT,
                     rng_seed: int = 0) -> list[Verdict]:
    """Small LR is better than large-then-anneal before annealing and worse after."""
    name = "large_lr.anneal_crossover"
    statement = "small LR reaches higher test accuracy before annealing and lower after"
    runs = table.runs.set_index("run_id", drop=False)
    status = runs["status"].astype(str)
    counts = {"excluded_diverged": int((status == "diverged").sum()),
              "excluded_other": int(((status != "diverged") & (status != "finished")).sum())}
    runs = runs[status == "finished"]
    arm = runs.apply(lr_arm, axis=1) if len(runs) else pd.Series(dtype=object)
    counts.update({f"n_{a}": int((arm == a).sum()) for a in ARMS})
    e_a = epoch if epoch is not None else anneal_epoch(runs)
    if e_a is None:
        return [inconclusive(name, statement, "no large-anneal arm to date the annealing", **counts)]
    before, after = {}, final_value(table, "final/val_acc", fallback="val/acc")
    for rid, r in runs.iterrows():
        epochs = int(r[EPOCHS]) if EPOCHS in r and pd.notna(r[EPOCHS]) else None
        before[rid] = value_at_epoch(per_epoch(table, rid, "val/acc"), e_a, epochs)
    before = pd.Series(before, dtype=float)
    pick = lambda s, a: s.reindex(arm.index[arm == a])  # noqa: E731
    kw = dict(n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=alpha)
    pre = compare_groups(pick(before, "small"), pick(before, "large-anneal"), **kw)
    post = compare_groups(pick(after, "small"), pick(after, "large-anneal"), **kw)
    noise_post = compare_groups(pick(after, "small+noise"), pick(after, "large-anneal"), **kw)
    details = {**counts, "anneal_epoch": e_a,
               "before": {"diff_small_minus_large": pre.statistic, "ci": [pre.ci_low, pre.ci_high],
                          "p_value": pre.p_value, **pre.details},
               "after": {"diff_small_minus_large": post.statistic, "ci": [post.ci_low, post.ci_high],
                         "p_value": post.p_value, **post.details},
               "noise_after": {"diff_noise_minus_large": noise_post.statistic,
                               "p_value": noise_post.p_value}}
    if not (np.isfinite(pre.p_value) and np.isfinite(post.p_value)):
        return [inconclusive(name, statement, "need >= 2 finished trials in both the small and "
                             "the large-anneal arm", pre.n, **details)]

    def sig(t, sign):
        return t.p_value < alpha and np.sign(t.statistic) == sign

    if sig(pre, -1) or sig(post, +1):
        kind = "refuted"
    elif sig(pre, +1) and sig(post, -1):
        kind = "supported"
    else:
        kind = "inconclusive"
    return [Verdict(name, statement, kind, pre.statistic, post.effect, post.ci_low, post.ci_high,
                    max(pre.p_value, post.p_value), post.n, details)]


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
))
