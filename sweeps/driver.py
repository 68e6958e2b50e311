"""Running a sweep, start to end, without importing Ray or torch until it runs.

run_sweep:    spec -> resources checked -> the sweep's folder locked -> MLflow
              parent run, registered plans, manifest -> Tune (`sweeps.tune.fit`:
              grid or Optuna, FIFO or ASHA, with live progress) -> finish.
resume_sweep: a stopped sweep restored: unfinished (and errored) trials
              continue from their last checkpoints; finished ones are not re-run.
check_fits:   `NoFit` before anything of the sweep exists when its trials
              cannot fit the machine or cluster.
Finishing:    trial runs that Tune ended without closing them are closed, the
              stopper's stops tagged, the parent run ended once every trial
              has; the outcome carries the `sweeps.status` rows.

Layout: <storage>/<spec name>/ is Tune's experiment folder; the manifest and
the driver lock beside Tune's files are `sweeps.storage`'s. <storage> is a
local or shared-filesystem path, or a URI Tune understands (s3://, gs://).

Interruptions: SIGINT/SIGTERM stop Tune cleanly (`Interrupted`, from
`sweeps.interrupts`); a killed driver's sweep resumes from the checkpoints
Tune's saved state names, which `sweeps.tune.checkpoints` never deletes.

Everything that imports Ray is in `sweeps.tune`, imported inside the
functions here that need it; `dynsweep validate`, `list` and `status` never do.
"""
from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sweeps import storage as files
from sweeps import tracking
from sweeps.context import SweepContext, describe, member_states, tune_units
from sweeps.interrupts import Interrupted, Stop, interruptible  # noqa: F401  (Interrupted: raised from here)
from sweeps.spec import SpecError, SweepSpec, check_resources
from sweeps.status import status_rows
from sweeps.storage import (MANIFEST, SweepBusy, SweepExists, experiment_path, read_manifest,  # noqa: F401
                            storage_location)
from sweeps.tracking import Store, code_commit
from sweeps.tune.checkpoints import saved_trials

ENDED = ("finished", "diverged")            # MLflow status tags a trial sets once it is over


@dataclass
class SweepOutcome:
    name: str
    experiment_path: str
    parent_run_id: str
    rows: list[dict[str, Any]]
    errors: int
    tracking_uri: str = ""


def run_sweep(spec: SweepSpec, *, storage: str | Path, tracking_uri: str, cache_dir: str | Path,
              address: str | None = None, device: str = "auto", progress: bool = False,
              new: bool = False, note=None) -> SweepOutcome:
    """Start the sweep in <storage>/<spec name>, with a live progress display
    when `progress`. Raises NoFit (before anything of the sweep exists) when
    its trials cannot fit, SweepBusy while another driver runs it, SweepExists
    when the folder already holds it (unless `new`: then the old sweep is set
    aside as <name>@<time>), Interrupted on SIGINT/SIGTERM (the sweep stays
    resumable). `note` (default: stderr) hears one line for each thing done
    on the way: the sweep's size and store, a stale lock taken over."""
    note = note or _say
    tracking.outage_bound()                   # a bad DYNSWEEP_TRACKING_OUTAGE_S: exit 2 before anything starts
    pending = check_fits(spec, address)       # a sweep that cannot run leaves nothing behind
    exp = files.join(storage_location(storage), spec.name)
    files.check_writable(exp)                 # before the lock file goes there
    with interruptible() as stop, files.held(exp, note):
        if files.exists(files.join(exp, MANIFEST)):
            if not new:
                raise SweepExists(f"{exp} already holds sweep {spec.name!r}")
            note(f"the previous sweep {spec.name} is kept in {files.set_aside(exp)}")
        units = tune_units(spec)
        note(f"sweep {spec.name}: {describe(spec, units)} → MLflow {tracking_uri}")
        ctx, store = _start(spec, storage, tracking_uri, cache_dir, address, device, pending)
        from sweeps.tune import fit

        results = fit.run(spec, ctx, exp, store, stop, units=units, progress=progress)
        return _finish(spec, ctx, store, exp, results)


