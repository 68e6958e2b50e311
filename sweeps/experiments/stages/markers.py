"""The early-phase markers of one trial: pure functions of logged series.

Every marker is a time in optimizer steps with a flag saying how it was
read: `"seen"` (the event happened inside the run), `"budget"` (it never
happened: censored at the run's last step, never dropped) or `"before"`
(it had already happened at the first point the design looks at: the
onset sweep's first onset, the rewind sweep's k = 0; its time is that
point's place on the log axis, `first_position`). Each reader below is
one rule, written so that it can be checked by hand on a short series.

- `first_reaching`: the first step at which a series is ≥ a level (t_fit:
  accuracy on the training probe set).
- `half_change`: the first step at which the smoothed series has covered
  `frac` of the way from its first value to its extreme, the maximum or
  the minimum, whichever is farther (t_stiff, on the within − between class
  stiffness, which on this protocol falls: within-class gradients start
  aligned and decorrelate as the network fits).
- `interior_peak`: the step of the smoothed maximum; a maximum at the last
  measurement has not been passed and is censored at the budget (t_F).
- `crossing`: where a per-design-point gap (a deficit's cost, a pruned
  network's shortfall against dense) falls to a margin and stays there,
  interpolated on the log axis between the two design points around it
  (t_CP, t_IMP). The first design point at which the gap is within the
  margin and every later one is too decides the bracket; interpolation
  keeps the marker from sitting on the grid, which would bias it upward by
  up to one grid factor.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

SEEN, BUDGET, BEFORE = "seen", "budget", "before"


def _clean(steps: Any, values: Any) -> tuple[np.ndarray, np.ndarray]:
    s, v = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    order = np.argsort(s, kind="stable")
    s, v = s[order], v[order]
    keep = np.isfinite(v) & np.isfinite(s)
    return s[keep], v[keep]


def running_mean(values: Any, window: int) -> np.ndarray:
    """Centred moving average over `window` measurements (shorter at the ends)."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size == 0:
        return v
    kernel = np.ones(min(window, v.size))
    return np.convolve(v, kernel, "same") / np.convolve(np.ones(v.size), kernel, "same")


def first_reaching(steps: Any, values: Any, level: float, budget: float) -> tuple[float, str]:
    """The first step with value ≥ level; (budget, "budget") if none."""
    s, v = _clean(steps, values)
    hit = np.flatnonzero(v >= level)
    return (float(s[hit[0]]), SEEN) if hit.size else (float(budget), BUDGET)


def half_change(steps: Any, values: Any, budget: float, frac: float = 0.5,
                smooth: int = 3) -> tuple[float, str]:
    """First step where the smoothed series has covered `frac` of the way from its
    first value to its extreme (the maximum or the minimum, whichever lies farther
    from the first value); (budget, "budget") when it never moves."""
    s, v = _clean(steps, values)
    if v.size < 2:
        return float(budget), BUDGET
    sm = running_mean(v, smooth)
    lo, hi = sm.min() - sm[0], sm.max() - sm[0]
    change = hi if abs(hi) >= abs(lo) else lo
    if change == 0:
        return float(budget), BUDGET
    moved = (sm - sm[0]) / change
    return float(s[np.argmax(moved >= frac)]), SEEN


def interior_peak(steps: Any, values: Any, budget: float, smooth: int = 3) -> tuple[float, str]:
    """Step of the smoothed maximum; at the last measurement: (budget, "budget")."""
    s, v = _clean(steps, values)
    if v.size < 2:
        return float(budget), BUDGET
    i = int(np.argmax(running_mean(v, smooth)))
    return (float(budget), BUDGET) if i == v.size - 1 else (float(s[i]), SEEN)


def first_position(grid: Any) -> float:
    """Where the first design point sits on the log axis: itself, or half the
    first positive one when it is 0 (no log); 1 when none is positive."""
    g = np.sort(np.asarray(grid, dtype=float))
    positive = g[g > 0]
    if g[0] > 0:
        return float(g[0])
    return float(positive[0]) / 2 if positive.size else 1.0


def crossing(grid: Any, gap: Any, margin: float, budget: float) -> tuple[float, str]:
    """Where `gap` (one value per design point of `grid`) falls to `margin` for good.

    j = the first point from which every gap is ≤ margin. None: (budget,
    "budget"). j = 0: (first_position(grid), "before"). Else the crossing is
    interpolated linearly in the gap between points j − 1 and j, on the log
    axis of the grid (0 placed at `first_position`).
    """
    g, d = np.asarray(grid, dtype=float), np.asarray(gap, dtype=float)
    keep = np.isfinite(g) & np.isfinite(d)
    g, d = g[keep], d[keep]
    order = np.argsort(g, kind="stable")
    g, d = g[order], d[order]
    if g.size < 2:
        return float(budget), BUDGET
    within = d <= margin
    tail = np.flatnonzero(~within)
    j = 0 if tail.size == 0 else int(tail[-1]) + 1
    if j == g.size:
        return float(budget), BUDGET
    if j == 0:
        return first_position(g), BEFORE
    pos = np.log(np.where(g > 0, g, first_position(g)))
    frac = (d[j - 1] - margin) / (d[j - 1] - d[j])
    return float(math.exp(pos[j - 1] + frac * (pos[j] - pos[j - 1]))), SEEN
