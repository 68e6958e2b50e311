"""The critical-periods experiment's figures: final accuracy per arm beside
the paper's Fig. 1 numbers, and the Fisher trace of the clean runs."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweeps.experiments.registry import Sources
from sweeps.experiments.critical_periods.analysis import (arm_frame, fisher_curves, in_schedule,
                                                          onset_frame, removal_frame)
from sweeps.experiments.critical_periods.plans import CONTROLS, FISHER, SCHEDULES
from sweeps.plotting import DPI
from sweeps.table import SweepTable

# The paper's Fig. 1 (All-CNN, CIFAR-10, ×0.97 per epoch): final test accuracy after
# blur removed at epoch N and 160 clean epochs.
PAPER_BUDGET = 160
PAPER_ACC = {0: 0.9199, 40: 0.8682, 100: 0.8287}


def _errorbar(ax, df: pd.DataFrame, x: str, y: str, **kw) -> None:
    g = df.groupby(x)[y].agg(["mean", "std"])
    ax.errorbar(g.index, g["mean"], yerr=g["std"].fillna(0.0), capsize=2, ms=4, **kw)


def fig_accuracy(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Paper Fig. 1/10 analog, per schedule arm: the accuracy cost of blur removed at
    epoch N (seed's clean run − final accuracy, mean ± sd over seeds) against N as a
    fraction of the clean budget, beside the paper's cost on CIFAR-10; the sensitivity
    to a blur window against its onset t₀; and noise and the controls at their N."""
    df, _ = arm_frame(table)
    if df.empty or not (df["sweep"].isin(["removal", "onset"])).any():
        return None
    fig = Figure(figsize=(11, 3.6), dpi=DPI, layout="constrained")
    ax_n, ax_t, ax_c = fig.subplots(1, 3)
    paper = pd.Series(PAPER_ACC)
    ax_n.plot(paper.index / PAPER_BUDGET, paper.iloc[0] - paper.to_numpy(), "k--", marker="x",
              label="paper (CIFAR-10, exponential)")
    budgets = set()
    for i, schedule in enumerate(SCHEDULES):
        arm = in_schedule(df, schedule)
        rem, budget = removal_frame(arm, "blur")
        if budget is None or rem.empty:
            continue
        budgets.add(budget)
        clean = rem[rem["N"] == 0].groupby("seed")["acc"].mean()
        cost = rem.assign(cost=rem["seed"].map(clean) - rem["acc"], x=rem["N"] / budget)
        _errorbar(ax_n, cost.dropna(subset=["cost"]), "x", "cost", fmt="o-", color=f"C{i}",
                  label=schedule)
        win, _, info = onset_frame(arm, "blur")
        if len(win):
            _errorbar(ax_t, win, "t0", "sensitivity", fmt="o-", color=f"C{i}", label=schedule)
        for j, kind in enumerate(("blur", "noise", *(CONTROLS if schedule == "exponential" else ()))):
            r, _ = removal_frame(arm, kind, budget)
            r = r[r["N"] == r["N"].max()] if kind == "blur" else r[r["N"] > 0]
            if len(r):
                ax_c.errorbar([j + 0.2 * (i - 1)], [r["acc"].mean()], yerr=[r["acc"].std()],
                              fmt="o", color=f"C{i}", capsize=2, ms=4,
                              label=schedule if j == 0 else None)
    ax_n.axhline(0, color="k", lw=0.5)
    ax_n.set(xlabel="deficit removed at N / clean budget", ylabel="accuracy cost (clean − final)",
             title=f"removal (then {'/'.join(map(str, sorted(budgets)))} clean epochs)")
    ax_n.legend(fontsize=6)
    ax_t.axhline(0, color="k", lw=0.5)
    ax_t.set(xlabel="blur onset t₀ (epoch)", ylabel="sensitivity (clean − final accuracy)",
             title="onset of a blur window")
    ax_t.legend(fontsize=6)
    ax_c.set_xticks(range(2 + len(CONTROLS)), ["blur", "noise", *CONTROLS], fontsize=7)
    ax_c.set(ylabel="final test accuracy", title="deficits removed at the latest N")
    ax_c.legend(fontsize=6)
    return fig


def fig_fisher(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Tr F of the clean runs against the optimizer step (log-log), one line per seed,
    one panel per schedule arm, the peak of each seed's curve marked."""
    if not table.has(FISHER):
        return None
    df, _ = arm_frame(table)
    arms = [(s, fisher_curves(table, df, s)) for s in ("exponential", "constant")]
    arms = [(s, c) for s, c in arms if c]
    if not arms:
        return None
    fig = Figure(figsize=(5 * len(arms), 3.6), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(arms), sharey=True))
    for ax, (schedule, curves) in zip(axes, arms):
        for i, (seed, (_, c)) in enumerate(sorted(curves.items(), key=lambda kv: str(kv[0]))):
            c = c[c.index > 0]
            ax.plot(c.index, c.to_numpy(), color=f"C{i % 10}", lw=1, label=f"seed {seed}")
            ax.plot([c.idxmax()], [c.max()], "v", color=f"C{i % 10}", ms=4)
        ax.set(xscale="log", yscale="log", xlabel="optimizer step", ylabel="Tr F",
               title=f"Fisher trace, clean run, {schedule} (▼: raw peak)")
        ax.legend(fontsize=5, ncol=2)
    return fig
