"""The two-regimes experiment's figures: the calibration's loss curves and regime map,
the main sweep's arms (paper Figs. 1-2), the two-stage schedules (paper Fig. 3)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from sweeps.experiments.registry import Sources
import pandas as pd
from matplotlib import colors
from matplotlib.patches import Patch, Rectangle

from sweeps.experiments.regimes.analysis import arm_of
from sweeps.experiments.regimes.plans import KIND, LR, MOM, PLANS, STEP_LARGE, STEP_SMALL
from sweeps.experiments.regimes.regime_map import calibration_table, classify_regimes
from sweeps.experiments.regimes.two_stage import _schedule_arms
from sweeps.plotting import DPI, lr_colors
from sweeps.table import SweepTable, param


def fig_loss_trajectories(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """The calibration's curves: train loss over steps, one panel per μ, one line per η
    (dashed, ending with ×: diverged; dotted: non-training). None for a sweep that is not a
    calibration (the regimes are read from the curves only there)."""
    runs = table.runs
    if not table.has("train/loss") or LR not in runs or calibration_table(table) is None:
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


def fig_regime_map(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """The calibration's regime map: one cell per (effective step e, μ), coloured by its
    label over the seeds, with its mean final train loss; the main sweep's pair (e_S, e_L)
    outlined where the plans carry one. None for a sweep that is not a calibration."""
    tab = calibration_table(table)
    if tab is None or tab.empty:
        return None
    labels = ["small-step", "large-step", "mixed", "non-training", "diverged", "unknown"]
    steps, moms = sorted(tab["step"].unique()), sorted(tab["momentum"].unique())
    grid = np.full((len(moms), len(steps)), np.nan)
    fig = Figure(figsize=(1.5 + 0.75 * len(steps), 1.2 + 0.6 * len(moms)), dpi=DPI,
                 layout="constrained")
    ax = fig.subplots()
    for _, r in tab.iterrows():
        i, j = moms.index(r["momentum"]), steps.index(r["step"])
        grid[i, j] = labels.index(r["label"])
        ax.text(j, i, f"{r['train_loss']:.2f}" if np.isfinite(r["train_loss"]) else "–",
                ha="center", va="center", fontsize=6)
    cmap = colors.ListedColormap(["#9ecae1", "#fdae6b", "#dadaeb", "#bdbdbd", "#636363", "white"])
    ax.imshow(grid, origin="lower", aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(labels) - 0.5)
    for e in (STEP_SMALL, STEP_LARGE):
        if e is not None and any(np.isclose(steps, e)):
            j = int(np.argmin(np.abs(np.asarray(steps) - e)))
            ax.add_patch(Rectangle((j - 0.5, -0.5), 1, len(moms), fill=False, lw=1.5))
    ax.set_xticks(range(len(steps)), [f"{v:g}" for v in steps], fontsize=7)
    ax.set_yticks(range(len(moms)), [f"{v:g}" for v in moms], fontsize=7)
    ax.legend(handles=[Patch(color=cmap(k), label=lab) for k, lab in enumerate(labels[:5])],
              fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set(xlabel="effective step η/(1 − μ)", ylabel="μ",
           title="regime map (number: mean final train loss; boxes: e_S, e_L)")
    return fig


def _arm_runs(table: SweepTable) -> pd.DataFrame:
    """Runs of the main sweep with their arm column (`analysis.arm_of`, the plans' steps);
    none for a calibration sweep (constant η only)."""
    runs = table.runs
    if runs.empty or LR not in runs or calibration_table(table) is not None:
        return runs.iloc[:0]                 # a calibration grid: its cells are not arms
    opts = PLANS["regimes.large_step_generalizes"].options
    mus = param(runs, MOM, 0.0).astype(float)
    kinds = param(runs, KIND, "constant").astype(str)
    arms = [arm_of(float(lr), mu, k, opts) for lr, mu, k in zip(runs[LR], mus, kinds)]
    out = runs.assign(arm=[a[1] if a else None for a in arms])
    return out.dropna(subset=["arm"])


def fig_arm_curves(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Paper Fig. 1 on the main sweep: mean train loss over steps of each constant-η arm
    (matched effective step at each μ, and the same-η arm dashed), one panel per regime,
    and the annealed arms' test accuracy."""
    runs = _arm_runs(table)
    if runs.empty or not table.has("train/loss"):
        return None
    fig = Figure(figsize=(10, 3.2), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, r in zip(axes[:2], ("S", "L")):
        for k, (arm, g) in enumerate(sorted(runs[runs["arm"].str.startswith(r + "|")
                                                & runs["arm"].str.endswith("constant")]
                                            .groupby("arm"))):
            c = table.mean_curve(g["run_id"], "train/loss")
            _, kind, mu, _ = arm.split("|")
            ax.plot(c.index, c.to_numpy(), "--" if kind == "same_lr" else "-", color=f"C{k}",
                    lw=1, label=f"μ={mu}" + (" same η" if kind == "same_lr" else ""))
        ax.set(yscale="log", xlabel="step", ylabel="train loss",
               title=f"{'small' if r == 'S' else 'large'}-step (e = "
                     f"{STEP_SMALL if r == 'S' else STEP_LARGE})")
        ax.legend(fontsize=6)
    ax = axes[2]
    for k, (arm, g) in enumerate(sorted(runs[runs["arm"].str.endswith("step")].groupby("arm"))):
        c = table.mean_curve(g["run_id"], "val/acc")
        r, _, mu, _ = arm.split("|")
        ax.plot(c.index, c.to_numpy(), "-" if r == "L" else ":", color=f"C{k % 3}", lw=1,
                label=f"{r} μ={mu}")
    ax.set(xlabel="step", ylabel="test accuracy", title="annealed ×0.1 at half (L solid)")
    ax.legend(fontsize=6)
    return fig


def fig_arm_finals(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Paper Fig. 2 on the main sweep: final train loss and final test accuracy per arm
    (mean ± sd over seeds; each seed a dot)."""
    runs = _arm_runs(table)
    if runs.empty:
        return None
    loss = table.final("final/train_loss", fallback="train/loss")
    acc = table.final("final/val_acc", fallback="val/acc")
    arms = sorted(runs["arm"].unique())
    fig = Figure(figsize=(10, 3.6), dpi=DPI, layout="constrained")
    for ax, (series, label) in zip(fig.subplots(1, 2), ((loss, "final train loss"),
                                                        (acc, "final test accuracy"))):
        for i, arm in enumerate(arms):
            v = series.reindex(runs.loc[runs["arm"] == arm, "run_id"]).to_numpy(float)
            v = v[np.isfinite(v)]
            ax.plot(np.full(len(v), i), v, ".", color="0.6", ms=3)
            if len(v):
                ax.errorbar(i, v.mean(), yerr=v.std(), fmt="o", color="C1" if arm[0] == "L"
                            else "C0", ms=4)
        ax.set_xticks(range(len(arms)), [a.replace("|", " ") for a in arms], rotation=60,
                      fontsize=6, ha="right")
        ax.set(ylabel=label)
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
