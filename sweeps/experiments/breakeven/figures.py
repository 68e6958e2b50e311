"""The break-even experiment's figures (paper Figs. 6-8, the maxima against η
and S, and the distance to the stability limit)."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib import colors
from matplotlib.figure import Figure

from sweeps.experiments.registry import Sources
from sweeps.experiments.breakeven.analysis import peak_reached
from sweeps.experiments.breakeven.plans import BATCH, LR, SYMBOL
from sweeps.plotting import DPI, lr_colors
from sweeps.table import SweepTable

Trajectories = Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


def fig_spectra(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Paper Fig. 6: λ_H¹ and ΔL (change of train loss between measurements) against λ_K¹."""
    if not table.has("gradcov/top"):
        return None
    runs = table.finished()
    color, sm = lr_colors(runs[LR] if LR in runs else [])
    fig = Figure(figsize=(9, 3.6), dpi=DPI, layout="constrained")
    ax_h, ax_l = fig.subplots(1, 2)
    for _, r in runs.iterrows():
        k = table.series(r["run_id"], "gradcov/top").sort_index()
        if k.empty:
            continue
        c = color(r[LR]) if LR in r else None
        h = table.series(r["run_id"], "hessian/top").sort_index()
        if len(h):
            common = k.index.intersection(h.index)
            ax_h.plot(k.loc[common], h.loc[common], "-o", ms=2, lw=1, color=c, alpha=0.8)
        loss = table.series(r["run_id"], "train/loss").sort_index()
        if len(loss) >= 2 and len(k) >= 2:
            at = np.interp(k.index.to_numpy(float), loss.index.to_numpy(float), loss.to_numpy(float))
            ax_l.plot(k.to_numpy()[1:], np.diff(at), "-o", ms=2, lw=1, color=c, alpha=0.8)
    ax_h.set(xlabel="λ_K¹", ylabel="λ_H¹", title="λ_H¹ vs λ_K¹")
    ax_l.set(xlabel="λ_K¹", ylabel="ΔL", title="ΔL vs λ_K¹")
    ax_l.axhline(0, color="grey", lw=0.5)
    fig.colorbar(sm, ax=[ax_h, ax_l], label="η")
    return fig


def fig_pca_trajectories(trajectories: Trajectories | None, max_runs: int = 4) -> Figure | None:
    """Paper Fig. 7/8: each run's early trajectory projected on its top-2 PCA
    directions, coloured by λ_K¹. `trajectories[run_id] = (steps (T,),
    flattened weight snapshots (T, p), λ_K¹ per snapshot (T,))`."""
    if not trajectories:
        return None
    items = list(trajectories.items())[:max_runs]
    lam_all = np.concatenate([np.asarray(t[2], float) for _, t in items])
    norm = colors.Normalize(np.nanmin(lam_all), np.nanmax(lam_all))
    fig = Figure(figsize=(3.4 * len(items) + 1, 3.2), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(items)))
    for ax, (rid, (steps, w, lam)) in zip(axes, items):
        w = np.asarray(w, dtype=float)
        x = w - w.mean(0)
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        proj = u[:, :2] * s[:2]
        if proj.shape[1] < 2:
            proj = np.c_[proj, np.zeros(len(proj))]
        ax.plot(proj[:, 0], proj[:, 1], color="grey", lw=0.5)
        sc = ax.scatter(proj[:, 0], proj[:, 1], c=lam, cmap="plasma", norm=norm, s=14)
        ax.set(title=str(rid), xlabel="PC1", ylabel="PC2")
    fig.colorbar(sc, ax=list(axes), label="λ_K¹")
    return fig


