"""Drawing and saving the figures of a set of experiments. The figures
themselves live with their experiment (`sweeps/experiments/<line of work>`),
what they share in `sweeps.plotting`.

Every figure function takes a `SweepTable` (and optional `Sources` for bulky
artifacts) and returns a matplotlib `Figure`, or None when the sweep has no
data for it.

    figs = make_figures(table, ["breakeven"])
    paths = save_figures(figs, "runs/report/breakeven")        # PNGs, dpi 100
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from matplotlib.figure import Figure

from sweeps import experiments
from sweeps.experiments import Sources
from sweeps.plotting import DPI
from sweeps.table import SweepTable


def make_figures(table: SweepTable, experiment_names: Iterable[str] | None = None,
                 sources: Sources | None = None) -> dict[str, Figure]:
    """{"<experiment>__<file>": Figure} for the named experiments (all when None);
    figures without data are skipped. Unknown names: KeyError listing the valid ones."""
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
