"""What a probe declares when it registers: its end-of-trial summaries and
its headline columns; the generic trial sink knows no metric name."""
from __future__ import annotations

import math

import numpy as np

from dynamics_core import measure
from dynamics_core.config import ProbesConfig
from dynamics_core.measure import Peak
from dynamics_core.probes.breakeven import saturation_breakeven
from sweeps.trial import TrialSink


class FakeRun:
    def __init__(self, history=None):
        self.history = history or {}
        self.logged: list[tuple[dict, int]] = []

    def log_metrics(self, metrics, step):
        self.logged.append((dict(metrics), step))


def _peaked_by_name(series: dict[str, dict[int, float]]) -> dict[str, float]:
    """The summary as TrialSink computed it when it named λ_H¹ and λ_K¹ (PEAKED)."""
    out = {}
    for key in ("hessian/top", "gradcov/top"):
        s = series.get(key, {})
        steps = sorted(t for t in s if s[t] == s[t])
        if not steps:
            continue
        top = max(steps, key=lambda t: s[t])
        out[f"{key}_max"], out[f"{key}_argmax_step"] = s[top], float(top)
        step, reached = saturation_breakeven(steps, [s[t] for t in steps])
        if reached and step is not None:
            out[f"{key}_breakeven_step"] = float(step)
    return out


def _curves(seed: int) -> dict[str, dict[int, float]]:
    rng = np.random.default_rng(seed)
    steps = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256]
    hump = [float(v) for v in 30 * np.minimum(np.arange(10) / 5, 1.0) + rng.normal(0, 0.3, 10)]
    flat = [float(v) for v in rng.normal(5, 0.1, 10)]
    flat[3] = math.nan
    return {"hessian/top": dict(zip(steps, hump)), "gradcov/top": dict(zip(steps, flat)),
            "gradcov_mb/top": dict(zip(steps, flat)), "train/loss": dict(zip(steps, flat))}


def test_the_declared_summaries_are_the_named_ones():
    for seed in range(5):
        curves = _curves(seed)
        # half of each series is the resumed run's history, the rest is logged now
        history = {k: [(t, v) for t, v in s.items() if t < 8] for k, s in curves.items()}
        sink = TrialSink(FakeRun(history), session=None)
        for t in sorted(next(iter(curves.values()))):
            if t >= 8:
                sink.log_metrics({k: s[t] for k, s in curves.items()}, t)
        got = sink.summary()
        assert got == _peaked_by_name(curves) and list(got) == list(_peaked_by_name(curves))
        assert "hessian/top_breakeven_step" in got or seed       # the hump saturates


def test_summaries_come_from_the_enabled_probes():
    assert measure.probe_summaries(ProbesConfig()) == [Peak("hessian/top"), Peak("gradcov/top")]
    assert measure.probe_summaries(ProbesConfig(hessian=False)) == [Peak("gradcov/top")]
    assert measure.probe_summaries(ProbesConfig(hessian=False, gradcov=False)) == []
    sink = TrialSink(FakeRun(), session=None, summaries=measure.probe_summaries(ProbesConfig(hessian=False)))
    sink.log_metrics({"hessian/top": 3.0, "gradcov/top": 2.0}, 5)
    assert sink.summary() == {"gradcov/top_max": 2.0, "gradcov/top_argmax_step": 5.0}


def test_columns_come_from_the_enabled_probes():
    assert measure.probe_columns(ProbesConfig()) == [("hessian/top", "λ_H¹"), ("gradcov/top", "λ_K¹")]
    assert measure.probe_columns(ProbesConfig(hessian=False), ProbesConfig()) == \
        [("gradcov/top", "λ_K¹"), ("hessian/top", "λ_H¹")]
    assert measure.probe_columns(ProbesConfig(hessian=False, gradcov=False)) == []


def test_a_probe_registers_its_summaries_and_columns(monkeypatch):
    monkeypatch.setattr(measure.registry, "_REGISTRY", dict(measure.registry._REGISTRY))   # undone after

    class Top:
        name = "probes.declared_toy"

        def __init__(self, cfg, probes):
            pass

    measure.register_probe("declared_toy", Top, summaries=[Peak("declared_toy/top")],
                           columns={"declared_toy/top": "toy¹"})
    cfg = ProbesConfig(hessian=False, extra=("declared_toy",))
    assert measure.probe_summaries(cfg) == [Peak("gradcov/top"), Peak("declared_toy/top")]
    assert measure.probe_columns(cfg) == [("gradcov/top", "λ_K¹"), ("declared_toy/top", "toy¹")]
    assert measure.probe("declared_toy").factory is Top
    sink = TrialSink(FakeRun(), session=None)           # no summaries given: every registered probe's
    sink.log_metrics({"declared_toy/top": 1.5}, 3)
    assert sink.summary() == {"declared_toy/top_max": 1.5, "declared_toy/top_argmax_step": 3.0}


def test_a_family_in_its_own_file_registers_itself_and_runs_from_its_flag(mnist1d_cache):
    """gradcov_mb lives in one measure file (its math in dynamics_core/probes/):
    the package imports it, no import line names it; its flag still switches it on."""
    from test_hooks import TOTAL, run, trial

    assert measure.get("gradcov_mb").__module__ == "dynamics_core.measure.gradcov_mb"
    cfg = trial({"gradcov_mb": True, "gradcov_mb_batches": 2, "gradcov_mb_size": 8})
    _, sink = run(cfg, mnist1d_cache)
    steps = [s for s, _ in sink.series("gradcov_mb/top")]
    assert steps == list(range(0, TOTAL + 1, 2))
    assert all(v > 0 for _, v in sink.series("gradcov_mb/trace"))
