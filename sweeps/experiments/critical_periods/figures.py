"""The critical-periods experiment's figures: final accuracy per arm (paper
Fig. 10) and the Fisher trace."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweeps.experiments.registry import Sources
from sweeps.experiments.critical_periods.analysis import (arm_frame, clean_acc, onset_frame,
                                                          removal_frame)
from sweeps.experiments.critical_periods.plans import CONTROLS, FISHER
from sweeps.plotting import DPI
from sweeps.table import SweepTable


def _errorbar(ax, df: pd.DataFrame, x: str, y: str, **kw) -> None:
    g = df.groupby(x)[y].agg(["mean", "std"])
    ax.errorbar(g.index, g["mean"], yerr=g["std"].fillna(0.0), capsize=2, ms=4, **kw)


def fig_accuracy(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Paper Fig. 10/11 analog: final accuracy against the removal epoch N
    (blur, with the controls at their N) and against the onset t₀ of a short
    blur window; the clean arm as a band (mean ± sd)."""
    df, _ = arm_frame(table)
    if df.empty or not (df["sweep"].isin(["removal", "onset"])).any():
        return None
    fig = Figure(figsize=(9, 3.6), dpi=DPI, layout="constrained")
    ax_n, ax_t = fig.subplots(1, 2)
    rem, budget = removal_frame(df, "blur")
    for i, kind in enumerate(("blur", "noise", *CONTROLS)):
        r, _ = removal_frame(df, kind, budget)
        r = r[r["N"] > 0] if kind != "blur" else r
        if len(r):
            _errorbar(ax_n, r, "N", "acc", fmt="o-" if kind == "blur" else "s", color=f"C{i}",
                      label=kind)
    clean = clean_acc(df, budget) if budget is not None else pd.Series(dtype=float)
    if len(clean):
        ax_n.axhspan(clean.mean() - np.nan_to_num(clean.std()),
                     clean.mean() + np.nan_to_num(clean.std()), color="k", alpha=0.1, label="clean")
    ax_n.set(xlabel="deficit removed at epoch N", ylabel="final test accuracy",
             title=f"removal (then {budget} clean epochs)")
    ax_n.legend(fontsize=6)
    win, base_mean, info = onset_frame(df, "blur")
    if len(win):
        _errorbar(ax_t, win, "t0", "sensitivity", fmt="o-", color="C0", label="blur")
        ax_t.axhline(0, color="k", lw=0.5)
    ax_t.set(xlabel="deficit onset t₀ (epoch)", ylabel="sensitivity (clean − final accuracy)",
             title=f"onset (window {info['window']}, {info['epochs']} epochs)")
    return fig


def fig_fisher(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Tr F over training: mean curve per arm (clean and blur removal at each N),
    against the epoch (the step divided by the steps per epoch of each run)."""
    if not table.has(FISHER):
        return None
    df, _ = arm_frame(table)
    df = df[df["sweep"].isin(["clean", "removal", "permanent"])
            & df["deficit"].isin(["none", "blur"])]
    if df.empty:
        return None
    fig = Figure(figsize=(5.5, 3.6), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    df = df.sort_values(["sweep", "end", "epochs"])
    for i, (arm, g) in enumerate(df.groupby("arm", sort=False)):
        c = table.mean_curve(g["run_id"], FISHER)
        epoch_len = _steps_per_epoch(table, g["run_id"].iloc[0])
        ax.plot(c.index / epoch_len, c.to_numpy(), color=f"C{i % 10}", lw=1, label=arm)
        if g["sweep"].iloc[0] == "removal":
            ax.axvline(g["end"].iloc[0], color=f"C{i % 10}", lw=0.5, ls=":")
    ax.set(xlabel="epoch", ylabel="Tr F", yscale="log", title="Fisher trace (dotted: deficit removed)")
    ax.legend(fontsize=6)
    return fig


def _steps_per_epoch(table: SweepTable, run_id: str) -> float:
    ends = table.series(run_id, "train/epoch").sort_index()
    if len(ends) >= 1 and ends.iloc[0] > 0:
        return float(ends.index[0]) / float(ends.iloc[0])
    return 1.0
