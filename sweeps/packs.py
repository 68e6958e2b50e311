"""Packed trials in a sweep (`resources.pack: K`): one Tune trial per pack.

`sweeps.context.pack_values(spec)` groups the grid's trials, in trial order, into packs of
up to K members that `dynamics_core.packed` can train at once: members share
every config field but those a pack varies per member (`MAY_DIFFER`: seed,
init seed, learning rate, momentum, weight decay, the second stage's lr and
momentum), so a grid over the batch size or the width makes one set of
packs per value. Each pack is one Tune config value holding its name
(`pack<i>-<first member>`) and its members' names and overrides; the names
are those the same trials get unpacked (`trial_names` over the whole grid).

`run_pack` trains one pack inside a Tune trial: every member is still its
own trial in MLflow — its own child run under the sweep's parent, named,
tagged and given params as the unpacked trial, with the same metrics at the
same steps (bit for bit for the MLP on CPU; see `dynamics_core.packed`), its
wall-clock seconds, final summary and status, plus the tag `pack`. A member
that diverges is `diverged` while the others go on. Tune sees the pack:
one report per epoch (`epoch`, `step`, `members_training`), the pack's
checkpoint with it (the pack state and each member's MLflow run id), and a
last report with how many members finished and diverged. A restored pack
continues from its checkpoint and re-opens its members' runs; members that
had ended before it are left alone.

Ray-free: the Tune trainable (`sweeps.tune.trainable`) hands it a `trial.Session`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from dynamics_core.packed import run_packed
from dynamics_core.train import RunEnv, RunResult
from sweeps.context import PACK_KEY, STATE_FILE, SweepContext
from sweeps.spec import with_overrides
from sweeps.trial import CheckpointOutbox, Session, TrialSink, trial_tags
from sweeps.tracking import Store, TrialRun, open_trial

RUN_IDS_FILE = "mlflow_run_ids.json"


# --------------------------------------------------------------- training
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
        self.outbox.put(state, {RUN_IDS_FILE: json.dumps({n: r.run_id for n, r in self.runs.items()})})
        self.alive = len(state["alive"])

    def epoch_end(self, epoch: int, step: int) -> None:
        self._report({"epoch": float(epoch), "step": float(step), "members_training": float(self.alive)})

    def finish(self, results: list[RunResult]) -> None:
        statuses = [r.status for r in results]
        self._report({"step": float(max(r.step for r in results)),
                      **{f"members_{s}": float(statuses.count(s)) for s in ("finished", "diverged")}})

    def _report(self, metrics: dict[str, float]) -> None:
        self.outbox.report(self.session, metrics)


def run_pack(config: dict[str, Any], ctx: SweepContext, session: Session) -> list[RunResult]:
    """Train the pack in `config[PACK_KEY]`, each member reporting to its own trial run."""
    if ctx.plugins:         # the registry imports every experiment's analysis: only when asked
        from sweeps.experiments import load_plugins
        load_plugins(ctx.plugins)
    pack = config[PACK_KEY]
    names = [m["name"] for m in pack["members"]]
    cfgs = [with_overrides(ctx.base, m["overrides"]) for m in pack["members"]]
    env = RunEnv(device=ctx.device, cache_dir=ctx.cache_dir, checkpoint_every_epochs=ctx.checkpoint_every_epochs)
    state, run_ids = _load_checkpoint(session.checkpoint_dir())
    ended = {k for k, *_ in state["results"]} if state is not None else set()
    store = Store(ctx.tracking_uri, ctx.artifact_root)
    runs: dict[str, TrialRun] = {}
    sinks: list[Any] = []
    for k, (name, cfg) in enumerate(zip(names, cfgs)):
        if k in ended:
            sinks.append(_Ended())
            continue
        runs[name] = open_trial(store, ctx.parent_run_id, name, cfg.run_hash(), cfg.flat(),
                                run_id=run_ids.get(name), tags=trial_tags(cfg, pack=pack["name"]))
        sinks.append(TrialSink(runs[name], _MemberSession(name)))
    pack_sink = PackTuneSink(session, runs)
    try:
        out = run_packed(cfgs, sinks, env, resume=state, pack_sink=pack_sink)
    except (SystemExit, KeyboardInterrupt):   # stopped at a report, or Ctrl-C: the sweep resumes these runs
        for run in runs.values():
            run.flush()
        raise
    except BaseException:
        for run in runs.values():
            if run.status == "running":
                run.set_status("errored")
        raise
    pack_sink.finish(out.results)
    return out.results


def _load_checkpoint(path: str | None) -> tuple[dict[str, Any] | None, dict[str, str]]:
    if path is None:
        return None, {}
    state = torch.load(os.path.join(path, STATE_FILE), weights_only=True)
    ids = Path(path) / RUN_IDS_FILE
    return state, (json.loads(ids.read_text()) if ids.exists() else {})
