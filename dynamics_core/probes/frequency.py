"""Frequency principle (Xu, Zhang, Xiao 2019; Rahaman et al. 2019).

Inputs are projected on the first principal direction p₁ of the training
inputs, z_j = x_j·p₁ (uncentred: a shift of z only multiplies every F(k) by
the same phase, so Δ_F is unchanged). The nonuniform DFT per output dimension
is F[y](k) = (1/n) Σ_j y_j exp(−2πi k z_j). Labels and outputs must be in the
same representation: int labels are one-hot encoded with the outputs' width,
and the caller passes softmax probabilities for classification.
All functions accept numpy arrays or torch tensors and return numpy.
"""
from __future__ import annotations

import numpy as np

from .modes import to_numpy


def _f64(x) -> np.ndarray:
    return to_numpy(x).astype(np.float64)


def _as_targets(targets, width: int) -> np.ndarray:
    t = to_numpy(targets)
    if t.ndim == 1 and np.issubdtype(t.dtype, np.integer):
        return np.eye(width)[t]
    t = t.astype(np.float64)
    return t[:, None] if t.ndim == 1 else t


def _2d(x) -> np.ndarray:
    x = _f64(x)
    return x[:, None] if x.ndim == 1 else x.reshape(len(x), -1)


def pc1_projection(train_inputs) -> tuple[np.ndarray, np.ndarray]:
    """(p₁, z): the unit top principal direction of the flattened, centred
    inputs (sign fixed so its largest-magnitude entry is positive) and the
    projections z = x·p₁ of the inputs themselves. Project other inputs with
    `x.reshape(len(x), -1) @ p1`."""
    x = _2d(train_inputs)
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    p1 = vt[0]
    p1 = p1 * np.sign(p1[np.argmax(np.abs(p1))])
    return p1, x @ p1


def nudft(values, projections, frequencies) -> np.ndarray:
    """(m, d) complex array F(k) = (1/n) Σ_j y_j exp(−2πi k z_j)."""
    y, z = _2d(values), _f64(projections).reshape(-1)
    k = _f64(frequencies).reshape(-1)
    return np.exp(-2j * np.pi * np.outer(k, z)) @ y / len(z)


def default_grid(projections, points: int = 201) -> np.ndarray:
    """Frequencies m/L, m = 0 … points−1, L = (max z − min z)·n/(n−1) the
    period of n evenly spread points: the DFT's natural resolution (for evenly
    spread z the sidelobes vanish there)."""
    z = _f64(projections).reshape(-1)
    span = float(z.max() - z.min()) * len(z) / max(len(z) - 1, 1) or 1.0
    return np.arange(points) / span


def label_peaks(targets_onehot, projections, num: int = 4, grid=None,
                min_rel: float = 1e-6, min_sep: int | None = None) -> np.ndarray:
    """The first `num` local maxima (interior points of `grid`) of ‖F[y](k)‖
    (norm over output dims), in increasing frequency. Maxima lower than
    `min_rel` times the largest value on the grid (k = 0 excluded) are
    round-off, not peaks. Int labels are one-hot encoded.

    `min_sep` (grid bins, ≥ 1) picks separated peaks instead. k = 0 is the
    labels' mean, not a frequency, so it is no neighbour: the first bin
    above it is a maximum when it exceeds the next (on real data the label
    spectrum often falls from k = 0 without a local maximum in its low
    part, which the default rule then misses). The maxima are taken from the
    highest down, each kept only when it lies `min_sep` bins or more from
    every one kept before (a noise bump beside a real peak yields to it, as
    in `scipy.signal.find_peaks(distance=)`); then the first `num` in
    increasing frequency. None: the default rule above."""
    y = to_numpy(targets_onehot)
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        y = np.eye(int(y.max()) + 1)[y]
    grid = default_grid(projections) if grid is None else _f64(grid).reshape(-1)
    a = np.linalg.norm(nudft(y, projections, grid), axis=1)
    floor = min_rel * np.max(a[grid != 0], initial=0.0)
    if min_sep is None:
        inner = a[1:-1]
        peaks = np.flatnonzero((inner > a[:-2]) & (inner >= a[2:]) & (inner > floor)) + 1
        return grid[peaks[:num]]
    if min_sep < 1:
        raise ValueError(f"min_sep must be >= 1 bin, got {min_sep}")
    left = np.r_[-np.inf, a[:-1]]
    left[grid == 0] = np.nan
    left[np.r_[False, grid[:-1] == 0]] = -np.inf          # the bin after k = 0
    cand = np.flatnonzero((a[:-1] > left[:-1]) & (a[:-1] >= a[1:]) & (a[:-1] > floor) & (grid[:-1] != 0))
    kept: list[int] = []
    for i in cand[np.argsort(-a[cand], kind="stable")]:
        if all(abs(int(i) - j) >= min_sep for j in kept):
            kept.append(int(i))
    return grid[np.sort(np.asarray(kept, dtype=int))[:num]]


