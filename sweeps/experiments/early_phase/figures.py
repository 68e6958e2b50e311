"""Figures of the early-phase experiment, beside the paper's (Frankle, Schwab &
Morcos 2020): v1 `fig_sparsity` (Fig. 13: accuracy against weights remaining
per k), `fig_ablations`, `fig_timeline` (dense run); v2 `fig_match` (the
paper's Fig. 1/13 read per IMP level: accuracy − dense against k with the
margin, k = 0 to k_max) and `fig_timeline_k_star` (the paper's Fig. 4-5
timeline with the early window and k* marked)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from sweeps.experiments.early_phase.analysis import (dense_gap, dense_timeline, k_star,
                                                     level_frame, level_gaps)
from sweeps.experiments.early_phase.plans import LR, PLANS, TIMELINE
from sweeps.experiments.registry import Sources
from sweeps.plotting import DPI
from sweeps.table import SweepTable, param

PAPER_K_STAR = (500 / 62_600, 2000 / 62_600)    # Frankle et al.'s k*, as a share of training


# ====================================================================== v1
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




# ====================================================================== v2
def fig_match(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """d = (IMP level − dense) test accuracy of the same trial against the rewind step k,
    one panel per IMP level (sparsity), one line per η: mean and the 90 % t interval over
    seeds (the interval TOST reads), the margin ±m shaded, k* starred (hollow: censored),
    beside the paper's k* (ResNet-20, CIFAR-10: 500–2000 of about 62 600 iterations) as the
    same share of this run's steps. k = 0 at the left end of a symlog axis."""
    plan = PLANS["early_phase.rewound_matches_dense"]
    margin = float(plan.options["margin"])
    df, _ = level_frame(table)
    gaps = level_gaps(df).dropna(subset=["d"])
    if gaps.empty:
        return None
    levels = sorted(gaps["imp_level"].unique())
    ends = table.metric("level/0/final/val_acc").groupby("run_id")["step"].last()
    fig = Figure(figsize=(4.2 * len(levels), 3.6), dpi=DPI, layout="constrained")
    for ax, level in zip(np.atleast_1d(fig.subplots(1, len(levels))), levels):
        at = gaps[gaps["imp_level"] == level]
        ax.axhspan(-margin, margin, color="0.85", label=f"±{margin:g} (margin)")
        steps = int(at["run_id"].map(ends).max()) if len(ends) else 0
        if steps:                     # the paper's k* range, as a fraction of training
            ax.axvspan(PAPER_K_STAR[0] * steps, PAPER_K_STAR[1] * steps, color="C2", alpha=0.12,
                       label="paper's k* (ResNet-20: 500–2000 of ~62 600 it.)")
        ax.axhline(0, color="k", lw=0.8)
        for i, (lr, arm) in enumerate(at.groupby("lr")):
            ks = k_star(arm, margin, plan.alpha, n_perm=2000)
            x = np.array(sorted(ks.by_k))
            m = arm.groupby("k")["d"].mean().reindex(x).to_numpy()
            lo = np.array([ks.by_k[k].ci_low for k in x])
            hi = np.array([ks.by_k[k].ci_high for k in x])
            ax.errorbar(x, m, yerr=[m - lo, hi - m], fmt="o-", capsize=3, color=f"C{i}",
                        label=f"η = {lr:g}: k* = {ks.k}{' (censored)' if ks.censored else ''}")
            ax.plot([ks.k], [m[list(x).index(ks.k)]], "*", ms=12, color=f"C{i}",
                    mfc="none" if ks.censored else f"C{i}")
        ax.set_xscale("symlog", linthresh=1)
        ax.set(xlabel="rewind step k", ylabel="IMP − dense test accuracy",
               title=f"{100 * at['sparsity'].mean():.1f} % sparsity")
        ax.legend(fontsize=6)
    return fig


def fig_timeline_k_star(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """The dense level 0 of the k = 0 chains: distance from init, gradient norm, sign
    flips, probe accuracy against the step (log), mean ± sd over seeds per η; the early
    window [1, early_end] shaded and each η's k* dashed (the paper's Figs. 4-5)."""
    if not table.has(TIMELINE[0]):
        return None
    plan = PLANS["early_phase.sign_flips_before_k_star"]
    end = int(PLANS["early_phase.dist_init_rises"].options["early_end"])
    margin = float(plan.options["margin"])
    df, _ = level_frame(table)
    chains = df[(df["ablation"] == "none") & (df["level"] == 0) & (df["k"] == 0)]
    gaps = dense_gap(df, float(plan.options["focus"])).dropna(subset=["d"])
    if chains.empty:
        return None
    fig = Figure(figsize=(12, 3.2), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(TIMELINE))
    for i, (lr, rows) in enumerate(chains.groupby("lr")):
        for ax, key in zip(axes, TIMELINE):
            curves = dense_timeline(table, rows["run_id"], key)
            if not curves:
                continue
            c = pd.concat(curves, axis=1)
            c = c[c.index > 0]
            mean, sd = c.mean(axis=1), c.std(axis=1).fillna(0.0)
            ax.plot(c.index, mean, "o-", ms=2, color=f"C{i}", label=f"η = {lr:g}")
            ax.fill_between(c.index, mean - sd, mean + sd, color=f"C{i}", alpha=0.2)
            arm = gaps[gaps["lr"] == lr]
            if not arm.empty:
                ks = k_star(arm, margin, plan.alpha, n_perm=2000)
                ax.axvline(max(ks.k, 1), color=f"C{i}", ls="--", lw=0.8)
    for ax, key in zip(axes, TIMELINE):
        ax.axvspan(1, end, color="0.92", zorder=0)
        ax.set(xscale="log", xlabel="step (dense run)", title=key)
    axes[0].legend(fontsize=6)
    return fig
