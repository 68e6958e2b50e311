"""Break-even detectors on constructed sequences; timeline statistics."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dynamics_core.probes import (distance_from_init, gradient_norm, saturation_breakeven,
                                  sign_flip_fraction, stability_breakeven)

STEPS = [0, 10, 20, 40, 80, 160]


def test_stability_full_batch_is_two_over_lr():
    lam = [0.5, 1.0, 19.0, 20.0, 25.0, 3.0]
    assert stability_breakeven(STEPS, lam, lr=0.1) == 40
    assert stability_breakeven(STEPS, lam, lr=0.01) is None
    # per-step schedules: η·λ = 0.05, 0.1, 1.9, 1.0, 2.5 → step 80; 2.09 at step 20
    assert stability_breakeven(STEPS, lam, lr=[0.1, 0.1, 0.1, 0.05, 0.1, 0.1]) == 80
    assert stability_breakeven(STEPS, lam, lr=[0.1, 0.1, 0.11, 0.1, 0.1, 0.1]) == 20


def test_stability_with_gradient_noise():
    # η = 0.1, S = 1, N = 101: (N−S)/(S(N−1)) = 1, so c = 0.01·s² and the
    # high-curvature branch fires at ηλ ≥ 1 + √(1 − c)
    lam = [1.0, 5.0, 10.0, 15.0, 17.0, 12.0]
    assert stability_breakeven(STEPS, lam, 0.1, batch_size=1, n_train=101, s=9.0) == 40  # λ ≥ 14.36
    assert stability_breakeven(STEPS, lam, 0.1, batch_size=1, n_train=101, s=8.0) == 80  # λ ≥ 16
    assert stability_breakeven(STEPS, [15.0] * 6, 0.1, 1, 101, s=[0, 8, 9, 9, 9, 9]) == 20
    # full batch (S = N) removes the noise term: λ ≥ 2/η = 20 never happens
    assert stability_breakeven(STEPS, lam, 0.1, batch_size=101, n_train=101, s=100.0) is None
    # flat or negative curvature with noise: (1 − ηλ)² + c ≥ 1 holds, but it is
    # the diffusive low branch, not a break-even point
    assert stability_breakeven(STEPS, [1.0] * 6, 0.1, 1, 101, s=9.0) is None
    assert stability_breakeven(STEPS, [-5.0] * 6, 0.1, 1, 101, s=0.0) is None


def test_saturation_step_exact():
    values = [1.0, 2.0, 4.0, 8.0, 8.1, 8.2, 8.2, 7.0, 6.0]
    steps = list(range(0, 90, 10))
    # t=3: running max 8 → 8.2 three measurements later, growth 0.2 ≤ 0.05·8
    assert saturation_breakeven(steps, values, window=3, eps=0.05) == (30, True)
    # window 1, eps 0.01: 8→8.1 and 8.1→8.2 grow by more than 1 %, 8.2→8.2 does not
    assert saturation_breakeven(steps, values, window=1, eps=0.01) == (50, True)
    assert saturation_breakeven(steps, [2.0 ** i for i in range(9)]) == (None, False)
    with_nan = [np.nan, 1.0, 1.5, 2.0, 2.0, 2.0]
    # NaN ignored: v0 = 1 (index 1), risen from index 2; t=3: 2 → 2 over 2 measurements
    assert saturation_breakeven(range(6), with_nan, window=2) == (3, True)
    assert saturation_breakeven(range(3), [1.0, 2.0, 3.0], window=3) == (None, False)


def test_saturation_waits_for_the_rise():
    """Log-spaced probes: a flat (even slightly dipping) start must not count as
    saturation; the break-even point is where the rise saturates."""
    steps = [0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233]
    values = [5.0, 4.9, 5.0, 4.95, 5.1, 7.0, 12.0, 18.0, 20.0, 20.5, 20.6, 15.0, 10.0]
    # the shipped rule fired at step 0 here (running max 5.0 → 5.0 over 3 probes)
    # rise: first running max > 5·1.05 is 7.0 at step 8; saturation: t=34, 20 → 20.6 ≤ 1
    assert saturation_breakeven(steps, values, window=3, eps=0.05) == (34, True)
    # a flat sequence never rises: no break-even point
    assert saturation_breakeven(range(8), [3.0] * 8) == (None, False)
    assert saturation_breakeven(range(8), [3.0, 3.1, 2.9, 3.05, 3.0, 3.1, 3.0, 2.8]) == (None, False)
    assert saturation_breakeven(range(4), [np.nan] * 4) == (None, False)
    # a rise in the first interval: the search starts there, not earlier
    assert saturation_breakeven(range(6), [1.0, 2.0, 2.0, 2.05, 2.05, 2.0]) == (1, True)
    # a rise that is still going at the last measurement has not saturated
    assert saturation_breakeven(range(6), [1.0, 1.0, 1.0, 1.0, 2.0, 4.0]) == (None, False)


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def test_distance_and_sign_flips():
    model = tiny()
    init = [p.detach().clone() for p in model.parameters()]
    named = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert distance_from_init(model, init) == 0.0
    with torch.no_grad():
        model[0].weight[0, 0] = -init[0][0, 0]       # one sign flip
        model[2].bias.add_(torch.tensor([3.0, 4.0]))  # distance 5 from this entry
    flipped = 2 * abs(init[0][0, 0].item())
    assert distance_from_init(model, init) == pytest.approx(math.hypot(flipped, 5.0))
    assert distance_from_init(model, named) == pytest.approx(math.hypot(flipped, 5.0))
    total = sum(p.numel() for p in model.parameters())
    bias_flips = int(((init[3] + torch.tensor([3.0, 4.0])).sign() != init[3].sign()).sum())
    assert sign_flip_fraction(model, init) == pytest.approx((1 + bias_flips) / total)
    assert sign_flip_fraction([torch.tensor([1.0, -2.0, 0.0, 3.0])],
                              [torch.tensor([2.0, 2.0, 1.0, 3.0])]) == 0.5


def test_gradient_norm_matches_autograd_and_leaves_grad():
    model = tiny()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 2, (8,))
    g = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    expected = math.sqrt(sum((t ** 2).sum().item() for t in g))
    assert all(p.grad is None for p in model.parameters())
    assert gradient_norm(model, F.cross_entropy, x, y) == pytest.approx(expected, rel=1e-12)
    assert all(p.grad is None for p in model.parameters())
    assert gradient_norm(list(g)) == pytest.approx(expected, rel=1e-12)
    assert gradient_norm(torch.cat([t.reshape(-1) for t in g])) == pytest.approx(expected)


def test_stability_rule_is_the_high_curvature_branch():
    """With x = ηλ and c = s²η²(N−S)/(S(N−1)): fires iff x ≥ 1 + √(1 − c) for
    c ≤ 1, and iff x ≥ 1 for c > 1 (noise alone unstable)."""
    eta, S, N = 0.1, 8, 1001                       # (N − S)/(S(N − 1)) = 993/8000
    factor = eta ** 2 * (N - S) / (S * (N - 1))
    for c in (0.0, 0.05, 0.5, 0.99, 1.0, 1.5, 4.0):
        s = math.sqrt(c / factor)
        limit = 1 + math.sqrt(max(0.0, 1 - c))
        for x in np.linspace(-1, 2.5, 36):
            if abs(x - limit) < 1e-9 or abs(x - 1) < 1e-9:
                continue                           # exactly on a boundary: rounding decides
            fired = stability_breakeven([0], [x / eta], eta, batch_size=S, n_train=N, s=s) == 0
            assert fired == (x >= limit if c <= 1 else x >= 1), (c, x)


# ------------------------------------------------ the probe cadence (log_start)
def test_log_grid_from_a_later_start_exact_steps():
    from dynamics_core.config import ProbesConfig
    from dynamics_core.hooks import log_spaced_steps
    from dynamics_core.measure.base import probe_schedule

    # geomspace(10, 1000, 4) = 10, 46.4, 215.4, 1000
    assert log_spaced_steps(1000, 4, start=10) == [0, 10, 46, 215, 1000]
    assert log_spaced_steps(5, 3, start=10) == [0, 5]                  # start capped at the total
    assert log_spaced_steps(3000, 16, start=1) == log_spaced_steps(3000, 16)   # the default grid
    cfg = ProbesConfig(schedule={"kind": "log", "points": 4, "log_start": 10})
    assert sorted(probe_schedule(cfg).resolve(1000, 10)) == [0, 10, 46, 215, 1000]
    assert ProbesConfig().schedule.log_start == 1
