"""Adam on stacked parameters: one update for K members, each with its own
learning rate and weight decay (the betas and eps are shared: `pack_rules`
keeps members with other betas apart).

Every parameter tensor has the member axis first, shape (K, *shape). The
arithmetic is that of `torch.optim.Adam`'s single-tensor step (the CPU
default; no amsgrad, no maximize), t the member's step count:

    g = g + wd·p                       (when some member has wd ≠ 0)
    m = lerp(m, g, 1 − β1)
    v = v·β2 + (1 − β2)·g·g
    d = sqrt(v) / sqrt(1 − β2^t) + eps
    p = p + ((−η / (1 − β1^t))·m) / d

The shared betas and eps enter as the same Python scalars torch passes; the
per-member factors (wd, sqrt(1 − β2^t), −η/(1 − β1^t)) are computed in double
as torch computes them and rounded to float32 once, in tensors of shape
(K, 1, …, 1). `x.addcmul(p, f)` is `x.add(p, alpha=f)`, `v / f` divides by
the float32 scalar, and `addcdiv_`'s kernel computes p + (value·m)/d, which
`p.add_(m.mul(f).div_(d))` rounds identically — so a member's update is the
solo optimizer's bit for bit (tests/test_packed_kinds.py checks it against
`torch.optim.Adam`).
"""
from __future__ import annotations

import torch


class StackedAdam:
    def __init__(self, params: dict[str, torch.Tensor], betas: tuple[float, float], eps: float = 1e-8):
        self.params = params
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.exp_avg: dict[str, torch.Tensor] | None = None
        self.exp_avg_sq: dict[str, torch.Tensor] | None = None
        self.steps: list[int] = [0] * len(next(iter(params.values())))   # per member row

    def _factor(self, values: list[float], like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, *([1] * (like.ndim - 1)))

    @torch.no_grad()
    def step(self, grads: dict[str, torch.Tensor], lr: list[float], momentum: list[float],
             weight_decay: list[float]) -> None:
        """`momentum` is not Adam's (β1 is): a solo Adam ignores `optim.momentum` too."""
        if self.exp_avg is None:
            self.exp_avg = {k: torch.zeros_like(p) for k, p in self.params.items()}
            self.exp_avg_sq = {k: torch.zeros_like(p) for k, p in self.params.items()}
        self.steps = [t + 1 for t in self.steps]
        decay = any(w != 0 for w in weight_decay)
        bc2_sqrt = [(1 - self.beta2 ** t) ** 0.5 for t in self.steps]
        step_size = [-(rate / (1 - self.beta1 ** t)) for rate, t in zip(lr, self.steps)]
        for name, p in self.params.items():
            g = grads[name]
            if decay:
                g = g.addcmul(p, self._factor(weight_decay, p))
            m, v = self.exp_avg[name], self.exp_avg_sq[name]
            m.lerp_(g, 1 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            denom = (v.sqrt() / self._factor(bc2_sqrt, p)).add_(self.eps)
            p.add_(m.mul(self._factor(step_size, p)).div_(denom))

    def keep(self, rows: torch.Tensor) -> None:
        """Drop members: keep the moments and step counts of the member rows `rows`."""
        self.steps = [self.steps[r] for r in rows.tolist()]
        if self.exp_avg is not None:
            self.exp_avg = {k: v.index_select(0, rows) for k, v in self.exp_avg.items()}
            self.exp_avg_sq = {k: v.index_select(0, rows) for k, v in self.exp_avg_sq.items()}

    def reset(self) -> None:
        """A fresh optimizer (an IMP level's start): no moments, step counts 0."""
        self.exp_avg = self.exp_avg_sq = None
        self.steps = [0] * len(self.steps)

    def state_like(self, name: str) -> list[torch.Tensor]:
        """The state tensors shaped like parameter `name` (its two moments, once there are any)."""
        return [self.exp_avg[name], self.exp_avg_sq[name]] if self.exp_avg is not None else []

    def state_dict(self) -> dict:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "steps": list(self.steps)}

    def load_state_dict(self, params: dict[str, torch.Tensor], state: dict) -> None:
        """Go on from `state_dict()` with the (restored) stacked `params`."""
        device = next(iter(params.values())).device
        self.params = params
        self.exp_avg, self.exp_avg_sq = ({k: v.to(device) for k, v in state[key].items()}
                                         if state[key] is not None else None
                                         for key in ("exp_avg", "exp_avg_sq"))
        self.steps = list(state["steps"])
