"""What a sweep shows while it runs: the `Progress` callback.

One line per change: trials done/running/failed, trial-epochs done and an
ETA; a retried trial's cause and restart point; a last `N/N done` line.
"""
from __future__ import annotations

import math
import time
from typing import Any

import ray
from ray import tune

from sweeps.context import PACK_KEY, TRIAL_KEY, trial_config
from sweeps.tune.checkpoints import restart_point
from sweeps.tune.cluster import node_lost


class Progress(tune.Callback):
    """One line per change: trials done/running/failed, trial-epochs done, and
    an ETA from the trial-epochs finished per second in this session (not
    from trials, which run in parallel and unevenly); the trial's epoch and
    key metrics; a last `N/N done` line.

    Picklable (Tune stores callbacks with the experiment, so a resumed sweep
    reports progress too); the console is created lazily.
    """

    def __init__(self, total: int | None, epochs: int | None = None, every_s: float = 10.0,
                 base: dict[str, Any] | None = None, columns: tuple[tuple[str, str], ...] = ()):
        self.total = total
        self.epochs = epochs
        self.every_s = every_s
        self.base = base                           # the spec's base config: each trial's own budget
        # (metric key, label) of the sweep's probes' headline metrics: `fit.run` sets them from
        # the sweep's context (`SweepContext.columns`); none, only val/acc is shown
        self.columns = tuple(tuple(c) for c in columns)
        self._start = time.monotonic()
        self._last = 0.0
        self._console = None
        self._begun: float | None = None           # the first trial's start: the rate's clock
        self._epoch: dict[str, float] = {}        # trial -> epochs done
        self._first: dict[str, float] = {}        # trial -> epochs done when first seen here
        self._planned: dict[str, float] = {}      # trial -> epochs it will run

    def __getstate__(self) -> dict[str, Any]:
        return {"total": self.total, "epochs": self.epochs, "every_s": self.every_s, "base": self.base,
                "columns": self.columns}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["total"], state.get("epochs"), state["every_s"], state.get("base"),
                      state.get("columns", ()))

    def on_trial_start(self, iteration, trials, trial, **info):
        self._begun = self._begun or time.monotonic()
        self._show(trials, f"started {trial}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        epoch = float(result.get("epoch", 0))
        self._first.setdefault(str(trial), self._epoch.get(str(trial), epoch - 1 if epoch else 0))
        self._epoch[str(trial)] = epoch
        self._plan(trial, epoch, float(result.get("step", 0)))
        if time.monotonic() - self._last >= self.every_s:
            note = f"{trial} epoch {epoch:.0f}"
            for key, label in (("val/acc", "val/acc"), *self.columns):
                if result.get(key) is not None:
                    note += f" {label} {result[key]:.3g}"
            self._show(trials, note)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._show(trials, f"finished {trial}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A failed trial Tune runs again: why, from where, which retry."""
        from rich.markup import escape

        exc = _trial_error(trial)
        failures, limit = trial.run_metadata.num_failures, trial.max_failures
        count = (f"retry {failures} of {limit}" if limit >= 0 else f"retry {failures}") \
            if not getattr(exc, "preempted", False) else "its node was preempted: not counted"
        self._show(trials, f"[yellow]{escape(str(trial))} {escape(_failure(exc))}; retrying from "
                           f"{restart_point(trial)} ({count})[/yellow]")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._show(trials, f"[red]error in {trial}[/red] (retried up to max_failures)")

    def on_experiment_end(self, trials, **info):
        states = [t.status for t in trials]
        self._print(f"{states.count('TERMINATED')}/{self.total or len(trials)} done"
                    f"{', %d failed' % states.count('ERROR') if 'ERROR' in states else ''} "
                    f"in {_clock(time.monotonic() - self._start)}")

    def _plan(self, trial, epoch: float, step: float) -> None:
        """A trial's own epoch budget: its (swept) `train.epochs`, cut by
        `train.max_steps` once its steps per epoch are known; a pack's, its
        longest member's (members share their batch size, not their length)."""
        if self.base is None or str(trial) in self._planned or not epoch or not step:
            return
        config = trial.config
        configs = ([{TRIAL_KEY: m["overrides"]} for m in config[PACK_KEY]["members"]] if PACK_KEY in config
                   else [config])
        budgets = []
        for c in configs:
            train = trial_config(c, self.base).train
            cut = math.ceil(train.max_steps / (step / epoch)) if train.max_steps else train.epochs
            budgets.append(min(train.epochs, cut))
        self._planned[str(trial)] = float(max(budgets))

    def _eta(self, trials) -> tuple[str, float]:
        """(`k/K epochs`, seconds left) from this session's epochs per second."""
        if not self.epochs:
            return "", float("nan")
        unseen = (self.total or len(trials)) - len(trials)
        budget = {str(t): self._planned.get(str(t), self.epochs) for t in trials}
        finished = {str(t) for t in trials if t.status in ("TERMINATED", "ERROR")}
        # a trial that ended early (ASHA, divergence) needs no more epochs
        budget.update({t: self._epoch.get(t, budget[t]) for t in finished})
        total = sum(budget.values()) + max(unseen, 0) * self.epochs
        done = sum(self._epoch.values())
        here = sum(e - self._first.get(t, e) for t, e in self._epoch.items())
        rate = here / (time.monotonic() - (self._begun or self._start)) if here else 0.0
        eta = (total - done) / rate if rate else float("nan")
        return f"{done:.0f}/{total:.0f} epochs, ", eta

    def _show(self, trials, note: str) -> None:
        self._last = time.monotonic()
        states = [t.status for t in trials]
        done, running = states.count("TERMINATED"), states.count("RUNNING")
        failed = states.count("ERROR")
        total = self.total or len(trials)
        epochs, eta = self._eta(trials)
        self._print(f"[{done}/{total} done, {running} running, {failed} failed] {epochs}"
                    f"elapsed {_clock(self._last - self._start)} ETA {_clock(eta)} — {note}")

    def _print(self, line: str) -> None:
        from rich.console import Console

        self._console = self._console or Console(stderr=True, highlight=False, soft_wrap=True)
        self._console.print(line)


def _trial_error(trial) -> BaseException | None:
    """The exception a trial failed with (Tune pickles it beside the trial)."""
    import cloudpickle

    try:
        with open(trial.pickled_error_file, "rb") as f:
            return cloudpickle.load(f)
    except Exception:             # no file (None), or one that does not unpickle here
        return None


def _failure(exc: BaseException | None) -> str:
    """What happened, in a few words: its node lost, its worker process lost, or the error."""
    if exc is None:
        return "failed"
    cause = exc.as_instanceof_cause() if isinstance(exc, ray.exceptions.RayTaskError) else exc
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()] or [""]
    if isinstance(cause, ray.exceptions.RayActorError):
        where = "its node" if node_lost(cause.actor_id) else "its worker process"
        return f"lost {where} ({type(cause).__name__}: {_clip(lines[0])})"
    return f"failed ({type(cause).__name__}: {_clip(lines[-1])})"


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _clock(seconds: float) -> str:
    if seconds != seconds:
        return "--:--"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60:d}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"
