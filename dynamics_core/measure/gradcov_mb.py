"""gradcov_mb/{top,trace,trace_over_top}: K in the mini-batch unit (`probes.gradcov_mb`).

The whole probe family in one file: its hook and its registration here, its
math in `dynamics_core/probes/minibatch.py`, imported from there (no export needed).
Its flag and settings (`gradcov_mb`, `gradcov_mb_batches`, `gradcov_mb_size`,
with its `--smoke` rule) stay `ProbesConfig` fields: specs name them and
stored run hashes include them.
"""
from __future__ import annotations

import torch

from dynamics_core.hooks import StepContext
from dynamics_core.measure.base import ProbeFamily
from dynamics_core.measure.registry import register_probe
from dynamics_core.probes.minibatch import minibatch_covariance

MB_KEYS = ("top", "trace", "trace_over_top")


class GradCovMinibatch(ProbeFamily):
    """gradcov_mb/{top,trace,trace_over_top}: K in the mini-batch unit.

    The covariance of M = gradcov_mb_batches mean gradients of mini-batches of
    S_K = gradcov_mb_size examples (`probes.minibatch_covariance`), from its
    own subset of M·S_K training examples drawn once per trial (seeded by
    probe_seed, in random order, so each batch is a random draw), whatever
    `gradcov_unit` says for `gradcov/*`. The break-even paper's unit: its λ_K¹
    is on the scale of one batch-S_K gradient (about the per-example λ_K¹ / S_K).
    """

    flag = "gradcov_mb"

    def __init__(self, cfg, probes):
        super().__init__(cfg, probes)
        need, data = cfg.gradcov_mb_batches * cfg.gradcov_mb_size, probes.data
        if need > data.n_train:
            raise ValueError(f"gradcov_mb needs gradcov_mb_batches x gradcov_mb_size = {need} "
                             f"training examples, the training set has {data.n_train}")
        g = torch.Generator().manual_seed(cfg.probe_seed * 1_000_003 + 2)
        idx = torch.randperm(data.n_train, generator=g)[:need].to(data.x_train.device)
        self.x, self.y = data.x_train[idx], data.y_train[idx]

    def __call__(self, ctx: StepContext) -> dict[str, float]:
        k = minibatch_covariance(ctx.model, ctx.loss_fn, self.x, self.y, self.cfg.gradcov_mb_size,
                                 bn_mode=self.cfg.bn_mode)
        return {f"gradcov_mb/{key}": float(k[key]) for key in MB_KEYS}


register_probe(GradCovMinibatch.flag, GradCovMinibatch)
