"""Figures of the frequency principle: the paper's Fig. 9 heat map of Δ_F
over (step, frequency), Δ_F curves (absolute, v1; relative to step 0 with the
plan's fraction, v2), the per-trial contrast of v2 per arm, and the filter
variant's e_low / e_high."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweeps.experiments.frequency.analysis import (E_HIGH, E_LOW, arms_of, contrast_table,
                                                   delta_keys)
from sweeps.experiments.frequency.plans import PLANS, THRESHOLD
from sweeps.experiments.registry import Sources
from sweeps.plotting import DPI
from sweeps.table import SweepTable


def _first_per_arm(table: SweepTable, max_panels: int) -> list[tuple[str, str]]:
    runs = table.finished()
    if runs.empty:
        return []
    runs = runs.assign(_arm=arms_of(runs)).sort_values("seed")
    first = runs.groupby("_arm", sort=True).head(1)
    return list(zip(first["_arm"], first["run_id"]))[:max_panels]


def fig_heatmap(table: SweepTable, sources: Sources | None = None, max_panels: int = 4) -> Figure | None:
    """Paper Fig. 9: Δ_F over (probe step, frequency rank), first seed of each arm."""
    keys = delta_keys(table)
    panels = _first_per_arm(table, max_panels)
    if not keys or not panels:
        return None
    fig = Figure(figsize=(3.6 * len(panels) + 0.8, 3.0), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    for ax, (arm, rid) in zip(axes, panels):
        frame = pd.concat([table.series(rid, k).rename(i) for i, k in enumerate(keys)], axis=1)
        frame = frame.sort_index()
        x = np.maximum(frame.index.to_numpy(float), 1.0)
        mesh = ax.pcolormesh(x, np.arange(len(keys)), frame.to_numpy(float).T, shading="nearest",
                             cmap="viridis", vmin=0, vmax=1)
        ax.set(xscale="log", xlabel="step", ylabel="frequency rank i", title=arm,
               yticks=range(len(keys)))
    fig.colorbar(mesh, ax=list(axes), label="Δ_F(k_i)")
    return fig


def _mean_curves(table: SweepTable, relative: bool) -> dict[str, dict[int, pd.Series]] | None:
    """Per arm and rank: Δ_F (divided by its step-0 value when `relative`), mean over trials."""
    keys = delta_keys(table)
    runs = table.finished()
    if not keys or runs.empty:
        return None
    runs = runs.assign(_arm=arms_of(runs))
    m = table.metrics
    out: dict[str, dict[int, pd.Series]] = {}
    for arm in sorted(runs["_arm"].unique()):
        ids = runs.loc[runs["_arm"] == arm, "run_id"]
        out[arm] = {}
        for i, key in enumerate(keys):
            rows = m[(m["key"] == key) & m["run_id"].isin(ids)].sort_values("step")
            if rows.empty:
                continue
            if relative:
                first = rows.groupby("run_id")["value"].transform("first")
                rows = rows.assign(value=rows["value"] / first)
            out[arm][i] = rows.groupby("step")["value"].mean()
    return out


def _curve_panels(curves: dict[str, dict[int, pd.Series]], level: float, ylabel: str) -> Figure:
    fig = Figure(figsize=(3.6 * len(curves), 3.0), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(curves), squeeze=False)[0])
    for ax, (arm, ranks) in zip(axes, curves.items()):
        for i, mean in ranks.items():
            ax.plot(np.maximum(mean.index.to_numpy(float), 1.0), mean.to_numpy(), lw=1,
                    color=f"C{i}", label=f"k{i}")
        ax.axhline(level, color="grey", ls=":", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="step", ylabel=ylabel, title=arm)
    axes[0].legend(fontsize=6)
    return fig


def fig_curves(table: SweepTable, sources: Sources | None = None, threshold: float = THRESHOLD) -> Figure | None:
    """Δ_F(k_i) against step, mean over seeds, one panel per arm; dotted: v1's threshold."""
    curves = _mean_curves(table, relative=False)
    return None if curves is None else _curve_panels(curves, threshold, "Δ_F")


def fig_relative_curves(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Δ_F(k_i) / Δ_F(k_i) at step 0 against step, mean over seeds, one panel
    per arm; dotted: the v2 plan's fraction."""
    curves = _mean_curves(table, relative=True)
    fraction = float(PLANS["frequency.high_after_low"].options["fraction"])
    return None if curves is None else _curve_panels(curves, fraction, "Δ_F / Δ_F(step 0)")


def fig_contrast(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """v2: per-trial ln t_high − ln t_low by arm (open: a censored time), arm means as bars."""
    c = contrast_table(table)
    runs = table.finished()
    if c is None or runs.empty:
        return None
    c = c.merge(runs[["run_id"]].assign(_arm=arms_of(runs)), on="run_id")
    c = c[np.isfinite(c["d"].to_numpy(float))]
    if c.empty:
        return None
    arms = sorted(c["_arm"].unique())
    fig = Figure(figsize=(1.2 + 1.4 * len(arms), 3.2), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    for j, arm in enumerate(arms):
        a = c[c["_arm"] == arm]
        cens = (a["censored_low"] | a["censored_high"]).to_numpy(bool)
        x = j + rng.uniform(-0.15, 0.15, len(a))
        ax.scatter(x[~cens], a["d"].to_numpy(float)[~cens], s=12, color=f"C{j}")
        ax.scatter(x[cens], a["d"].to_numpy(float)[cens], s=12, facecolors="none", edgecolors=f"C{j}")
        ax.hlines(a["d"].mean(), j - 0.3, j + 0.3, color="k", lw=1.5)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(arms)), arms, rotation=20, fontsize=7)
    ax.set(ylabel="ln t_high − ln t_low")
    return fig


def fig_low_high(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Filter variant: e_low (solid) and e_high (dashed) over steps per kernel
    width, first finished trial; None unless `freq/e_low_w*` were logged."""
    low, high = delta_keys(table, E_LOW), delta_keys(table, E_HIGH)
    runs = table.finished()
    if not low or runs.empty:
        return None
    rid = runs.sort_values("seed").iloc[0]["run_id"]
    fig = Figure(figsize=(5, 3.4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for i, key in enumerate(low):
        s = table.series(rid, key).sort_index()
        ax.plot(np.maximum(s.index.to_numpy(float), 1), s.to_numpy(float), color=f"C{i}",
                label=f"e_low w{i}")
    for i, key in enumerate(high):
        s = table.series(rid, key).sort_index()
        ax.plot(np.maximum(s.index.to_numpy(float), 1), s.to_numpy(float), "--", color=f"C{i}",
                label=f"e_high w{i}")
    ax.set(xscale="log", yscale="log", xlabel="step", ylabel="relative error")
    ax.legend(fontsize=6)
    return fig
