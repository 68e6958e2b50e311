"""Stoppers: pure rules that end a trial early from one metric's values at
its epoch ends, found by kind.

A spec switches one on (`stopper: {kind: stiffness, threshold: 0.45}`). A
kind is a frozen pydantic model of its settings that says

- `metric`: the key it reads from each epoch's report to Tune;
- `stop_index(series)`: the decision rule on that metric's values at
  successive epoch ends: the index of the epoch to stop at, or None;
- `requires(cfg)`: the config field (and why) that keeps a trial from
  logging the metric at every epoch end, or None.

The Tune adapter (`sweeps.tune.stopper.SpecStopper`) feeds each trial's reported
values to `stop_index`; the offline evaluation
(`experiments.stiffness.evaluate_stopper`) calls the same rule on the series
the trials logged to MLflow, so the two agree by construction. Adding a kind
is one model here (or in a plugin) and `register(kind, model)`.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dynamics_core.config import Float, Int, TrialConfig


class Stopper(BaseModel):
    """What every stopper kind has; `get(kind)` finds the model of a kind."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: str
    metric: str

    def stop_index(self, series: Sequence[float]) -> int | None:
        raise NotImplementedError

    def requires(self, cfg: TrialConfig) -> tuple[str, str] | None:
        """(config field, why) when `cfg` does not log `metric` at every epoch end."""
        return None


# ---------------------------------------------------------------- stiffness
STIFFNESS_METRICS = tuple(f"stiffness/{pair}/{kind}{part}"
                          for pair in ("train_train", "train_val", "val_val")
                          for kind in ("sign", "cos") for part in ("", "_within", "_between"))


def stiffness_stop_epoch(series: Sequence[float], threshold: float = 0.5, patience: int = 3,
                         relative: bool = False) -> int | None:
    """Index of the epoch at which to stop, or None.

    `series` is the train–val (within-class) sign stiffness at successive
    epoch ends. The rule arms once a value is above the bar; armed, it stops
    at the `patience`-th consecutive value below the bar. The bar is
    `threshold`, or with `relative` `threshold` × the running maximum of the
    series (so a stiffness that falls to a fraction of its peak stops it).
    NaN values neither arm nor count, and break a run of low values.
    """
    armed, low, peak = False, 0, -math.inf
    for i, v in enumerate(np.asarray(series, dtype=float)):
        if not np.isfinite(v):
            low = 0
            continue
        peak = max(peak, v)
        bar = threshold * peak if relative else threshold
        if v > bar:
            armed, low = True, 0
        elif armed and v < bar:
            low += 1
            if low >= patience:
                return i
        else:
            low = 0
    return None


class StiffnessStopper(Stopper):
    """Stop once train–val within-class sign stiffness collapses: the metric,
    after having been above the bar, stays below it for `patience`
    consecutive epoch ends (`stiffness_stop_epoch`). The defaults are the
    rule chosen on the pilot seeds 0–3 of `stiffness.yaml` (within-class
    train–val cosine stiffness, bar 0.45 × its running maximum, patience 5),
    the rule `stiffness.stopper_vs_baselines` registers. Stiffness lies in
    [−1, 1], so an absolute bar outside it, or a relative one outside (0, 1),
    is refused as a slip; a bar of −1 never fires (a way to log what the
    stopper would see without it)."""

    kind: Literal["stiffness"] = "stiffness"
    metric: str = "stiffness/train_val/cos_within"
    threshold: Float = 0.45
    patience: Int = Field(5, ge=1)
    relative: bool = True     # the bar is threshold × the running maximum of the metric

    @field_validator("metric")
    @classmethod
    def _stiffness_metric(cls, metric: str) -> str:
        if metric not in STIFFNESS_METRICS:
            raise ValueError(f"{metric!r} is not a stiffness metric; valid: {', '.join(STIFFNESS_METRICS)}")
        return metric

    @model_validator(mode="after")
    def _bar(self) -> "StiffnessStopper":
        if self.relative and not 0 < self.threshold < 1:
            raise ValueError(f"threshold: {self.threshold:g} with relative: true is a fraction of the "
                             "running maximum, in (0, 1)")
        if not self.relative and not -1 <= self.threshold <= 1:
            raise ValueError(f"threshold: {self.threshold:g} is outside [-1, 1], where stiffness lies")
        return self

    def stop_index(self, series: Sequence[float]) -> int | None:
        return stiffness_stop_epoch(series, self.threshold, self.patience, self.relative)

    def requires(self, cfg: TrialConfig) -> tuple[str, str] | None:
        if not cfg.probes.stiffness:
            return "probes.stiffness", f"false, but the stopper reads {self.metric}: set it to true"
        if cfg.probes.schedule.kind != "epoch":
            return ("probes.schedule.kind", f"{cfg.probes.schedule.kind}, but the stopper reads "
                    f"{self.metric} at every epoch end: set it to epoch")
        return None


# ----------------------------------------------------------------- registry
STOPPERS: dict[str, type[Stopper]] = {"stiffness": StiffnessStopper}


def register(kind: str, model: type[Stopper]) -> type[Stopper]:
    """Add a stopper kind (a plugin's); its `kind` field must be `Literal[kind]`."""
    if kind in STOPPERS and STOPPERS[kind] is not model:
        raise ValueError(f"stopper kind {kind!r} is already registered")
    STOPPERS[kind] = model
    return model


def get(kind: str) -> type[Stopper]:
    try:
        return STOPPERS[kind]
    except KeyError:
        raise KeyError(f"unknown stopper kind {kind!r}; valid: {', '.join(sorted(STOPPERS))}") from None


def parse(value: Any) -> Stopper | None:
    """A spec's `stopper:` mapping as the model of its kind (None stays None)."""
    if value is None or isinstance(value, Stopper):
        return value
    if not isinstance(value, dict):
        raise ValueError("a mapping with `kind` (e.g. {kind: stiffness, threshold: 0.45})")
    kind = value.get("kind")
    if kind is None:
        raise ValueError(f"kind: missing; valid: {', '.join(sorted(STOPPERS))}")
    if kind not in STOPPERS:
        raise ValueError(f"kind: {kind!r} is not a stopper; valid: {', '.join(sorted(STOPPERS))}")
    return STOPPERS[kind].model_validate(value)
