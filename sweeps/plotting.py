"""What every experiment's figures share: the resolution and the learning-rate
colour scale. The figures live with their experiment; drawing and saving the
figures of a set of experiments is `sweeps.report`.

Figures are built with the object API (`matplotlib.figure.Figure`, Agg
canvas): no pyplot, no global state, nothing shown on screen.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
from matplotlib import cm, colors

DPI = 100


def lr_colors(values: Iterable[float]) -> tuple[Callable[[float], Any], cm.ScalarMappable]:
    """A log-scaled colour per learning rate, and the mappable for a colour bar."""
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0], dtype=float)
    lo, hi = (v.min(), v.max()) if v.size else (1e-3, 1.0)
    norm = colors.LogNorm(lo, hi if hi > lo else lo * 10)
    sm = cm.ScalarMappable(norm=norm, cmap="viridis")
    return (lambda x: sm.to_rgba(x)), sm
