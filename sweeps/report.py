"""Figures that mirror the papers', drawn from a sweep's tidy table.

Every figure function takes a `SweepTable` and returns a matplotlib `Figure`,
or None when the sweep has no data for it. Figures are built with the
object API (`matplotlib.figure.Figure`, Agg canvas): no pyplot, no global
state, nothing shown on screen.

    figs = make_figures(table, groups=["breakeven"], trajectories=None)
    paths = save_figures(figs, "runs/report/breakeven")        # PNGs, dpi 100

Break-even: `fig_spectra` (Fig. 6: λ_H¹ and ΔL against λ_K¹ per trial),
`fig_pca_trajectories` (Fig. 7/8: early trajectory on its top-2 PCA
directions coloured by λ_K¹; needs caller-supplied snapshots),
`fig_max_vs_hparams` (max λ against η and S; hollow markers = peak not reached).
Two regimes: `fig_loss_trajectories` (Fig. 1), `fig_accuracy_heatmap` (Fig. 2;
× = diverged, ○ = non-training trials in the cell, as `classify_regimes` says),
`fig_schedules` (Fig. 3). Large LR: `fig_large_lr` (test and patch accuracy).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from matplotlib import cm, colors
from matplotlib.figure import Figure

from sweeps.conjectures.breakeven import SYMBOL, peak_reached
from sweeps.conjectures.large_lr import anneal_epoch, lr_arm
from sweeps.conjectures.regimes import KIND, STAGE1, classify_regimes, is_three_step
from sweeps.conjectures.verdict import final_value

LR, BATCH, MOM = "optim.lr", "train.batch_size", "optim.momentum"
DPI = 100
Trajectories = Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


# ------------------------------------------------------------------ helpers
def _finished(table: Any) -> pd.DataFrame:
    return table.runs[table.runs["status"].astype(str) == "finished"]


def _has(table: Any, *keys: str) -> bool:
    return bool(set(keys) <= set(table.metrics["key"].unique()))


def _lr_colors(values: Iterable[float]) -> tuple[Callable[[float], Any], cm.ScalarMappable]:
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0], dtype=float)
    lo, hi = (v.min(), v.max()) if v.size else (1e-3, 1.0)
    norm = colors.LogNorm(lo, hi if hi > lo else lo * 10)
    sm = cm.ScalarMappable(norm=norm, cmap="viridis")
    return (lambda x: sm.to_rgba(x)), sm


def _mean_curve(table: Any, run_ids: Iterable[str], key: str) -> pd.Series:
    """Mean over runs of `key` at each step (steps shared by the runs)."""
    m = table.metrics
    rows = m[(m["key"] == key) & m["run_id"].isin(list(run_ids))]
    return rows.groupby("step")["value"].mean()


# --------------------------------------------------------------- break-even
def fig_spectra(table: Any) -> Figure | None:
    """Paper Fig. 6: λ_H¹ and ΔL (change of train loss between measurements) against λ_K¹."""
    if not _has(table, "gradcov/top"):
        return None
    runs = _finished(table)
    color, sm = _lr_colors(runs[LR] if LR in runs else [])
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


def fig_max_vs_hparams(table: Any, peak_eps: float = 0.05) -> Figure | None:
    """Max λ_H¹ and max λ_K¹ against η (one line per S) and against S (one line per η).
    Filled markers: peak reached; hollow: not reached (not comparable)."""
    keys = [k for k in ("hessian/top", "gradcov/top") if _has(table, k)]
    runs = _finished(table)
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
            color, _ = _lr_colors(df[LR]) if line == LR else (None, None)
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


# ------------------------------------------------------------ two regimes
def fig_loss_trajectories(table: Any) -> Figure | None:
    """Paper Fig. 1: train loss over steps, one panel per μ, one line per η
    (dashed, ending with ×: diverged; dotted: non-training)."""
    runs = table.runs
    if not _has(table, "train/loss") or LR not in runs:
        return None
    runs = runs.dropna(subset=[LR])
    moms = sorted(runs[MOM].dropna().unique()) if MOM in runs else [None]
    color, sm = _lr_colors(runs[LR])
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


def fig_accuracy_heatmap(table: Any) -> Figure | None:
    """Paper Fig. 2: mean final test accuracy over η × μ (finished trials);
    cells with a diverged trial are marked ×, cells with a non-training trial
    (neither diverged nor trained: `classify_regimes`) ○."""
    runs = table.runs
    if LR not in runs or MOM not in runs or not _has(table, "val/acc"):
        return None
    acc = final_value(table, "final/val_acc", fallback="val/acc")
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


def fig_schedules(table: Any) -> Figure | None:
    """Paper Fig. 3: test accuracy over steps for the 3-step baseline and each
    two-stage T (mean over seeds); final accuracy against T (the transition
    ablation) with the 3-step mean ± sd as a band."""
    runs = _finished(table)
    if KIND not in runs or not _has(table, "val/acc") or runs.empty:
        return None
    base = runs[runs.apply(is_three_step, axis=1).astype(bool)]
    two = runs[runs[KIND].astype(str) == "two_stage"]
    if base.empty and two.empty:
        return None
    acc = final_value(table, "final/val_acc", fallback="val/acc")
    fig = Figure(figsize=(9, 3.4), dpi=DPI, layout="constrained")
    ax_c, ax_t = fig.subplots(1, 2)
    if len(base):
        c = _mean_curve(table, base["run_id"], "val/acc")
        ax_c.plot(c.index, c.to_numpy(), "k-", lw=1.5, label="3-step")
    groups = list(two.groupby(STAGE1)) if STAGE1 in two else []
    for i, (t, g) in enumerate(groups):
        c = _mean_curve(table, g["run_id"], "val/acc")
        ax_c.plot(c.index, c.to_numpy(), color=f"C{i}", lw=1, label=f"two-stage T={t:g}")
    ax_c.set(xlabel="step", ylabel="test accuracy", title="schedules")
    ax_c.legend(fontsize=6)
    if groups:
        ts = [float(t) for t, _ in groups]
        means = [acc.reindex(g["run_id"]).mean() for _, g in groups]
        sds = [acc.reindex(g["run_id"]).std() for _, g in groups]
        ax_t.errorbar(ts, means, yerr=np.nan_to_num(sds), fmt="o-", ms=4, label="two-stage")
    if len(base):
        b = acc.reindex(base["run_id"])
        ax_t.axhline(b.mean(), color="k", lw=1, label="3-step")
        ax_t.axhspan(b.mean() - np.nan_to_num(b.std()), b.mean() + np.nan_to_num(b.std()),
                     color="k", alpha=0.1)
    ax_t.set(xlabel="T (stage-1 epochs)", ylabel="final test accuracy", title="transition ablation")
    ax_t.legend(fontsize=6)
    return fig


# ---------------------------------------------------------------- large LR
def fig_large_lr(table: Any) -> Figure | None:
    """Li/Wei/Ma: test accuracy (and patch-only accuracy, when logged) over steps
    per arm, mean over seeds; dotted line at the large arm's annealing."""
    runs = _finished(table)
    if runs.empty or not _has(table, "val/acc"):
        return None
    arms = runs.apply(lr_arm, axis=1)
    if not (arms == "large-anneal").any():
        return None
    keys = ["val/acc"] + (["patch/acc"] if _has(table, "patch/acc") else [])
    fig = Figure(figsize=(4.2 * len(keys) + 0.5, 3.3), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    e_a = anneal_epoch(runs)
    anneal_step = None
    large = runs[arms == "large-anneal"]
    if e_a is not None and len(large):
        steps = table.series(large["run_id"].iloc[0], "val/acc").sort_index().index
        n_ep = int(large["train.epochs"].iloc[0]) if "train.epochs" in large else len(steps)
        if len(steps):
            off = max(0, len(steps) - n_ep)
            anneal_step = steps[min(len(steps) - 1, off + e_a - 1)]
    for ax, key in zip(axes, keys):
        for i, arm in enumerate(("large-anneal", "small", "small+noise")):
            ids = runs["run_id"][arms == arm]
            if len(ids):
                c = _mean_curve(table, ids, key)
                ax.plot(c.index, c.to_numpy(), color=f"C{i}", label=f"{arm} (n={len(ids)})")
        if anneal_step is not None:
            ax.axvline(anneal_step, color="grey", ls=":", lw=1)
        ax.set(xlabel="step", ylabel=key, title={"val/acc": "test accuracy",
                                                 "patch/acc": "patch-only accuracy"}[key])
        ax.legend(fontsize=6)
    return fig


# ---------------------------------------------------------------- registry
FIGURES: dict[str, tuple[str, Callable[[Any], Figure | None]]] = {
    "breakeven_fig6_spectra.png": ("breakeven", fig_spectra),
    "breakeven_max_vs_hparams.png": ("breakeven", fig_max_vs_hparams),
    "regimes_fig1_loss.png": ("regimes", fig_loss_trajectories),
    "regimes_fig2_heatmap.png": ("regimes", fig_accuracy_heatmap),
    "regimes_fig3_schedules.png": ("regimes", fig_schedules),
    "large_lr_accuracy.png": ("large_lr", fig_large_lr),
}
PCA_FIGURE = "breakeven_fig7_pca.png"
GROUPS = ("breakeven", "regimes", "large_lr")


def groups_for(conjecture_names: Iterable[str]) -> list[str]:
    """Figure groups for conjecture names: 'breakeven.c1_lr' -> 'breakeven'."""
    out = []
    for n in conjecture_names:
        g = str(n).split(".", 1)[0]
        if g in GROUPS and g not in out:
            out.append(g)
    return out


def make_figures(table: Any, groups: Iterable[str] | None = None,
                 trajectories: Trajectories | None = None) -> dict[str, Figure]:
    """{filename: Figure} for the given groups (all when None); figures without data are skipped."""
    groups = list(GROUPS if groups is None else groups)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise KeyError(f"unknown figure group(s) {unknown}; valid: {', '.join(GROUPS)}")
    figs: dict[str, Figure] = {}
    for fname, (group, func) in FIGURES.items():
        if group in groups:
            fig = func(table)
            if fig is not None:
                figs[fname] = fig
    if "breakeven" in groups:
        fig = fig_pca_trajectories(trajectories)
        if fig is not None:
            figs[PCA_FIGURE] = fig
    return figs


def save_figures(figs: Mapping[str, Figure], out_dir: str | Path, dpi: int = DPI) -> list[Path]:
    """Write each figure as a PNG under out_dir; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figs.items():
        p = out / name
        fig.savefig(p, dpi=dpi)
        paths.append(p)
    return paths
