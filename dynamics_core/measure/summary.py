"""What a trial logs once at its end about a probe's series: its `Summary`s.

A probe declares them when it registers (`register_probe(name, factory,
summaries=[Peak("hessian/top")])`); the trial's sink (`sweeps.trial.TrialSink`)
keeps the series they read and logs what they return, knowing no metric name.
A summary sees a series' whole history, a resumed trial's earlier values too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol

Series = Mapping[int, float]        # step -> value


class Summary(Protocol):
    """`keys`: the metric series it reads; called with them (step -> value,
    each possibly empty), it returns the summary metrics to log."""

    keys: tuple[str, ...]

    def __call__(self, series: Mapping[str, Series]) -> dict[str, float]: ...


@dataclass(frozen=True)
class Peak:
    """`<key>_max`, `<key>_argmax_step` and, once the series saturates,
    `<key>_breakeven_step` (`probes.saturation_breakeven`) of one series;
    NaN values are no peak, an empty series gives nothing."""

    key: str

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,)

    def __call__(self, series: Mapping[str, Series]) -> dict[str, float]:
        from dynamics_core.probes.breakeven import saturation_breakeven

        values = series.get(self.key, {})
        steps = sorted(s for s in values if values[s] == values[s])      # NaN: not a peak
        if not steps:
            return {}
        top = max(steps, key=lambda s: values[s])
        out = {f"{self.key}_max": values[top], f"{self.key}_argmax_step": float(top)}
        step, reached = saturation_breakeven(steps, [values[s] for s in steps])
        if reached and step is not None:
            out[f"{self.key}_breakeven_step"] = float(step)
        return out
