"""Break-even point detectors (Jastrzebski et al. 2020), on logged sequences.

Stability: SGD with learning rate η and batch S out of N examples is unstable
along the top Hessian direction once
    (1 − ηλ_H¹)² + s²η²(N − S)/(S(N − 1)) ≥ 1,
where s² is the variance of the per-example curvatures h_i = eᵀH_i e along
that direction e (`sgd_noise.py` says why it is the curvatures, not the
gradients, and measures it). Without the noise term (full batch, or s/S/N
not given) this is λ_H¹ ≥ 2/η.
Only the high-curvature branch ηλ_H¹ ≥ 1 counts. With noise c > 0 the
inequality (1 − x)² + c ≥ 1 (x = ηλ) also holds for small x ≤ 1 − √(1 − c),
i.e. for nearly flat directions, where the noise alone makes the iterate
diffuse; taken literally the detector would then fire at the first
measurement (and for every λ ≤ 0). The break-even point is where growing
curvature meets the stability limit, x ≥ 1 + √(1 − c), so the criterion is
evaluated together with ηλ ≥ 1, the minimiser of its left side.

Saturation: the break-even point is where the early *rise* of λ_K¹ (or λ_H¹)
saturates. The search starts once the sequence has risen, i.e. at the first
measurement where the running maximum exceeds the first finite value by more
than a relative `eps`; from there, the first measurement after which the
running maximum grows by less than a relative `eps` over the next `window`
measurements is the saturation step. On log-spaced probes the first
measurements (steps 0, 1, 2, ...) sit on the flat start of the trajectory,
where the running max does not grow; without the rise condition the rule
would fire at step 0. A sequence that never rises, or whose rise has not
saturated by the last measurement, gives `reached=False`: no break-even point,
and the trajectory's maximum is not comparable with other trials'.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _per_step(x, n: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return np.full(n, float(a)) if a.ndim == 0 else a.reshape(-1)


def stability_breakeven(steps: Sequence[int], lam_h, lr, batch_size: int | None = None,
                        n_train: int | None = None, s=None) -> int | None:
    """First step satisfying the stability criterion, or None. `lr` and `s`
    may be scalars or per-step sequences (schedules); `s` is the square root
    of the per-example curvature variance s² (`sgd_noise`'s `s2`).

    The rule, with x = ηλ_H¹ and c = s²η²(N − S)/(S(N − 1)): the step fires
    when x ≥ 1 and (1 − x)² + c ≥ 1, i.e. x ≥ 1 + √(1 − c) for c ≤ 1 and
    x ≥ 1 for c > 1 (noise alone unstable: the first step with ηλ_H¹ ≥ 1);
    without s, S and N, x ≥ 2."""
    steps = list(steps)
    lam = _per_step(lam_h, len(steps))
    eta = _per_step(lr, len(steps))
    if len(lam) != len(steps) or len(eta) != len(steps):
        raise ValueError("steps, lam_h and lr must have the same length")
    lhs = (1.0 - eta * lam) ** 2
    if s is not None and batch_size is not None and n_train is not None:
        if n_train < 2:
            raise ValueError("n_train must be at least 2")
        sv = _per_step(s, len(steps))
        S, N = float(batch_size), float(n_train)
        lhs = lhs + sv ** 2 * eta ** 2 * (N - S) / (S * (N - 1))
        hit = (lhs >= 1.0) & (eta * lam >= 1.0)
    else:
        hit = eta * lam >= 2.0
    idx = np.flatnonzero(hit)
    return int(steps[idx[0]]) if idx.size else None


def saturation_breakeven(steps: Sequence[int], values, window: int = 3,
                         eps: float = 0.05) -> tuple[int | None, bool]:
    """(step, True) at the first index t ≥ r with M[t+window] − M[t] ≤ eps·|M[t]|,
    M the running max (NaN ignored) and r the first index where the value has
    risen, M[r] − v₀ > eps·|v₀| (v₀ the first finite value); (None, False) if
    the sequence never rises or no such t exists."""
    steps = list(steps)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(v) != len(steps):
        raise ValueError("steps and values must have the same length")
    if window < 1:
        raise ValueError("window must be at least 1")
    finite = np.flatnonzero(np.isfinite(v))
    if not finite.size:
        return None, False
    v0 = v[finite[0]]
    v = np.where(np.isnan(v), -np.inf, v)
    run = np.maximum.accumulate(v)
    risen = np.flatnonzero(run - v0 > eps * abs(v0))
    if not risen.size:
        return None, False
    for t in range(int(risen[0]), len(v) - window):
        if run[t + window] - run[t] <= eps * abs(run[t]):
            return int(steps[t]), True
    return None, False
