"""The stages figures: every marker's time against η (one panel per S) and the
marker × marker correlation matrix."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from sweeps.experiments.registry import Sources
from sweeps.experiments.stages.analysis import ALL, correlation_matrix, marker_table
from sweeps.experiments.stages.markers import SEEN
from sweeps.experiments.stages.plans import CONTROL, NAMES
from sweeps.plotting import DPI
from sweeps.table import SweepTable


def fig_markers(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Marker times (log steps) against η per S; seeds as points (open: censored or
    before the design's first point), the markers' means joined, t_fit dashed."""
    units = marker_table(table)
    if units is None:
        return None
    batches = sorted(units["S"].unique())
    fig = Figure(figsize=(4.2 * len(batches), 3.8), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(batches), sharey=True))
    etas = sorted(units["lr"].unique())
    width = (np.log(etas[-1]) - np.log(etas[0])) / max(len(etas), 2) * 0.35 if len(etas) > 1 else 0.1
    offsets = np.linspace(-width, width, len(ALL) - 1)
    for ax, s in zip(axes, batches):
        u = units[units["S"] == s]
        for j, m in enumerate(ALL):
            t = u[f"t_{m}"].to_numpy(float)
            seen = (u[f"how_{m}"] == SEEN).to_numpy()
            means = u.assign(lt=np.log(np.maximum(t, 1.0))).groupby("lr")["lt"].mean()
            if m == CONTROL:
                ax.plot(means.index, np.exp(means.to_numpy()), "k--", lw=1.2, label=NAMES[m])
                continue
            x = np.exp(np.log(u["lr"].to_numpy(float)) + offsets[j])
            ax.scatter(x[seen], t[seen], s=14, color=f"C{j}", label=NAMES[m])
            ax.scatter(x[~seen], t[~seen], s=14, facecolors="none", edgecolors=f"C{j}")
            ax.plot(np.exp(np.log(means.index.to_numpy(float)) + offsets[j]),
                    np.exp(means.to_numpy()), color=f"C{j}", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="η", title=f"S = {int(s)}")
        ax.set_xticks(etas, [f"{e:g}" for e in etas])
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0].set_ylabel("marker time (optimizer steps)")
    axes[-1].legend(fontsize=7, loc="best")
    return fig


def fig_correlation(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Spearman correlation of the markers' log times over the units."""
    units = marker_table(table)
    if units is None or len(units) < 3:
        return None
    c = correlation_matrix(units)
    fig = Figure(figsize=(5.0, 4.3), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(c.to_numpy(float), vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(c)), c.columns, rotation=45, fontsize=8)
    ax.set_yticks(range(len(c)), c.index, fontsize=8)
    for i in range(len(c)):
        for j in range(len(c)):
            v = c.iat[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.8, label="Spearman ρ of log times")
    return fig
