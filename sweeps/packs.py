"""Packed trials in a sweep (`resources.pack: K`): one Tune trial per pack.

`sweeps.context.pack_values(spec)` groups the grid's trials, in trial order, into packs of
up to K members that `dynamics_core.packed` can train at once: members share
every config field but those a pack varies per member (`MAY_DIFFER`: seed,
init seed, learning rate, momentum, weight decay, schedule, length,
deficit, IMP ablation; an IMP pack's members share their length and level
structure), so a grid over the batch size or the width makes one set of
packs per value. Each pack is one Tune config value holding its name
(`pack<i>-<first member>`) and its members' names and overrides; the names
are those the same trials get unpacked (`trial_names` over the whole grid).

`train_pack` trains one pack's members at once (`sweeps.worker.run_unit`
resolves them, opens their runs and handles errors, as for an unpacked
trial): every member is still its own trial in MLflow — its own child run
under the sweep's parent, named, tagged and given params as the unpacked
trial, with the same metrics at the same steps (bit for bit for the MLP on
CPU; see `dynamics_core.packed`), its wall-clock seconds, final summary and
status, plus the tag `pack`. A member that diverges is `diverged`, one that
reaches its last step `finished`, while the others go on. Tune sees the
pack: one report per epoch of the pack (`epoch`, `step`, `members_training`,
the members still training), the pack's checkpoint with it (the pack state and each
member's MLflow run id, as `trial.CheckpointOutbox` writes any unit's), and
a last report with how many members finished and diverged. A restored pack
continues from its checkpoint and re-opens its members' runs; members that
had ended before it are left alone.

Ray-free: the Tune trainable (`sweeps.tune.trainable`) hands it a `trial.Session`.
"""
from __future__ import annotations

from typing import Any, Sequence

from dynamics_core.config import TrialConfig
from dynamics_core.measure import probe_summaries
from dynamics_core.packed import run_packed
from dynamics_core.train import RunEnv, RunResult
from sweeps.trial import CheckpointOutbox, Session, TrialSink
from sweeps.tracking.trial_run import TrialRun


def ended_members(state: dict[str, Any] | None) -> set[int]:
    """The members (by index) that ended before the pack checkpoint `state`."""
    return {k for k, *_ in state["results"]} if state is not None else set()


def train_pack(cfgs: Sequence[TrialConfig], names: Sequence[str], runs: dict[str, TrialRun], session: Session,
               env: RunEnv, resume: dict[str, Any] | None) -> list[RunResult]:
    """Train the members `cfgs` (named `names`) as one pack with
    `dynamics_core.packed.run_packed`, from `resume` if given: each member
    still training records to its run in `runs`, the pack reports to `session`."""
    sinks = [TrialSink(runs[name], _MemberSession(name), summaries=probe_summaries(cfg.probes))
             if name in runs else _Ended() for name, cfg in zip(names, cfgs)]
    pack_sink = PackTuneSink(session, runs)
    out = run_packed(list(cfgs), sinks, env, resume=resume, pack_sink=pack_sink)
    pack_sink.finish(out.results)
    return out.results


class _MemberSession:
    """A member's TrialSink reports here; the pack reports to Tune for all."""

    def __init__(self, name: str):
        self.name = name

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        pass

    def checkpoint_dir(self) -> str | None:
        return None

    def trial_name(self) -> str:
        return self.name


class _Ended:
    """The sink of a member that ended before the checkpoint a pack resumes from
    (the pack no longer trains it, so nothing reaches it)."""

    def log_metrics(self, metrics, step): raise RuntimeError("an ended member got metrics")
    def log_artifact(self, name, value, step): raise RuntimeError("an ended member got an artifact")
    def checkpoint(self, state, step, epoch, reason): pass
    def epoch_end(self, epoch, step): pass
    def finish(self, status, summary): raise RuntimeError("an ended member finished twice")


class PackTuneSink:
    """The pack's `PackSink`: its checkpoint (state and member run ids) goes to
    Tune with the epoch's report, after every member's metrics are stored."""

    def __init__(self, session: Session, runs: dict[str, TrialRun]):
        self.session, self.runs = session, runs
        self.alive = len(runs)
        self.outbox = CheckpointOutbox("dynsweep-pack-")

    def checkpoint(self, state: dict[str, Any], step: int, epoch: int, reason: str) -> None:
        for run in self.runs.values():
            run.flush()
        self.outbox.put(state, {name: run.run_id for name, run in self.runs.items()})
        self.alive = len(state["alive"])

    def epoch_end(self, epoch: int, step: int) -> None:
        self._report({"epoch": float(epoch), "step": float(step), "members_training": float(self.alive)})

    def finish(self, results: list[RunResult]) -> None:
        statuses = [r.status for r in results]
        self._report({"step": float(max(r.step for r in results)),
                      **{f"members_{s}": float(statuses.count(s)) for s in ("finished", "diverged")}})

    def _report(self, metrics: dict[str, float]) -> None:
        self.outbox.report(self.session, metrics)
