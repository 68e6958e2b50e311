"""Figure plumbing: the helpers every experiment's figures share, and
drawing / saving the figures of a set of experiments. The figures themselves
live with their experiment (`sweeps/experiments/<line of work>.py`).

Every figure function takes a `SweepTable` (and optional `Sources` for bulky
artifacts) and returns a matplotlib `Figure`, or None when the sweep has no
data for it. Figures are built with the object API (`matplotlib.figure.Figure`,
Agg canvas): no pyplot, no global state, nothing shown on screen.

    figs = make_figures(table, ["breakeven"])
    paths = save_figures(figs, "runs/report/breakeven")        # PNGs, dpi 100
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from matplotlib import cm, colors
from matplotlib.figure import Figure

DPI = 100


# ------------------------------------------------------------------ helpers
def finished_runs(table: Any) -> pd.DataFrame:
    return table.runs[table.runs["status"].astype(str) == "finished"]


def has_metrics(table: Any, *keys: str) -> bool:
    return bool(set(keys) <= set(table.metrics["key"].unique()))


def lr_colors(values: Iterable[float]) -> tuple[Callable[[float], Any], cm.ScalarMappable]:
    """A log-scaled colour per learning rate, and the mappable for a colour bar."""
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0], dtype=float)
    lo, hi = (v.min(), v.max()) if v.size else (1e-3, 1.0)
    norm = colors.LogNorm(lo, hi if hi > lo else lo * 10)
    sm = cm.ScalarMappable(norm=norm, cmap="viridis")
    return (lambda x: sm.to_rgba(x)), sm


def mean_curve(table: Any, run_ids: Iterable[str], key: str) -> pd.Series:
    """Mean over runs of `key` at each step (steps shared by the runs)."""
    m = table.metrics
    rows = m[(m["key"] == key) & m["run_id"].isin(list(run_ids))]
    return rows.groupby("step")["value"].mean()


# ---------------------------------------------------------------- drawing
def make_figures(table: Any, experiment_names: Iterable[str] | None = None,
                 sources: Any = None) -> dict[str, Figure]:
    """{"<experiment>__<file>": Figure} for the named experiments (all when None);
    figures without data are skipped. Unknown names: KeyError listing the valid ones."""
    from sweeps import experiments

    chosen = [experiments.get(n) for n in (experiments.names() if experiment_names is None
                                           else experiment_names)]
    figs: dict[str, Figure] = {}
    for exp in chosen:
        for fname, func in exp.figures.items():
            fig = func(table, sources)
            if fig is not None:
                figs[fname] = fig
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
