"""gradcov/{top,trace,smallest_nonzero,trace_over_top,smallest_over_top}: the spectrum of K
(per example, or as `gradcov_unit` says). K of mini-batch mean gradients (the
mini-batch unit) is `gradcov_mb.py`."""
from __future__ import annotations

from dynamics_core import probes as P
from dynamics_core.hooks import StepContext
from dynamics_core.measure.base import ProbeFamily
from dynamics_core.measure.registry import register_probe
from dynamics_core.measure.summary import Peak

KEYS = ("top", "trace", "smallest_nonzero", "trace_over_top", "smallest_over_top")


class GradCov(ProbeFamily):
    """Per example: from the round's shared Gram; per minibatch: from its gradients."""

    flag = "gradcov"

    def __call__(self, ctx: StepContext) -> dict[str, float]:
        r = self.probes.at(ctx)
        if self.cfg.gradcov_unit == "example":
            k = P.covariance_spectrum(gram=r.gram)
        else:
            k = P.covariance_spectrum(r.grads, unit=self.cfg.gradcov_unit, minibatch=self.cfg.gradcov_minibatch)
        return {f"gradcov/{key}": float(k[key]) for key in KEYS}


register_probe(GradCov.flag, GradCov, summaries=[Peak("gradcov/top")], columns={"gradcov/top": "λ_K¹"})