def grid_step(projections) -> float:
    """The spacing 1/L of `default_grid` (one bin)."""
    return float(default_grid(projections, points=2)[1])


def frequency_errors(outputs, targets, projections, frequencies,
                     magnitude: bool = False) -> np.ndarray:
    """Δ_F(k) = ‖F[y](k) − F[T](k)‖ / ‖F[y](k)‖ per frequency (vector norm over
    output dims). `magnitude=True` compares |F| per dimension instead, as the
    reference code did: ‖ |F[y]| − |F[T]| ‖ / ‖ |F[y]| ‖."""
    out = _2d(outputs)
    y = _as_targets(targets, out.shape[1])
    fy, ft = nudft(y, projections, frequencies), nudft(out, projections, frequencies)
    if magnitude:
        fy, ft = np.abs(fy), np.abs(ft)
    return np.linalg.norm(fy - ft, axis=1) / np.linalg.norm(fy, axis=1)


def _sq_dists(inputs) -> np.ndarray:
    x = _2d(inputs)
    sq = (x * x).sum(axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)


def _smoother(d2: np.ndarray, width: float) -> np.ndarray:
    logw = -d2 / (2.0 * width ** 2)
    w = np.exp(logw - logw.max(axis=1, keepdims=True))
    return w / w.sum(axis=1, keepdims=True)


def gaussian_smooth(values, inputs, width: float) -> np.ndarray:
    """Nadaraya–Watson smoothing in input space: row i is
    Σ_j y_j G(x_i − x_j) / Σ_j G(x_i − x_j), G(d) = exp(−‖d‖²/(2·width²))."""
    return _smoother(_sq_dists(inputs), width) @ _2d(values)


def nearest_neighbour_scale(inputs) -> float:
    """The median over inputs of the distance to the nearest other input (flattened)."""
    d2 = _sq_dists(inputs)
    np.fill_diagonal(d2, np.inf)
    return float(np.median(np.sqrt(d2.min(axis=1))))


def gaussian_filters(inputs, widths) -> np.ndarray:
    """The smoothing matrices of `gaussian_smooth`, one per width, (W, n, n):
    `low_high_errors(..., filters=)` reuses them when the inputs are fixed."""
    d2 = _sq_dists(inputs)
    return np.stack([_smoother(d2, w) for w in _f64(widths).reshape(-1)])


def low_high_errors(outputs, targets, inputs, widths, *,
                    filters: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Filter variant: for each kernel width δ (the Gaussian's standard
    deviation in input space; Xu et al. parametrise by the variance, pass
    √δ to match), low = Gaussian-smoothed, high = rest, for labels y and
    outputs T; e_low = ‖y_low − T_low‖/‖y_low‖, e_high likewise (Frobenius
    norms over examples and output dims). `filters`: `gaussian_filters(inputs,
    widths)` computed before (then `inputs` is not read)."""
    out = _2d(outputs)
    y = _as_targets(targets, out.shape[1])
    widths = _f64(widths).reshape(-1)
    if filters is None:
        filters = gaussian_filters(inputs, widths)
    elif len(filters) != len(widths):
        raise ValueError(f"{len(filters)} filters for {len(widths)} widths")
    e_low, e_high = [], []
    for k in filters:
        y_low, t_low = k @ y, k @ out
        y_high, t_high = y - y_low, out - t_low
        e_low.append(np.linalg.norm(y_low - t_low) / np.linalg.norm(y_low))
        e_high.append(np.linalg.norm(y_high - t_high) / np.linalg.norm(y_high))
    return {"widths": widths, "e_low": np.array(e_low), "e_high": np.array(e_high)}
