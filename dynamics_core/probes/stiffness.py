"""Stiffness (Fort et al. 2019): sign and cosine of per-example gradient pairs.

Pair rule. Within one set: all ordered pairs (i, j) with i ≠ j. The Gram is
symmetric, so every mean equals the mean over unordered pairs, and the class
matrix is symmetric, C(a, b) = C(b, a). Between two sets A and B: all |A|·|B|
pairs (x₁ ∈ A, x₂ ∈ B); C(a, b) has x₁ of class a in A and x₂ of class b in B.

A pair with a zero gradient has sign 0 and cosine 0. C(a, b) is NaN where no
pair exists; within = mean of the diagonal of C, between = mean of its
off-diagonal, both ignoring NaN. The products are taken in float64; they can
come precomputed as a Gram: GGᵀ within one set, or the Gram of the stacked
gradients [G; G_other] between two (`gram=`; the probe round builds one
Gram over train and validation gradients for K and all three pairs).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .modes import to_numpy
from .pergrad import LossFn, per_example_gradients


def _pair_matrices(g1: torch.Tensor | None, g2: torch.Tensor | None,
                   gram: torch.Tensor | None = None, n1: int | None = None):
    """(cos, sign, pair_mask) as float64 numpy arrays, n1×n2; from the rows of
    g1 and g2, or from a Gram: within one set g1 g1ᵀ, or (with `n1`, the
    rows of the first set) between the sets, the Gram of [g1; g2]."""
    if gram is not None:
        gram = gram.double()
        norms = gram.diagonal().clamp(min=0).sqrt()
        if n1 is None:
            dot, na, nb = gram, norms, norms
        else:
            dot, na, nb = gram[:n1, n1:], norms[:n1], norms[n1:]
    else:
        a = g1.double()
        b = a if g2 is None else g2.double()
        dot = a @ b.T
        na, nb = a.norm(dim=1), b.norm(dim=1)
    inv_a = torch.where(na > 0, 1.0 / torch.where(na > 0, na, 1.0), 0.0)
    inv_b = torch.where(nb > 0, 1.0 / torch.where(nb > 0, nb, 1.0), 0.0)
    cos = to_numpy(dot * inv_a[:, None] * inv_b[None, :])     # 0 where a gradient is zero
    sign = np.sign(to_numpy(dot))
    mask = np.ones(cos.shape, dtype=bool)
    if g2 is None and n1 is None:  # one set
        np.fill_diagonal(mask, False)
    return cos, sign, mask


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def class_matrix(values: np.ndarray, mask: np.ndarray, labels1, labels2,
                 num_classes: int) -> np.ndarray:
    """C(a, b) = mean of values over masked pairs with x₁ ∈ a, x₂ ∈ b (NaN if none)."""
    return _class_means(values[None], mask, labels1, labels2, num_classes)[0][0]


def _class_means(values: np.ndarray, mask: np.ndarray, labels1, labels2, num_classes: int):
    """class_matrix of each of the stacked (k, n1, n2) `values` over one
    mask, with the class sums (k, C, C) and pair counts (C, C) it divides."""
    y1 = np.eye(num_classes)[to_numpy(labels1).astype(int)]
    y2 = np.eye(num_classes)[to_numpy(labels2).astype(int)]
    w = mask.astype(np.float64)
    total, count = y1.T @ (values * w) @ y2, y1.T @ w @ y2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.where(count > 0, count, 1), np.nan), total, count


def within_between(c: np.ndarray) -> tuple[float, float]:
    off = ~np.eye(c.shape[0], dtype=bool)
    return _nanmean(np.diag(c).copy()), _nanmean(c[off])


def stiffness(model: nn.Module | None, loss_fn: LossFn | None, inputs, targets,
              num_classes: int, other=None, grads: torch.Tensor | None = None,
              other_grads: torch.Tensor | None = None, *,
              chunk_size: int | None = None, gram: torch.Tensor | None = None) -> dict:
    """Sign and cosine stiffness within the set, or between the set and
    `other=(inputs_b, targets_b)`. Returns floats `sign`, `cos`,
    `sign_within`, `sign_between`, `cos_within`, `cos_between` and the
    num_classes×num_classes arrays `class_sign`, `class_cos`. `gram`: the
    precomputed Gram of the per-example gradients (`per_example_gram`,
    `covariance.gram_matrix`) used instead of `grads`: GGᵀ of the set, or with
    `other`, of the set stacked over the other set. With precomputed
    gradients, `stiffness_from` says it shorter."""
    if gram is not None:
        if grads is not None or other_grads is not None:
            raise ValueError("give gram= or grads=, not both")
        return stiffness_from(targets, num_classes, gram=gram,
                              other_targets=None if other is None else other[1])
    if grads is None:
        grads = per_example_gradients(model, loss_fn, inputs, targets, chunk_size=chunk_size)
    if other is not None:
        if other_grads is None:
            other_grads = per_example_gradients(model, loss_fn, other[0], other[1],
                                                chunk_size=chunk_size)
        return stiffness_from(targets, num_classes, grads, other_grads=other_grads,
                              other_targets=other[1])
    if other_grads is not None:
        raise ValueError("other_grads needs other=(inputs_b, targets_b) for its labels")
    return stiffness_from(targets, num_classes, grads)


def stiffness_from(targets, num_classes: int, grads: torch.Tensor | None = None, *,
                   other_grads: torch.Tensor | None = None, other_targets=None,
                   gram: torch.Tensor | None = None) -> dict:
    """`stiffness` of precomputed per-example gradients: within one set
    (`grads`, or their Gram `gram`), or between it and another set
    (`other_grads` with their labels `other_targets`, or the Gram `gram` of
    the stacked gradients [G; G_other] with `other_targets`)."""
    if gram is not None:
        if grads is not None or other_grads is not None:
            raise ValueError("give gram= or grads=, not both")
        if other_targets is None:
            cos, sign, mask = _pair_matrices(None, None, gram)
            return _summary(cos, sign, mask, targets, targets, num_classes)
        n1 = len(targets)
        if gram.shape[0] != n1 + len(other_targets):
            raise ValueError(f"gram is {tuple(gram.shape)}, the stacked sets have "
                             f"{n1} + {len(other_targets)} examples")
        cos, sign, mask = _pair_matrices(None, None, gram, n1=n1)
        return _summary(cos, sign, mask, targets, other_targets, num_classes)
    if grads is None:
        raise ValueError("stiffness_from needs grads or gram")
    if (other_grads is None) != (other_targets is None):
        raise ValueError("other_grads and other_targets come together")
    cos, sign, mask = _pair_matrices(grads, other_grads)
    labels2 = targets if other_targets is None else other_targets
    return _summary(cos, sign, mask, targets, labels2, num_classes)


def _summary(cos, sign, mask, labels1, labels2, num_classes) -> dict:
    """The pair means and class matrices of sign and cosine: one pass over
    the pairs for both (class sums and counts; the overall mean is their sum)."""
    means, total, count = _class_means(np.stack([sign, cos]), mask, labels1, labels2, num_classes)
    out = {"sign": float(total[0].sum() / count.sum()), "cos": float(total[1].sum() / count.sum())}
    for name, c in (("sign", means[0]), ("cos", means[1])):
        out[f"class_{name}"] = c
        out[f"{name}_within"], out[f"{name}_between"] = within_between(c)
    return out


def input_distances(inputs, inputs_other=None) -> np.ndarray:
    """d = 1 − cos(x₁, x₂) of the flattened inputs, float64 n1×n2 (within one
    set when `inputs_other` is None). A zero input has cosine 0, so d = 1."""
    x1 = torch.as_tensor(inputs)
    x1 = x1.reshape(len(x1), -1)
    x2 = None if inputs_other is None else torch.as_tensor(inputs_other)
    x2 = None if x2 is None else x2.reshape(len(x2), -1)
    return 1.0 - _pair_matrices(x1, x2)[0]


def stiffness_by_distance(grads: torch.Tensor | None = None, inputs=None, grads_other=None,
                          inputs_other=None, targets=None, targets_other=None,
                          same_class_mask=None, bins=10, kind: str = "sign", *,
                          gram: torch.Tensor | None = None,
                          distances: np.ndarray | None = None, level: float = 0.0) -> dict:
    """Within-class stiffness binned by input distance d = 1 − cos(x₁, x₂)
    (inputs flattened; same pair rule as `stiffness`). Same-class pairs come
    from `targets`/`targets_other` or an explicit n1×n2 `same_class_mask`.
    The gradient products come from `grads` (and `grads_other`) or from their
    Gram `gram` (GGᵀ within one set; between two sets the Gram of the stacked
    [G; G_other], split after the rows of `targets` or of `distances`); the
    distances from `inputs` (and `inputs_other`) or precomputed
    (`distances`, n1×n2, `input_distances`: the probe inputs are fixed, so a
    caller measuring every round computes them once).
    `bins`: a count (equal width over the observed within-class distances)
    or an array of edges. Returns `edges`, `centers`, `count`, `sign`, `cos`
    (per bin, NaN where empty) and `xi`, the critical length: the distance at
    which the `kind` ("sign" | "cos") stiffness first crosses `level` (0:
    the paper's ξ), linearly interpolated between the centres of the last
    bin above it and the first at or below it (the first centre if the first
    bin is already ≤ `level`; NaN if it never crosses)."""
    between = grads_other is not None or inputs_other is not None or targets_other is not None
    if gram is not None:
        if grads is not None or grads_other is not None:
            raise ValueError("give gram= or grads=, not both")
        n1 = None
        if between:
            n1 = (len(targets) if targets is not None else
                  len(distances) if distances is not None else len(inputs))
        cos, sign, mask = _pair_matrices(None, None, torch.as_tensor(gram), n1=n1)
    elif grads is not None:
        cos, sign, mask = _pair_matrices(torch.as_tensor(grads),
                                         None if grads_other is None else torch.as_tensor(grads_other))
    else:
        raise ValueError("stiffness_by_distance needs grads or gram")
    if distances is None:
        if inputs is None:
            raise ValueError("give inputs or distances")
        distances = input_distances(inputs, inputs_other)
    dist = np.asarray(distances, dtype=np.float64)
    if dist.shape != cos.shape:
        raise ValueError(f"distances are {dist.shape}, the gradient pairs {cos.shape}")
    if same_class_mask is None:
        if targets is None:
            raise ValueError("give targets (and targets_other) or same_class_mask")
        t1 = to_numpy(targets)
        t2 = t1 if targets_other is None else to_numpy(targets_other)
        same_class_mask = t1[:, None] == t2[None, :]
    sel = mask & np.asarray(same_class_mask, dtype=bool)
    d = dist[sel]
    if np.ndim(bins) == 0:
        lo, hi = (d.min(), d.max()) if d.size else (0.0, 0.0)
        edges = np.linspace(lo, hi, int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=np.float64)
    idx = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, len(edges) - 2)
    inside = (d >= edges[0]) & (d <= edges[-1])
    nb = len(edges) - 1
    count = np.bincount(idx[inside], minlength=nb).astype(float)
    per = {}
    for name, values in (("sign", sign), ("cos", cos)):
        s = np.bincount(idx[inside], weights=values[sel][inside], minlength=nb)
        with np.errstate(invalid="ignore", divide="ignore"):
            per[name] = np.where(count > 0, s / np.where(count > 0, count, 1), np.nan)
    centers = (edges[:-1] + edges[1:]) / 2
    return {"edges": edges, "centers": centers, "count": count, **per,
            "xi": critical_length(centers, per[kind], level)}


def critical_length(centers: np.ndarray, values: np.ndarray, level: float = 0.0) -> float:
    """First crossing of `level` (default 0) by `values` over `centers`
    (NaN-valued bins skipped)."""
    ok = ~np.isnan(values)
    c, v = np.asarray(centers)[ok], np.asarray(values)[ok] - level
    for i in range(len(v)):
        if v[i] <= 0:
            if i == 0:
                return float(c[0])
            return float(c[i - 1] + (c[i] - c[i - 1]) * v[i - 1] / (v[i - 1] - v[i]))
    return float("nan")
