"""The rise and saturation of the spectra against the step (the paper's Fig. 6
timeline), and the conditioning and accuracy beside the paper's numbers."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweeps.experiments.registry import Sources
from sweeps.experiments.breakeven.plans import BATCH, FINAL_ACC, LR, RISE_OPTIONS
from sweeps.experiments.breakeven.rise import peak_step
from sweeps.plotting import DPI, lr_colors
from sweeps.table import SweepTable

# The paper's SimpleCNN on CIFAR-10, batch-128 gradients (docs/science.md#break-even-point):
# max λ_K¹ and max Tr(K)/λ_K¹ at η = 0.01 and η = 0.1. Another model and data set: the
# direction and the ratio between the two η compare, the absolute values do not.
PAPER = {"gradcov_mb/top": {0.01: 3.01, 0.1: 0.87},
         "gradcov_mb/trace_over_top": {0.01: 10.69, 0.1: 14.29}}


def _curves(ax, table: SweepTable, runs: pd.DataFrame, key: str, color) -> None:
    tol, smooth = RISE_OPTIONS["peak_tol"], RISE_OPTIONS["smooth"]
    for _, r in runs.iterrows():
        s = table.series(r["run_id"], key).sort_index()
        if s.empty:
            continue
        c = color(r[LR])
        ax.plot(s.index.to_numpy(float) + 1, s.to_numpy(float), "-", lw=0.8, color=c, alpha=0.7)
        at = peak_step(s.index.to_numpy(), s.to_numpy(float), tol, smooth)
        ax.plot(at + 1, float(s.loc[at]), "o", ms=3, color=c)


def _maxima(table: SweepTable, runs: pd.DataFrame, key: str) -> pd.DataFrame:
    recs = []
    for _, r in runs.iterrows():
        s = table.series(r["run_id"], key)
        if len(s):
            recs.append({LR: r[LR], BATCH: r[BATCH], "v": float(np.nanmax(s.to_numpy(float)))})
    return pd.DataFrame(recs, columns=[LR, BATCH, "v"])


def fig_rise(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Top: λ_K¹ (mini-batch unit when logged) and λ_H¹ against the step, one line
    per trial coloured by η, the peak step (first within peak_tol of the smoothed maximum)
    marked, the early limit (early_frac of the steps) dashed. Bottom: whole-run
    max λ_K¹ and max Tr(K)/λ_K¹ in the mini-batch unit against η per S, with the
    paper's two points (crosses) and the M − 1 cap; final test accuracy against η."""
    runs = table.finished()
    if runs.empty or LR not in runs or BATCH not in runs or not table.has("gradcov/top"):
        return None
    top = "gradcov_mb/top" if table.has("gradcov_mb/top") else "gradcov/top"
    color, sm = lr_colors(runs[LR])
    fig = Figure(figsize=(12, 6.6), dpi=DPI, layout="constrained")
    (a, b, c), (d, e, f) = fig.subplots(2, 3)
    last = float(table.metric("gradcov/top")["step"].max())
    for ax, key in ((a, top), (b, "hessian/top")):
        _curves(ax, table, runs, key, color)
        ax.axvline(RISE_OPTIONS["early_frac"] * last + 1, color="grey", ls="--", lw=0.8)
        ax.set(xscale="log", xlabel="step + 1", ylabel=key, title=f"{key} over training")
    c.axis("off")
    c.text(0, 0.95, "the paper (SimpleCNN, CIFAR-10, batch-128 K):\n"
                    "max λ_K¹ 3.01 (η 0.01) → 0.87 (η 0.1)\n"
                    "max Tr(K)/λ_K¹ 10.69 → 14.29\n"
                    "peaks early, near 60 % train accuracy", va="top", fontsize=8)
    for ax, key in ((d, top), (e, "gradcov_mb/trace_over_top")):
        df = _maxima(table, runs, key)
        for i, (size, g) in enumerate(df.groupby(BATCH)):
            mean = g.groupby(LR)["v"].mean()
            ax.plot(mean.index, mean.to_numpy(), "-o", ms=3, color=f"C{i}", label=f"S={size:g}")
        for eta, v in PAPER.get(key, {}).items():
            ax.plot(eta, v, "kx", ms=6, label="paper" if eta == 0.01 else None)
        ax.set(xscale="log", xlabel="η", ylabel=f"max {key}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    if "probes.gradcov_mb_batches" in runs:
        e.axhline(float(runs["probes.gradcov_mb_batches"].max()) - 1, color="grey", ls=":", lw=0.8)
    acc = table.final(FINAL_ACC, fallback="val/acc")
    df = runs.assign(acc=runs["run_id"].map(acc)).dropna(subset=["acc"])
    for i, (size, g) in enumerate(df.groupby(BATCH)):
        mean = g.groupby(LR)["acc"].mean()
        f.plot(mean.index, mean.to_numpy(), "-o", ms=3, color=f"C{i}", label=f"S={size:g}")
        f.scatter(g[LR], g["acc"], s=8, color=f"C{i}", alpha=0.5)
    f.set(xscale="log", xlabel="η", ylabel="final test accuracy")
    if f.get_legend_handles_labels()[0]:
        f.legend(fontsize=6)
    fig.colorbar(sm, ax=[a, b], label="η")
    return fig
