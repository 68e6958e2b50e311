"""One unit of work: what every trainable runs in its worker.

A unit is one Tune trial: an unpacked trial, which is a pack of one (its
member is named as the trial, `session.trial_name()`), or a pack of grid
trials (`PACK_KEY` in its config, see `sweeps.packs`). `run_unit` does,
once for both: import the spec's plugins (before any config is read, as
they may register config knobs), resolve the members, load the unit's
checkpoint (`trial.load_checkpoint`: the state and each member's MLflow run
id), open each member's trial run (re-opened on a restore), train, and
leave the runs as the sweep expects when training stops early:

- `SystemExit` (the scheduler, e.g. ASHA, stopped the trial at a report)
  and `KeyboardInterrupt` (Ctrl-C reached the worker): the runs' buffered
  metrics are flushed and the runs stay running; the driver closes them
  once Tune says TERMINATED, or the sweep resumes them;
- any other error: each run still running is marked errored.

An unpacked trial trains with `dynamics_core.train.run` (`trial.train`:
DDP, IMP levels, every probe); with `distributed`, this process is one DDP
rank of several, and only rank 0 opens runs, records and checkpoints (the
other ranks train and join each epoch's report). A pack trains its members
at once with `dynamics_core.packed.run_packed` (`packs.train_pack`).

Ray-free and MLflow-free by name: `sweeps.tune.trainable` hands it a
`trial.Session`, and it records through `sweeps.tracking`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dynamics_core.config import TrialConfig
from dynamics_core.measure import probe_summaries
from dynamics_core.train import RunEnv, RunResult
from sweeps import packs, trial
from sweeps.context import PACK_KEY, SweepContext, trial_config
from sweeps.spec import with_overrides
from sweeps.tracking.store import Store
from sweeps.tracking.trial_run import TrialRun, open_trial


@dataclass(frozen=True)
class Unit:
    """A unit's members (name and trial config, in order) and its pack's name (None: unpacked)."""

    names: list[str]
    cfgs: list[TrialConfig]
    pack: str | None = None


def unit_of(config: dict[str, Any], ctx: SweepContext, session: trial.Session) -> Unit:
    """The unit a Tune `config` holds: a pack's members, or one member named as the trial."""
    if PACK_KEY in config:
        members = config[PACK_KEY]["members"]
        return Unit([m["name"] for m in members], [with_overrides(ctx.base, m["overrides"]) for m in members],
                    pack=config[PACK_KEY]["name"])
    return Unit([session.trial_name()], [trial_config(config, ctx.base)])


def run_unit(config: dict[str, Any], ctx: SweepContext, session: trial.Session,
             distributed: bool = False) -> list[RunResult]:
    """Train the unit in `config`, each member recording to its own trial run;
    its results, one per member. With `distributed`, this process is one DDP
    rank of an unpacked trial."""
    if ctx.plugins:         # the registry imports every experiment's analysis: only when asked
        from sweeps.experiments import load_plugins
        load_plugins(ctx.plugins)
    unit = unit_of(config, ctx, session)
    env = RunEnv(device=ctx.device, cache_dir=ctx.cache_dir,
                 checkpoint_every_epochs=ctx.checkpoint_every_epochs, distributed=distributed)
    state, run_ids = trial.load_checkpoint(session.checkpoint_dir())
    if distributed and not _is_rank_zero():
        return [trial.train(unit.cfgs[0], trial.ReportOnlySink(session), env, state)]
    ended = packs.ended_members(state) if unit.pack is not None else set()
    runs = _open_runs(ctx, unit, run_ids, ended)
    try:
        if unit.pack is not None:
            return packs.train_pack(unit.cfgs, unit.names, runs, session, env, state)
        sink = trial.TrialSink(runs[unit.names[0]], session, flush_each_report=ctx.flush_each_report,
                               summaries=probe_summaries(unit.cfgs[0].probes))
        return [trial.train(unit.cfgs[0], sink, env, state)]
    except (SystemExit, KeyboardInterrupt):     # stopped at a report, or Ctrl-C: the sweep resumes these runs
        for run in runs.values():
            run.flush()
        raise
    except BaseException:
        for run in runs.values():
            if run.status == "running":
                run.set_status("errored")
        raise


def _open_runs(ctx: SweepContext, unit: Unit, run_ids: dict[str, str], ended: set[int]) -> dict[str, TrialRun]:
    """{member name: its trial run} for the members that have not ended: named,
    tagged and given params alike packed or not, plus the tag `pack` in a pack."""
    store = Store(ctx.tracking_uri, ctx.artifact_root)
    extra = {"pack": unit.pack} if unit.pack is not None else {}
    return {name: open_trial(store, ctx.parent_run_id, name, cfg.run_hash(), cfg.flat(),
                             run_id=run_ids.get(name), tags=trial.trial_tags(cfg, **extra))
            for k, (name, cfg) in enumerate(zip(unit.names, unit.cfgs)) if k not in ended}


def _is_rank_zero() -> bool:
    import torch.distributed as dist
    return not dist.is_initialized() or dist.get_rank() == 0
