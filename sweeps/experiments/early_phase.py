"""The early phase of neural network training (Frankle, Schwab & Morcos, ICLR 2020).

Iterative magnitude pruning finds sparse subnetworks that train to the dense
accuracy when their surviving weights are rewound to their values at an
early iteration k, but (for deep networks at larger learning rates) not when
rewound to the initialisation (k = 0). The state at k is not just any
draw: randomising the magnitudes or the signs of the survivors, shuffling
them within a layer or across the network, or re-initialising them loses
accuracy at high sparsity. Over the same early iterations the network moves
far from its initialisation, its gradient norm falls and many weights flip
their sign.

Protocol: one trial is one IMP chain (`dynamics_core.imp`): the dense level
0, then `pruning.levels` levels of global magnitude pruning (`pruning.rate`
of the survivors each, 20 % in the paper), each rewound to step
k = `pruning.rewind_step` and retrained. A trial with
`pruning.ablation` trains each pruning level twice, unablated then ablated at
the rewind point with the same mask, so it carries its own paired control.
Arms are told apart by config: `optim.lr` (the η arm), `pruning.rewind_step`
(k) and `pruning.ablation`. A trial's rows (`level_frame`): per loop level,
the sparsity, the IMP level (times pruned), whether ablated, and the final
test accuracy `level/<l>/final/val_acc`.

Statistic ("high-sparsity accuracy"): per trial and condition, the mean test
accuracy over the IMP levels whose sparsity is at least `high` (default
0.75, where k = 0 starts to fall away in the paper: IMP levels ≥ 7 at rate
0.2, ≥ 3 at rate 0.4), i.e. the area under the accuracy–sparsity
curve over that range divided by its number of levels. It is read at fixed
levels that every arm shares, so it needs no threshold on the dense accuracy.

Conjectures (registered plans `PLANS`, one family per conjecture; one
verdict per η arm (and k), named `<conjecture>[lr=…,k=…]`, Holm over the
family). Paired permutation tests over n seeds have 2^n sign arrangements,
so the smallest two-sided p is 2/2^n: 7 seeds are needed for p < 0.05 after
Holm over two η arms, 6 for one.
- `rewind_beats_init`: per η arm, high-sparsity accuracy of the chain
  rewound to the arm's largest k minus that of the k = 0 chain of the same
  seed, > 0 (difference of means, permutation within seed blocks; option
  `k` picks another k, the means of every k are in details).
- `signs_and_magnitudes_needed`: at each (η, k) with ablation trials, each
  of `random_magnitudes_kept_signs` and `kept_magnitudes_random_signs` ends
  below the unablated rewind of the same trial at high sparsity: two paired
  differences (ablated − unablated, blocks = seed), both predicted negative,
  joined by an intersection-union test.
- `shuffling_fails`: the same for `shuffle_layer` and `shuffle_network`.
`reinit` trials are drawn and tabled, not judged.
Manipulation checks (all three plans): `dense_learns` (mean dense accuracy
of the trials judged ≥ `min_dense_acc`, 0.5; chance is 0.1) and
`high_sparsity_reached` (every trial judged has at least one level at
sparsity ≥ `high`).

What the paper reports (ResNet-20, CIFAR-10): rewinding becomes effective
at about 500–2000 iterations (2–10 epochs), keeping the dense accuracy at
sparsities where k = 0 no longer does; at high sparsity both signs and
magnitudes matter, and shuffled weights fail.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from sweeps.conjectures.plan import FROM_PLAN, AnalysisPlan, Check
from sweeps.conjectures.verdict import (N_BOOT, N_PERM, compare_groups, inconclusive,
                                        intersection_union, Verdict, verdict_of)
from sweeps.experiments.registry import Experiment, Plans, Sources, conjecture, register
from sweeps.table import SweepTable, param
from sweeps.plotting import DPI

LR, K, ABLATION = "optim.lr", "pruning.rewind_step", "pruning.ablation"
HIGH = 0.75                # "high sparsity": at least this fraction pruned
MIN_DENSE_ACC = 0.5        # the dense level must have learned (chance 0.1)
# what every plan here carries: the plans decide, these only define them
_RULE = {"high": HIGH, "min_dense_acc": MIN_DENSE_ACC}
SIGNS = ("random_magnitudes_kept_signs", "kept_magnitudes_random_signs")
SHUFFLES = ("shuffle_layer", "shuffle_network")
ABLATIONS_RUN = ("none", *SIGNS, *SHUFFLES, "reinit")   # what the specs run (reinit: figure only)
TIMELINE = ("timeline/dist_init", "timeline/grad_norm", "timeline/sign_flips", "probe/acc")
LEVEL_KEYS = ("imp/sparsity", "imp/level", "imp/ablated", "final/val_acc")   # level/<l>/<key>

CHECKS = (Check("dense_learns", f"the dense level 0 reaches a mean test accuracy of at least "
                                f"{MIN_DENSE_ACC:g} (chance 0.1) in the trials judged"),
          Check("high_sparsity_reached", f"every trial judged has a level at sparsity ≥ {HIGH:g}"))
PLANS = {
    "early_phase.rewind_beats_init": AnalysisPlan(
        conjecture="early_phase.rewind_beats_init",
        statement="rewinding the surviving weights to iteration k > 0 keeps more test accuracy "
                  "at high sparsity than rewinding them to the initialisation (k = 0)",
        metric="level/final/val_acc", statistic="difference_of_means", predicted_sign=+1,
        family="early_phase.rewind_beats_init", min_n=10, min_per_stratum=5,
        effect_of_interest=0.02, checks=CHECKS,
        options={"unit": "trial", "pairing": "seed", **_RULE,
                 "k": None, "k_rule": "k: the rewind step judged; null: the arm's largest k > 0",
                 "summary": "mean test accuracy over IMP levels with sparsity >= high",
                 "groups": {"a": "k > 0", "b": "k = 0, same seed and lr"}}),
    "early_phase.signs_and_magnitudes_needed": AnalysisPlan(
        conjecture="early_phase.signs_and_magnitudes_needed",
        statement="randomising either the magnitudes (signs kept) or the signs (magnitudes "
                  "kept) of the weights at the rewind point loses test accuracy at high sparsity",
        metric="level/final/val_acc", statistic="intersection_union", predicted_sign=+1,
        family="early_phase.signs_and_magnitudes_needed", min_n=10, min_per_stratum=5,
        effect_of_interest=0.02, checks=CHECKS,
        options={"unit": "trial", "pairing": "seed (ablated and unablated levels of one trial)",
                 **_RULE, "parts": list(SIGNS), "part_sign": -1}),
    "early_phase.shuffling_fails": AnalysisPlan(
        conjecture="early_phase.shuffling_fails",
        statement="shuffling the surviving rewound weights within each layer or across the "
                  "network loses test accuracy at high sparsity",
        metric="level/final/val_acc", statistic="intersection_union", predicted_sign=+1,
        family="early_phase.shuffling_fails", min_n=10, min_per_stratum=5,
        effect_of_interest=0.02, checks=CHECKS,
        options={"unit": "trial", "pairing": "seed (ablated and unablated levels of one trial)",
                 **_RULE, "parts": list(SHUFFLES), "part_sign": -1}),
}


# ------------------------------------------------------------------- rows
def level_frame(table: SweepTable) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per finished trial and loop level: run_id, seed, lr, k, ablation,
    level, imp_level, ablated, condition (the ablation on ablated levels, else
    "none"), sparsity, acc; and the exclusion counts."""
    runs, excluded = table.usable()
    cols = ["run_id", "seed", "lr", "k", "ablation", "level", "imp_level", "ablated",
            "condition", "sparsity", "acc"]
    wide = table.levels(LEVEL_KEYS, runs["run_id"])
    if wide.empty:
        return pd.DataFrame(columns=cols), excluded
    info = pd.DataFrame({"run_id": runs["run_id"], "seed": runs["seed"],
                         "lr": param(runs, LR, np.nan), "k": param(runs, K, 0),
                         "ablation": param(runs, ABLATION, "none").fillna("none").astype(str)})
    df = wide.merge(info, on="run_id")
    df = df.assign(level=df["level"].astype(int), imp_level=df["imp/level"].fillna(0).astype(int),
                   ablated=df["imp/ablated"].fillna(0).astype(bool),
                   sparsity=df["imp/sparsity"].fillna(0.0).astype(float),
                   acc=df["final/val_acc"].astype(float))
    df["condition"] = np.where(df["ablated"], df["ablation"], "none")
    return df[cols].sort_values(["lr", "k", "ablation", "seed", "level"]).reset_index(drop=True), excluded


