"""SGD on stacked parameters: one update for K members, each with its own
learning rate, momentum and weight decay.

Every parameter tensor has the member axis first, shape (K, *shape). The
arithmetic is that of `torch.optim.SGD`'s single-tensor step (dampening 0),
written with per-member factors of shape (K, 1, …, 1):

    d = g + wd·p                      (when some member has wd ≠ 0)
    b = clone(d) the first time, else μ·b + d
    d = d + μ·b (nesterov) or b       (when some member has μ ≠ 0)
    p = p + (−η)·d

`x.addcmul(y, f)` computes x + y·f, the same float32 operations as
`x.add(y, alpha=f)` with a scalar f, so a member's update is the solo
optimizer's update bit for bit. A member whose own wd or μ is 0 while others'
is not gets g + p·0 or 0·b + d, equal in value to skipping the term (the sign
of a zero may differ, which no later update can tell apart).
"""
from __future__ import annotations

import torch


class StackedSGD:
    def __init__(self, params: dict[str, torch.Tensor], nesterov: bool = False):
        self.params = params
        self.nesterov = nesterov
        self.buffers: dict[str, torch.Tensor] | None = None
        self._factors: dict[tuple, torch.Tensor] = {}   # schedules change rarely: reuse

    def _factor(self, values: list[float], like: torch.Tensor) -> torch.Tensor:
        key = (tuple(values), like.ndim)
        if key not in self._factors:
            if len(self._factors) > 64:
                self._factors.clear()
            self._factors[key] = torch.tensor(values, dtype=like.dtype, device=like.device).view(
                -1, *([1] * (like.ndim - 1)))
        return self._factors[key]

    @torch.no_grad()
    def step(self, grads: dict[str, torch.Tensor], lr: list[float], momentum: list[float],
             weight_decay: list[float]) -> None:
        decay, with_momentum = any(w != 0 for w in weight_decay), any(m != 0 for m in momentum)
        first = self.buffers is None
        if with_momentum and first:
            self.buffers = {}
        for name, p in self.params.items():
            d = grads[name]
            if decay:
                d = d.addcmul(p, self._factor(weight_decay, p))
            if with_momentum:
                mu = self._factor(momentum, p)
                if first:
                    self.buffers[name] = d.clone()
                else:
                    self.buffers[name].mul_(mu).add_(d)
                b = self.buffers[name]
                d = d.addcmul(b, mu) if self.nesterov else b
            p.addcmul_(d, self._factor([-x for x in lr], p))

    def keep(self, rows: torch.Tensor) -> None:
        """Drop members: keep the momentum buffers of the member rows `rows`."""
        self._factors.clear()
        if self.buffers is not None:
            self.buffers = {k: v.index_select(0, rows) for k, v in self.buffers.items()}

    def reset(self) -> None:
        """A fresh optimizer (an IMP level's start): no momentum buffers."""
        self.buffers = None

    def state_like(self, name: str) -> list[torch.Tensor]:
        """The state tensors shaped like parameter `name` (its momentum buffer, once there is one)."""
        return [self.buffers[name]] if self.buffers is not None else []

    def state_dict(self) -> dict:
        return {"momentum": self.buffers}

    def load_state_dict(self, params: dict[str, torch.Tensor], state: dict) -> None:
        """Go on from `state_dict()` with the (restored) stacked `params`."""
        device = next(iter(params.values())).device
        self.params = params
        self.buffers = None if state["momentum"] is None else {k: v.to(device) for k, v in state["momentum"].items()}