def _start(spec: SweepSpec, storage: str | Path, tracking_uri: str, cache_dir: str | Path,
           address: str | None, device: str, check_fits_now: bool) -> tuple[SweepContext, Store]:
    """Everything the sweep runs on answers, then its parent run, registered
    plans and manifest exist: the context every trial gets."""
    storage = storage_location(storage)
    # while Ray starts: the store opens (MLflow's import and a new sqlite file), then
    # the probes' columns are read (torch's import, which Tune's trainable needs next)
    with ThreadPoolExecutor(1, thread_name_prefix="dynsweep-store") as pool:
        opening = pool.submit(tracking.open_store, tracking_uri, experiment=spec.name)
        reading = pool.submit(probe_columns, spec)
        _connect(address, spec)
        store = opening.result()
        columns = reading.result()
    if check_fits_now:
        _check_fits(spec, address)
    parent = tracking.start_sweep(store, spec.name, spec.spec_hash(), code_commit(), spec.description,
                                  params={"n_trials": spec.n_trials()})
    if spec.conjectures:
        _register_plans(store, parent, spec)
    ctx = SweepContext(spec_name=spec.name, base=spec.base.model_dump(mode="json"),
                       tracking_uri=tracking_uri, artifact_root=store.artifact_root,
                       parent_run_id=parent, cache_dir=str(Path(cache_dir).resolve()),
                       storage=storage,
                       checkpoint_every_epochs=spec.fault_tolerance.checkpoint_every_epochs,
                       device=device, plugins=tuple(spec.plugins),
                       flush_each_report=spec.scheduler.kind != "fifo" or spec.stopper is not None,
                       columns=columns)
    files.write_text(files.join(storage, spec.name, MANIFEST),
                     json.dumps({"spec": spec.model_dump(mode="json"), "context": asdict(ctx)}, indent=2))
    return ctx, store


def probe_columns(spec: SweepSpec) -> tuple[tuple[str, str], ...]:
    """The headline (metric key, short label) columns of the probes the sweep's
    trials enable (base, grid and variants), as each probe declared them
    (`dynamics_core.measure.register_probe(..., columns=...)`), for the
    manifest's `SweepContext.columns`.

    Why recorded at launch rather than declared in a torch-free module: a
    probe's declarations live in its one file beside its hook, and that file
    imports torch, which `dynsweep status` must not. The driver imports it
    anyway to run the trials (and has imported the spec's plugins, whose
    probes declare columns the same way); the manifest is what `status`
    already reads, so the columns cost it no import and no tracking-server
    query. A sweep stored before the manifest had them shows only the generic
    columns. A probe name no registry knows gives no columns here: its
    trials fail with the registry's error."""
    from dynamics_core.measure import probe_columns as columns

    configs = dict.fromkeys([spec.base.probes, *(t.probes for t in spec.trials())])
    try:
        return tuple(columns(*configs))
    except (KeyError, ValueError, RuntimeError):
        return ()


def _register_plans(store: Store, parent: str, spec: SweepSpec) -> None:
    """Before any trial runs: the conjectures the sweep will be judged on, the
    plugins that define them, and their analysis plans (`plans.json` and the
    param `plans_hash`) on the parent run. Judging reads the plans back."""
    from sweeps import experiments
    from sweeps.judge import CONJECTURES_TAG, PLANS_ARTIFACT, PLUGINS_TAG

    plans = experiments.registered_plans(spec.conjectures)
    store.set_tags(parent, {CONJECTURES_TAG: ",".join(spec.conjectures),
                            PLUGINS_TAG: ",".join(spec.plugins)})
    store.log_params(parent, {"plans_hash": experiments.plans_hash(plans)})
    store.log_json(parent, plans, PLANS_ARTIFACT)


