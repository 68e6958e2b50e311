"""Where a training run's measurements go.

The loop only knows this protocol. `MemorySink` keeps everything for tests
and offline use; the sweep service provides a sink that forwards to Ray Tune
and MLflow under the same optimizer `step`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class Sink(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Scalars measured at optimizer iteration `step` (namespaced keys)."""

    def log_artifact(self, name: str, value: np.ndarray | dict[str, Any], step: int) -> None:
        """A bulky array or JSON-able dict, e.g. a class-stiffness matrix."""

    def checkpoint(self, state: dict[str, Any], step: int, epoch: int, reason: str) -> None:
        """The full training state at a resumable point (see train.TrainState)."""

    def epoch_end(self, epoch: int, step: int) -> None:
        """An epoch finished at `step` (after its metrics and any checkpoint)."""

    def finish(self, status: str, summary: dict[str, float]) -> None:
        """Called once: status is finished | diverged; summary holds final scalars."""


@dataclass
class MemorySink:
    metrics: list[tuple[int, str, float]] = field(default_factory=list)
    artifacts: list[tuple[int, str, Any]] = field(default_factory=list)
    checkpoints: list[tuple[int, int, str, dict[str, Any]]] = field(default_factory=list)
    epochs: list[tuple[int, int]] = field(default_factory=list)
    status: str | None = None
    summary: dict[str, float] = field(default_factory=dict)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.extend((step, k, float(v)) for k, v in metrics.items())

    def log_artifact(self, name: str, value: Any, step: int) -> None:
        self.artifacts.append((step, name, value))

    def checkpoint(self, state: dict[str, Any], step: int, epoch: int, reason: str) -> None:
        self.checkpoints.append((step, epoch, reason, state))

    def epoch_end(self, epoch: int, step: int) -> None:
        self.epochs.append((epoch, step))

    def finish(self, status: str, summary: dict[str, float]) -> None:
        self.status, self.summary = status, dict(summary)

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(s, v) for s, k, v in self.metrics if k == key]
