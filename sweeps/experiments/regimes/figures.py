"""The two-regimes experiment's figures (paper Figs. 1-3)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from sweeps.experiments.registry import Sources
from sweeps.experiments.regimes.analysis import _schedule_arms, classify_regimes
from sweeps.experiments.regimes.plans import KIND, LR, MOM
from sweeps.plotting import DPI, lr_colors
from sweeps.table import SweepTable


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