def high_sparsity_acc(df: pd.DataFrame, high: float = HIGH) -> pd.DataFrame:
    """Per trial and condition: the mean accuracy over levels at sparsity ≥ `high` (`acc`),
    with seed, lr, k, ablation."""
    keep = df[(df["sparsity"] >= high - 1e-9) & np.isfinite(df["acc"])]
    keys = ["run_id", "seed", "lr", "k", "ablation", "condition"]
    return keep.groupby(keys, dropna=False)["acc"].mean().reset_index()


def _checks(df: pd.DataFrame, run_ids: Any, high: float, min_dense_acc: float) -> dict:
    rows = df[df["run_id"].isin(list(run_ids))]
    dense = rows.loc[rows["level"] == 0, "acc"]
    reached = rows.groupby("run_id")["sparsity"].max()
    mean = float(dense.mean()) if len(dense) else float("nan")
    return {"dense_learns": (bool(mean >= min_dense_acc),
                             f"mean dense accuracy {mean:.3f} (need ≥ {min_dense_acc:g})"),
            "high_sparsity_reached": (bool(len(reached) and (reached >= high - 1e-9).all()),
                                      f"lowest final sparsity {reached.min() if len(reached) else float('nan'):.3f} "
                                      f"(need ≥ {high:g})")}