class NoFit(SpecError):
    """A sweep whose trials the machine or cluster cannot hold; `problem` names the field."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name}: {problem}")
        self.problem = problem


def check_fits(spec: SweepSpec, address: str | None) -> bool:
    """`_check_fits` before anything of the sweep exists (its storage folder,
    lock, MLflow experiment): a cluster is joined for its resources
    (`init_ray`, which the sweep then uses); a local Ray's are known without
    starting it, except its GPUs where torch cannot count them without CUDA:
    then True, the check is left for once the local Ray runs."""
    from sweeps.tune import cluster

    if address or os.environ.get("RAY_ADDRESS") or cluster.connected():
        cluster.init_ray(address, spec)
        _check_fits(spec, address)
        return False
    gpus = cluster.local_gpus()
    if gpus is None:
        return True
    problem = check_resources(spec, {"CPU": cluster.local_cpus(spec), "GPU": gpus}, where="this machine")
    if problem:
        raise NoFit(spec.name, f"{problem} (as a local Ray counts them, CUDA_VISIBLE_DEVICES "
                               f"included; --address runs the sweep on a Ray cluster)")
    return False


def _check_fits(spec: SweepSpec, address: str | None) -> None:
    """Refuse a sweep whose trials cannot fit on the cluster (Tune would wait
    forever). An autoscaling cluster may grow: DYNSWEEP_AUTOSCALING=1 skips the
    check for a cluster given by address."""
    if (address or os.environ.get("RAY_ADDRESS")) and os.environ.get("DYNSWEEP_AUTOSCALING") == "1":
        return
    from sweeps.tune.cluster import cluster_resources

    problem = check_resources(spec, cluster_resources())
    if problem:
        hint = "" if not (address or os.environ.get("RAY_ADDRESS")) else \
            " (a cluster that autoscales: set DYNSWEEP_AUTOSCALING=1)"
        raise NoFit(spec.name, f"{problem}{hint}")


def resume_sweep(name_or_path: str, *, storage: str | Path, tracking_uri: str | None = None,
                 restart_errored: bool = False, address: str | None = None,
                 note=None) -> SweepOutcome:
    """Progress callbacks come back with Tune's pickled RunConfig. `tracking_uri`
    overrides the recorded one (the store moved, e.g. to a tracking server).
    A trial whose saved checkpoint is gone continues from an older one or
    starts over; `note` hears one line for each. Raises SweepBusy and
    Interrupted as `run_sweep` does. A sweep stopped before Tune saved anything
    starts over under its parent run."""
    from sweeps.tune import checkpoints, fit

    note = note or _say
    exp = experiment_path(name_or_path, storage)
    spec, ctx = read_manifest(exp, tracking_uri)
    files.check_writable(exp)
    with interruptible() as stop, files.held(exp, note):
        store = tracking.open_store(ctx.tracking_uri, ctx.artifact_root, experiment=spec.name)
        restorable = fit.restorable(exp)
        if restorable:
            # a searcher (Optuna) learns a trial's result only from Tune: there, Tune runs it again
            ended = {r.trial_id for r in tracking.trial_runs(store, spec.name, ctx.parent_run_id)
                     if r.status in ENDED} if spec.search.kind == "grid" else set()
            for line in checkpoints.settle_ended_trials(exp, ended) + checkpoints.repair_checkpoints(exp):
                note(line)
        _connect(address, spec)
        _check_fits(spec, address)
        if restorable:
            results = fit.restore(spec, ctx, exp, store, stop, restart_errored)
        else:
            note(f"sweep {spec.name} stopped before its first trial: it starts now")
            results = fit.run(spec, ctx, exp, store, stop, units=tune_units(spec), progress=True)
        return _finish(spec, ctx, store, exp, results)


def _finish(spec: SweepSpec, ctx: SweepContext, store: Store, exp: str, results) -> SweepOutcome:
    trials = saved_trials(exp)
    states = member_states({t.name: (t.status, t.config) for t in trials})
    _close_open_runs(store, ctx, states)
    if spec.stopper is not None:
        from sweeps.tune.stopper import record_stops

        record_stops(store, ctx, exp, {t.trial_id: t.name for t in trials})
    errors = sum(1 for r in results if r.error is not None)
    if all(state in ("TERMINATED", "ERROR") for state in states.values()):
        tracking.end_sweep(store, ctx.parent_run_id, "FAILED" if errors else "FINISHED")
    return SweepOutcome(spec.name, exp, ctx.parent_run_id, status_rows(exp, ctx), errors, ctx.tracking_uri)


def _close_open_runs(store: Store, ctx: SweepContext, states: dict[str, str]) -> None:
    """Runs whose trial ended without closing them: a worker that died for good
    (errored), or a trial the scheduler stopped between reports (finished,
    tagged stopped_early unless its final summary is logged). Trials that are
    merely paused (an interrupted sweep) keep their runs open for resume."""
    for run in tracking.trial_runs(store, ctx.spec_name, ctx.parent_run_id):
        state = states.get(run.trial_id)
        if run.status != "running" or state not in ("TERMINATED", "ERROR"):
            continue
        tracking.close_trial_run(store, run.run_id, errored=state == "ERROR",
                                 stopped_early="final/steps" not in run.metrics)


def _connect(address: str | None, spec: SweepSpec) -> None:
    """Join the cluster at `address` or start a local Ray (`sweeps.tune.cluster.init_ray`)."""
    from sweeps.tune.cluster import init_ray

    init_ray(address, spec)


def _say(line: str) -> None:
    print(line, file=sys.stderr)
