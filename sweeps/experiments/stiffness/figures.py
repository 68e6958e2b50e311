"""The stiffness experiment's figures: dynamics per η (paper Fig. 5), class
matrices, stiffness against input distance, the stopper against its baselines."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweeps.experiments.registry import Sources
from sweeps.experiments.stiffness.analysis import baselines_table, onset
from sweeps.experiments.stiffness.plans import (DISTANCE_ARTIFACT, LR, PLANS, TRAIN_LOSS, TV_SIGN,
                                                TV_SIGN_WITHIN, VAL_ACC, VAL_LOSS, XI_LEVEL,
                                                between_key, within_key)
from sweeps.plotting import DPI, lr_colors
from sweeps.table import SweepTable


def _epochs(table: SweepTable, rid: str, s: pd.Series) -> np.ndarray:
    """Epoch numbers of the epoch-end steps in `s` (from train/epoch when logged)."""
    ep = table.series(rid, "train/epoch")
    if len(ep):
        return pd.Series(ep.to_numpy(float), index=ep.index).reindex(s.index).to_numpy(float)
    return np.arange(1, len(s) + 1, dtype=float)


def _first_seed_per_lr(runs: pd.DataFrame) -> pd.DataFrame:
    if LR not in runs:
        return runs.head(1)
    return runs.sort_values(["seed"]).groupby(LR, sort=True).head(1).sort_values(LR)


def fig_dynamics(table: SweepTable, sources: Sources | None = None, pair: str = "train_train") -> Figure | None:
    """Paper Fig. 5 analog, one panel per η (first seed): train and val loss
    (left axis), within- and between-class sign stiffness and train–val sign
    stiffness, all pairs and within-class (right axis) over epochs; dotted
    line at the onset (min val loss)."""
    if not table.has(within_key(pair), between_key(pair)):
        return None
    runs = _first_seed_per_lr(table.finished())
    if runs.empty:
        return None
    fig = Figure(figsize=(3.6 * len(runs), 3.2), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(runs), squeeze=False)[0])
    for ax, (_, r) in zip(axes, runs.iterrows()):
        rid, right = r["run_id"], ax.twinx()
        for key, style in ((TRAIN_LOSS, "k-"), (VAL_LOSS, "k--")):
            s = table.per_epoch(rid, key)
            ax.plot(_epochs(table, rid, s), s.to_numpy(float), style, lw=1, label=key)
        for key, label, c in ((within_key(pair), "within", "C0"), (between_key(pair), "between", "C3"),
                              (TV_SIGN, "train–val", "C2"), (TV_SIGN_WITHIN, "train–val within", "C1")):
            s = table.per_epoch(rid, key)
            right.plot(_epochs(table, rid, s), s.to_numpy(float), color=c, lw=1, label=label)
        right.axhline(0, color="grey", lw=0.5)
        val = table.per_epoch(rid, VAL_LOSS)
        found = onset(val, window=1)
        if found:
            ax.axvline(_epochs(table, rid, val)[found[1]], color="grey", ls=":", lw=1)
        title = f"η={r[LR]:g}" if LR in r else str(rid)
        ax.set(xlabel="epoch", ylabel="loss", title=title)
        right.set_ylabel("sign stiffness")
    axes[0].legend(fontsize=6, loc="upper left")
    right.legend(fontsize=6, loc="upper right")
    return fig


def fig_class_matrices(table: SweepTable, sources: Sources | None = None, pair: str = "train_train",
                       n_epochs: int = 4) -> Figure | None:
    """Class sign-stiffness matrices C(a, b) of one trial (smallest η, first
    seed) at `n_epochs` probe steps spread over the run. Needs the class
    matrices as arrays (`sources.probe_arrays(run_id, "stiffness_<pair>")`:
    a C×C sign matrix, or a 2×C×C stack sign, cos); None otherwise."""
    runs = _first_seed_per_lr(table.finished())
    if sources is None or runs.empty:
        return None
    rid = runs.iloc[0]["run_id"]
    arrays = sources.probe_arrays(rid, f"stiffness_{pair}")
    if not arrays:
        return None
    steps = sorted(arrays)
    picks = sorted({steps[i] for i in np.linspace(0, len(steps) - 1, min(n_epochs, len(steps))).astype(int)})
    fig = Figure(figsize=(2.8 * len(picks) + 0.8, 2.8), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(picks), squeeze=False)[0])
    for ax, step in zip(axes, picks):
        c = np.asarray(arrays[step], dtype=float)
        c = c[0] if c.ndim == 3 else c
        im = ax.imshow(c, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set(title=f"step {step}", xlabel="class b", ylabel="class a")
    fig.colorbar(im, ax=list(axes), label=f"{pair} sign stiffness C(a, b)")
    return fig


def fig_distance(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Within-class sign stiffness against input distance 1 − cos(x₁, x₂) at the
    last probe step, one line per η (first seed), ξ where it crosses 0. Needs
    the distance-binned artifact (rows: bin centres, sign, cos); None otherwise."""
    runs = _first_seed_per_lr(table.finished())
    if sources is None or runs.empty:
        return None
    color, sm = lr_colors(runs[LR] if LR in runs else [])
    fig, drawn = Figure(figsize=(5, 3.4), dpi=DPI, layout="constrained"), 0
    ax = fig.subplots()
    for _, r in runs.iterrows():
        arrays = sources.probe_arrays(r["run_id"], DISTANCE_ARTIFACT)
        if not arrays:
            continue
        a = np.asarray(arrays[max(arrays)], dtype=float)
        ax.plot(a[0], a[1], "-o", ms=3, color=color(r[LR]) if LR in r else None)
        drawn += 1
    if not drawn:
        return None
    ax.axhline(0, color="grey", lw=0.5)
    ax.axhline(XI_LEVEL, color="grey", lw=0.8, ls="--", label=f"ξ level {XI_LEVEL:g}")
    ax.legend(fontsize=7)
    ax.set(xlabel="input distance 1 − cos(x₁, x₂)", ylabel="within-class sign stiffness")
    fig.colorbar(sm, ax=ax, label="η")
    return fig


RULES = (("stopper", "stiffness stopper"), ("fixed_epoch", "fixed epoch"), ("patience", "val-loss patience"))


def fig_baselines(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """The stopper against its registered baselines, per trial (lines join a
    trial's three rules): |stop − onset| in epochs (left) and validation
    accuracy given up (right)."""
    if not table.has(VAL_LOSS, VAL_ACC, TV_SIGN_WITHIN):
        return None
    options = next(p.options for p in PLANS.values() if p.conjecture == "stiffness.stopper_vs_baselines")
    b = baselines_table(table, options)
    if "stopper_error" not in b:
        return None
    b = b.dropna(subset=["stopper_error"])
    fig = Figure(figsize=(7.2, 3.2), dpi=DPI, layout="constrained")
    x = np.arange(len(RULES))
    for ax, (score, label) in zip(fig.subplots(1, 2), (("error", "|stop − onset| (epochs)"),
                                                        ("acc", "val acc given up"))):
        y = b[[f"{r}_{score}" for r, _ in RULES]].to_numpy(float)
        ax.plot(x, y.T, color="grey", lw=0.5, alpha=0.5)
        ax.plot(x, y.mean(axis=0), "ko-", lw=1.5, label="mean")
        ax.set_xticks(x, [f"{name}" for _, name in RULES], fontsize=7)
        ax.set(ylabel=label)
    fig.suptitle(f"n = {len(b)} trials; fixed epoch {options['fixed_epoch']}, "
                 f"patience {options['es_patience']}", fontsize=8)
    return fig