def _arm(lr: float, k: int) -> str:
    return f"lr={lr:g},k={int(k)}"


# ------------------------------------------------------------ conjectures
@conjecture(PLANS)
def rewind_beats_init(table: SweepTable, plans: Plans, *,
                      k: Any = FROM_PLAN, high: Any = FROM_PLAN,
                      min_dense_acc: Any = FROM_PLAN, n_perm: int = N_PERM,
                      n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Per η arm: high-sparsity accuracy at the rewind step `k` (default: the
    arm's largest k) minus that at k = 0, paired by seed. Every k's mean is in
    details (`mean_by_k`). `k`, `high`, `min_dense_acc` are the plan's options
    (given here, they change the plan: exploratory)."""
    (plan,) = plans.values()
    plan = plan.with_options(k=k, high=high, min_dense_acc=min_dense_acc)
    k, high = plan.options["k"], float(plan.options["high"])
    min_dense_acc = float(plan.options["min_dense_acc"])
    df, excluded = level_frame(table)
    df = df[df["ablation"] == "none"]
    out = []
    for lr, rows in df.groupby("lr"):
        ks = sorted(int(x) for x in rows["k"].unique() if x > 0)
        chosen = k if k is not None else (ks[-1] if ks else None)
        if chosen is None or not (rows["k"] == 0).any():
            continue
        rows = rows[rows["k"].isin([0, chosen])]
        per = high_sparsity_acc(rows, high)
        a, base = per[per["k"] == chosen], per[per["k"] == 0]
        res = compare_groups(a["acc"], base["acc"], blocks_a=a["seed"], blocks_b=base["seed"],
                             n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=plan.alpha)
        means = high_sparsity_acc(df[df["lr"] == lr], high).groupby("k")["acc"].mean()
        out.append(verdict_of(plan, res, checks=_checks(df, rows["run_id"].unique(), high, min_dense_acc),
                              name=f"{plan.conjecture}[{_arm(lr, chosen)}]", lr=float(lr), k=chosen,
                              high=high, mean_by_k={int(i): float(v) for i, v in means.items()},
                              **excluded))
    if not out:
        return [inconclusive(plan.conjecture, plan.statement, "no η arm with finished trials at "
                             "k = 0 and at some k > 0", **excluded)]
    return out


def _ablations_needed(table: SweepTable, plans: Plans, high: Any, min_dense_acc: Any,
                      n_perm: int, n_boot: int, rng_seed: int) -> list[Verdict]:
    """One intersection-union verdict per (η, k) with ablation trials: every part's
    ablated levels end below the same trials' unablated levels (paired by seed).
    The parts, their predicted sign, `high` and `min_dense_acc` are the plan's."""
    (plan,) = plans.values()
    plan = plan.with_options(high=high, min_dense_acc=min_dense_acc)
    parts = tuple(plan.options["parts"])
    high, min_dense_acc = float(plan.options["high"]), float(plan.options["min_dense_acc"])
    df, excluded = level_frame(table)
    df = df[df["ablation"].isin(parts)]
    out = []
    for (lr, k), rows in df.groupby(["lr", "k"]):
        per = high_sparsity_acc(rows, high)
        results = []
        for part in parts:
            a = per[(per["ablation"] == part) & (per["condition"] == part)]
            b = per[(per["ablation"] == part) & (per["condition"] == "none")]
            results.append(compare_groups(a["acc"], b["acc"], blocks_a=a["seed"], blocks_b=b["seed"],
                                          n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed,
                                          alpha=plan.alpha))
        res = intersection_union(results, [int(plan.options["part_sign"])] * len(parts))
        out.append(verdict_of(plan, res, checks=_checks(df, rows["run_id"].unique(), high, min_dense_acc),
                              name=f"{plan.conjecture}[{_arm(lr, k)}]", lr=float(lr), k=int(k),
                              high=high, ablations=list(parts), **excluded))
    if not out:
        return [inconclusive(plan.conjecture, plan.statement,
                             f"no finished trials with pruning.ablation in {list(parts)}",
                             **excluded)]
    return out


@conjecture(PLANS)
def signs_and_magnitudes_needed(table: SweepTable, plans: Plans, *,
                                high: Any = FROM_PLAN, min_dense_acc: Any = FROM_PLAN,
                                n_perm: int = N_PERM, n_boot: int = N_BOOT,
                                rng_seed: int = 0) -> list[Verdict]:
    """Random magnitudes (signs kept) and random signs (magnitudes kept) each lose accuracy."""
    return _ablations_needed(table, plans, high, min_dense_acc, n_perm, n_boot, rng_seed)


@conjecture(PLANS)
def shuffling_fails(table: SweepTable, plans: Plans, *,
                    high: Any = FROM_PLAN, min_dense_acc: Any = FROM_PLAN,
                    n_perm: int = N_PERM, n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Shuffling the rewound survivors within a layer or across the network loses accuracy."""
    return _ablations_needed(table, plans, high, min_dense_acc, n_perm, n_boot, rng_seed)


# ------------------------------------------------------------------ tables
def level_table(table: SweepTable) -> pd.DataFrame | None:
    """Per trial and level: η, k, ablation, IMP level, ablated, sparsity, final test accuracy."""
    df, _ = level_frame(table)
    return None if df.empty else df


# ------------------------------------------------------------------ figures
def _curve(ax, rows: pd.DataFrame, label: str, **kw) -> None:
    g = rows.groupby("imp_level").agg(s=("sparsity", "mean"), m=("acc", "mean"), sd=("acc", "std"))
    ax.errorbar(100 * (1 - g["s"]), g["m"], yerr=g["sd"].fillna(0.0), capsize=2, ms=3,
                label=label, **kw)


def _remaining_axis(ax, title: str) -> None:
    """Percent of weights remaining, log scale, decreasing to the right, plain tick labels."""
    ax.set(xscale="log", xlabel="% weights remaining", ylabel="test accuracy", title=title)
    ticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1)
             if min(ax.get_xlim()) <= t <= max(ax.get_xlim())]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.invert_xaxis()
    ax.legend(fontsize=6)


def fig_sparsity(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Paper Fig. 13 analog: test accuracy against the percent of weights remaining
    (log scale), one line per rewind step k, one panel per η; dense accuracy dotted."""
    df, _ = level_frame(table)
    df = df[(df["ablation"] == "none")]
    if df.empty:
        return None
    lrs = sorted(df["lr"].unique())
    fig = Figure(figsize=(4.5 * len(lrs), 3.6), dpi=DPI, layout="constrained")
    for ax, lr in zip(np.atleast_1d(fig.subplots(1, len(lrs))), lrs):
        arm = df[df["lr"] == lr]
        for i, (k, rows) in enumerate(arm.groupby("k")):
            _curve(ax, rows, f"k = {int(k)}", fmt="o-", color=f"C{i}")
        ax.axhline(arm.loc[arm["level"] == 0, "acc"].mean(), color="k", ls=":", lw=0.8)
        _remaining_axis(ax, f"IMP with rewinding to k, η = {lr:g}")
    return fig


def fig_ablations(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Test accuracy against the percent of weights remaining for each ablation at
    the rewind point, beside the unablated rewind of the same trials, per (η, k)."""
    df, _ = level_frame(table)
    df = df[df["ablation"] != "none"]
    if df.empty:
        return None
    arms = sorted({(lr, k) for lr, k in zip(df["lr"], df["k"])})
    fig = Figure(figsize=(4.5 * len(arms), 3.6), dpi=DPI, layout="constrained")
    for ax, (lr, k) in zip(np.atleast_1d(fig.subplots(1, len(arms))), arms):
        arm = df[(df["lr"] == lr) & (df["k"] == k)]
        _curve(ax, arm[(arm["condition"] == "none") & (arm["level"] > 0)], "unablated rewind",
               fmt="o-", color="k")
        for i, (name, rows) in enumerate(arm[arm["ablated"]].groupby("condition")):
            _curve(ax, rows, name, fmt="s--", color=f"C{i}")
        _remaining_axis(ax, f"ablations at the rewind point, η = {lr:g}, k = {int(k)}")
    return fig


def fig_timeline(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """The dense run (level 0) against the log step: distance from the initialisation,
    gradient norm, fraction of signs flipped since init, probe accuracy; mean per η."""
    if not table.has(TIMELINE[0]):
        return None
    runs, _ = table.usable()
    end = table.metric("level/0/final/val_acc").groupby("run_id")["step"].last()
    lrs = param(runs, LR, np.nan)
    fig = Figure(figsize=(12, 3.2), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(TIMELINE))
    for i, lr in enumerate(sorted(lrs.dropna().unique())):
        ids = runs.loc[lrs == lr, "run_id"]
        for ax, key in zip(axes, TIMELINE):
            c = table.mean_curve(ids, key)
            last = end.reindex(ids).min() if len(end) else np.inf
            c = c[(c.index <= last) & (c.index > 0)] if np.isfinite(last) else c[c.index > 0]
            ax.plot(c.index, c.to_numpy(), "o-", ms=3, color=f"C{i}", label=f"η = {lr:g}")
    for ax, key in zip(axes, TIMELINE):
        ax.set(xscale="log", xlabel="step (dense run)", title=key)
    axes[0].legend(fontsize=6)
    return fig


# --------------------------------------------------------------- registry
EXPERIMENT = register(Experiment(
    name="early_phase",
    title="The early phase of neural network training (Frankle, Schwab & Morcos 2020)",
    conjectures=[rewind_beats_init, signs_and_magnitudes_needed, shuffling_fails],
    figures={"early_phase_fig13_sparsity.png": fig_sparsity,
             "early_phase_ablations.png": fig_ablations,
             "early_phase_timeline.png": fig_timeline},
    tables={"early_phase_levels.csv": level_table},
    specs=("early_phase.yaml", "early_phase-cluster.yaml"),
))
