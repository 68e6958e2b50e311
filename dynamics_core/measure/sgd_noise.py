"""sgd_noise/{s2,curv_mean,grad_var,noise_term}: SGD noise along the top Hessian direction.

Measured on the curvature batch along this step's Lanczos eigenvector (the
`hessian` family runs first and leaves it in `ctx.cache`), by
`probes.sgd_noise`: s2 is s², the variance of the per-example curvatures
h_i = eᵀH_i e, the term of the break-even stability criterion;
curv_mean = mean h_i (= λ_H¹ up to the Lanczos tolerance); grad_var =
Var_i(g_i·e), the per-example gradient variance along e. noise_term is
s²η²(N − S)/(S(N − 1)) with this step's η, the training batch size S and
training-set size N: SGD is unstable along e once (1 − ηλ_H¹)² + noise_term ≥ 1
on the high-curvature branch (`probes.stability_breakeven`).
"""
from __future__ import annotations

from dynamics_core import probes as P
from dynamics_core.hooks import StepContext
from dynamics_core.measure.base import ProbeFamily
from dynamics_core.measure.curvature import TOP_VECTOR
from dynamics_core.measure.registry import register_probe


class SgdNoise(ProbeFamily):
    flag = "sgd_noise"

    def __call__(self, ctx: StepContext) -> dict[str, float]:
        if TOP_VECTOR not in ctx.cache:
            raise RuntimeError("sgd_noise needs this step's top Hessian eigenvector: "
                               "turn probes.hessian on (same schedule)")
        ps = self.probes
        out = P.sgd_noise(ctx.model, ctx.loss_fn, ps.xh, ps.yh, ctx.cache[TOP_VECTOR])
        S, N = ctx.batch_size, ps.data.n_train
        noise = out["s2"] * ctx.lr ** 2 * (N - S) / (S * (N - 1)) if N > 1 else 0.0
        return {**{f"sgd_noise/{k}": v for k, v in out.items()}, "sgd_noise/noise_term": noise}


register_probe(SgdNoise.flag, SgdNoise)