def fig_max_vs_hparams(table: SweepTable, sources: Sources | None = None, peak_eps: float = 0.05) -> Figure | None:
    """Max λ_H¹ and max λ_K¹ (per example, and in the mini-batch unit when
    logged) over the whole run against η (one line per S) and against S (one
    line per η). Filled markers: peak reached; hollow: not reached (not comparable)."""
    keys = [k for k in ("hessian/top", "gradcov/top", "gradcov_mb/top") if table.has(k)]
    runs = table.finished()
    if not keys or LR not in runs or BATCH not in runs:
        return None
    fig = Figure(figsize=(8, 3.2 * len(keys)), dpi=DPI, layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(keys), 2))
    for row, key in zip(axes, keys):
        recs = []
        for _, r in runs.iterrows():
            s = table.series(r["run_id"], key)
            if len(s):
                recs.append({LR: r[LR], BATCH: r[BATCH], "max": float(np.nanmax(s.to_numpy())),
                             "peak": peak_reached(s.sort_index().to_numpy(), peak_eps)})
        df = pd.DataFrame(recs)
        if df.empty:
            continue
        for ax, (x, line) in zip(row, ((LR, BATCH), (BATCH, LR))):
            color, _ = lr_colors(df[LR]) if line == LR else (None, None)
            for i, (lv, g) in enumerate(df.groupby(line)):
                c = color(lv) if color else f"C{i}"
                mean = g[g["peak"]].groupby(x)["max"].mean()
                ax.plot(mean.index, mean.to_numpy(), "-", color=c,
                        label=f"{'S' if line == BATCH else 'η'}={lv:g}")
                ax.scatter(g.loc[g["peak"], x], g.loc[g["peak"], "max"], color=c, s=14)
                ax.scatter(g.loc[~g["peak"], x], g.loc[~g["peak"], "max"], facecolors="none",
                           edgecolors=c, s=14)
            ax.set(xscale="log", yscale="log", xlabel="η" if x == LR else "S",
                   ylabel=f"max {SYMBOL[key]} ({key})")
            ax.legend(fontsize=6)
    return fig


def fig_stability(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """How close each trial comes to the stability limit along e_H¹: ηλ_H¹ over
    its limit 1 + √(1 − c), c = `sgd_noise/noise_term` (1 when c ≥ 1), against
    the step, one panel per S, coloured by η; at or above 1 the stability
    detector fires. Dotted: the full-batch ratio ηλ_H¹ / 2."""
    if not table.has("hessian/lr_x_top", "sgd_noise/noise_term"):
        return None
    runs = table.finished()
    if runs.empty or BATCH not in runs:
        return None
    sizes = sorted(runs[BATCH].dropna().unique())
    color, sm = lr_colors(runs[LR] if LR in runs else [])
    fig = Figure(figsize=(4.2 * len(sizes) + 1, 3.4), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(sizes), sharey=True))
    for ax, size in zip(axes, sizes):
        for _, r in runs[runs[BATCH] == size].iterrows():
            x = table.series(r["run_id"], "hessian/lr_x_top").sort_index()
            c = table.series(r["run_id"], "sgd_noise/noise_term").reindex(x.index)
            limit = 1 + np.sqrt(np.clip(1 - c.to_numpy(float), 0, None))
            steps = x.index.to_numpy(float) + 1
            col = color(r[LR]) if LR in r else None
            ax.plot(steps, x.to_numpy(float) / limit, "-", lw=1, color=col, alpha=0.8)
            ax.plot(steps, x.to_numpy(float) / 2, ":", lw=0.8, color=col, alpha=0.6)
        ax.axhline(1, color="grey", lw=0.8)
        ax.set(xscale="log", xlabel="step + 1", title=f"S = {size:g}")
    axes[0].set_ylabel("ηλ_H¹ / stability limit")
    fig.colorbar(sm, ax=list(axes), label="η")
    return fig


def fig_pca(table: SweepTable, sources: Sources | None = None, max_runs: int = 4) -> Figure | None:
    """Fig. 7/8 from the sweep: the weight snapshots (`probes.snapshots: true`)
    of up to `max_runs` finished trials of the first seed, ordered by batch size
    then learning rate, with λ_K¹ at the same steps. None without snapshots."""
    runs = table.finished()
    if sources is None or runs.empty or "probes.snapshots" not in runs or not runs["probes.snapshots"].any():
        return None
    runs = runs[runs["seed"] == runs["seed"].min()]
    runs = runs.sort_values([BATCH, LR]).head(max_runs)
    trajectories = {}
    for _, row in runs.iterrows():
        snaps = sources.probe_arrays(row["run_id"], "weights")
        lam = table.series(row["run_id"], "gradcov/top")
        steps = [s for s in snaps if s in lam.index]
        if len(steps) >= 3:
            label = f"η={row[LR]:g}, S={row[BATCH]}"
            trajectories[label] = (np.array(steps), np.stack([snaps[s] for s in steps]),
                                   lam.loc[steps].to_numpy())
    return fig_pca_trajectories(trajectories, max_runs)

