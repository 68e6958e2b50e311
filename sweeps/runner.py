"""The only module that talks to Ray (Tune, and Train for multi-worker trials).

run_sweep:    spec -> Tuner (grid or Optuna, FIFO or ASHA) -> fit, with live progress.
resume_sweep: Tuner.restore of a stopped sweep: unfinished (and errored) trials
              continue from their last checkpoints; finished ones are not re-run.
sweep_status: one row per trial from Tune's experiment state + the MLflow run id.
SpecStopper:  the spec's stopper (sweeps.stoppers) as a Tune stopper.

Layout: <storage>/<spec name>/ is Tune's experiment folder; the manifest and
the driver lock beside Tune's files are `sweeps.storage`'s. <storage> is a
local or shared-filesystem path, or a URI Tune understands (s3://, gs://).

Interruptions: SIGINT/SIGTERM stop Tune cleanly (Interrupted); a killed
driver's sweep resumes from the checkpoints Tune's saved state names, which
`PruneCheckpoints` never deletes.
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from sweeps import packs
from sweeps import storage as files
from sweeps.errors import Unavailable
from sweeps.storage import (MANIFEST, SweepBusy, SweepExists, experiment_path, read_manifest,  # noqa: F401
                            storage_location)
from sweeps.spec import SpecError, SweepSpec, check_resources
from sweeps.stoppers import Stopper
from sweeps.context import (REPORTED_FILE, TRIAL_KEY, SweepContext, member_names, member_states,
                            trial_config, trial_label, trial_names)
from sweeps.trial import run_trial
from sweeps import tracking
from sweeps.tracking import Store, git_sha

CODE = Path(__file__).resolve().parent      # the sweep records this checkout's commit, wherever it runs from


# ------------------------------------------------------------ the trainable
class TuneSession:
    """trial.Session backed by the Tune function API."""

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    def checkpoint_dir(self) -> str | None:
        checkpoint = tune.get_checkpoint()
        return checkpoint.to_directory() if checkpoint is not None else None

    def trial_name(self) -> str:
        return tune.get_context().get_trial_name()


def _single_worker(config: dict[str, Any], ctx: SweepContext) -> None:
    run_trial(config, ctx, TuneSession())


def _multi_worker(config: dict[str, Any], ctx: SweepContext, workers: int, use_gpu: bool) -> None:
    """A Tune trial that runs its training as a Ray Train TorchTrainer (DDP:
    gloo on CPU, NCCL on GPU); rank 0 probes, logs and checkpoints."""
    from ray.train import RunConfig as TrainRunConfig
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    name = tune.get_context().get_trial_name()
    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config={"config": config, "ctx": asdict(ctx), "trial_name": name},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=TrainRunConfig(name=f"{ctx.spec_name}-{name}", callbacks=[TuneReportCallback()],
                                  storage_path=files.join(ctx.storage, "_ray_train")),
    )
    trainer.fit()


def _train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train

    class TrainSession:
        def report(self, metrics, checkpoint_dir):
            checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
            ray.train.report(metrics, checkpoint=checkpoint)

        def checkpoint_dir(self):
            checkpoint = ray.train.get_checkpoint()
            return checkpoint.to_directory() if checkpoint is not None else None

        def trial_name(self):
            return loop_config["trial_name"]

    ctx = SweepContext(**loop_config["ctx"])
    run_trial(loop_config["config"], ctx, TrainSession(), distributed=True)


def _packed(config: dict[str, Any], ctx: SweepContext) -> None:
    """A Tune trial that trains a pack of grid trials at once (`sweeps.packs`)."""
    packs.run_pack(config, ctx, TuneSession())


def _trainable(spec: SweepSpec, ctx: SweepContext):
    r = spec.resources
    if r.pack > 1:
        return tune.with_resources(tune.with_parameters(_packed, ctx=ctx),
                                   {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial})
    if r.workers_per_trial > 1:
        fn = tune.with_parameters(_multi_worker, ctx=ctx, workers=r.workers_per_trial,
                                  use_gpu=r.gpus_per_trial > 0)
        # the Train workers reserve their own CPUs/GPUs; the Tune trial (1 CPU) coordinates
        return tune.with_resources(fn, {"cpu": 1})
    fn = tune.with_parameters(_single_worker, ctx=ctx)
    return tune.with_resources(fn, {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial})


# ---------------------------------------------------------- tuner settings
def param_space(spec: SweepSpec) -> dict[str, Any]:
    if spec.search.kind == "optuna":
        space: dict[str, Any] = {path: _distribution(d) for path, d in spec.search.space.items()}
        space["seed"] = spec.seeds[0]
        return space
    if spec.resources.pack > 1:
        return {packs.PACK_KEY: tune.grid_search(packs.pack_values(spec))}
    return {TRIAL_KEY: tune.grid_search(spec.overrides())}


def _distribution(d) -> Any:
    if d.kind == "loguniform":
        return tune.loguniform(d.low, d.high)
    if d.kind == "uniform":
        return tune.uniform(d.low, d.high)
    if d.kind == "int":
        return tune.randint(int(d.low), int(d.high) + 1)
    return tune.choice(d.values)


def _tune_config(spec: SweepSpec) -> tune.TuneConfig:
    swept = spec.overrides() if spec.search.kind == "grid" else []
    grid_names = {_values_key(o): n for o, n in zip(swept, trial_names(swept))}

    def name(trial) -> str:
        """Grid: the swept values (deterministic: resume finds its folders by
        them). Optuna may sample a config twice: its names end in Tune's trial id."""
        if packs.PACK_KEY in trial.config:
            return trial.config[packs.PACK_KEY]["name"]
        if TRIAL_KEY in trial.config:
            return grid_names[_values_key(trial.config[TRIAL_KEY])]
        return f"{trial_label(trial.config)}-{trial.trial_id}"

    search_alg, num_samples = None, 1
    if spec.search.kind == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch
        search_alg = OptunaSearch(metric=spec.search.metric, mode=spec.search.mode,
                                  sampler=optuna.samplers.TPESampler(seed=spec.search.seed))
        num_samples = spec.search.num_samples
    s = spec.scheduler
    scheduler = (ASHAScheduler(time_attr="epoch", metric=s.metric, mode=s.mode,
                               max_t=spec.base.train.epochs, grace_period=s.grace_period,
                               reduction_factor=s.reduction_factor)
                 if s.kind == "asha" else FIFOScheduler())
    return tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                           reuse_actors=True, trial_name_creator=name, trial_dirname_creator=name)


def _values_key(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, default=str)


def _run_config(spec: SweepSpec, storage: str, callbacks: list) -> tune.RunConfig:
    """Tune keeps every checkpoint (`num_to_keep=None`): with a limit it deletes
    old ones at once, also the one its last saved experiment state still names,
    and a driver killed before the next save could never resume that trial.
    `PruneCheckpoints` deletes them instead, once nothing refers to them.
    Of Tune's result loggers only the JSON one (`init_ray` turns off the others)."""
    from ray.tune.logger import JsonLoggerCallback

    stop = SpecStopper(spec.stopper, files.join(storage, spec.name)) if spec.stopper else None
    return tune.RunConfig(
        name=spec.name, storage_path=storage, stop=stop,
        failure_config=tune.FailureConfig(max_failures=spec.fault_tolerance.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        callbacks=[*callbacks, JsonLoggerCallback(), PruneCheckpoints()], verbose=0)


# ------------------------------------------------------------------ public
@dataclass
class SweepOutcome:
    name: str
    experiment_path: str
    parent_run_id: str
    rows: list[dict[str, Any]]
    errors: int
    tracking_uri: str = ""


def init_ray(address: str | None, spec: SweepSpec) -> None:
    """Connect to the cluster at `address` (else $RAY_ADDRESS), or start a local
    Ray. Either way with Ray token auth as the cluster has it (`_token_auth`);
    a cluster that does not answer or refuses us is `Unavailable`, one line.
    A cluster's workers do not inherit our environment: they get the MLflow
    and object-storage client settings (credentials) through the job's runtime env."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")   # our Progress lines replace Tune's tables
    # short trials checkpoint every epoch by design: no warning about snapshot frequency
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's result files: only result.json (ExperimentAnalysis reads it), no CSV or TensorBoard copies
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _token_auth(address)
        try:
            ray.init(address=address, log_to_driver=False, runtime_env=_worker_env())
        except Exception as exc:   # ConnectionError, AuthenticationError, RuntimeError, ...
            raise Unavailable(f"cannot join the Ray cluster at {address} ({type(exc).__name__}): "
                              f"{str(exc).splitlines()[0][:160]}") from None
        return
    _token_auth(None)
    # "local": a Ray of our own even where `ray start` left one running on this machine,
    # which ray.init would otherwise join (and refuse num_cpus for); --address auto joins it
    ray.init(address="local", num_cpus=_local_cpus(spec),
             include_dashboard=False, log_to_driver=False, configure_logging=False)


def _local_cpus(spec: SweepSpec) -> int:
    """The CPUs a local Ray is started with: the machine's, or what one trial needs."""
    r = spec.resources
    need = max(r.cpus_per_trial, 1 + r.workers_per_trial if r.workers_per_trial > 1 else 0)
    return max(os.cpu_count() or 1, int(need + 0.999))


def _local_gpus() -> int | None:
    """The GPUs a local Ray would find, counted as Ray counts them (the NVIDIA
    driver's, less what CUDA_VISIBLE_DEVICES hides) without starting it; None
    where this Ray's detection cannot be called."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        manager = get_accelerator_manager_for_resource("GPU")
        n = manager.get_current_node_num_accelerators()
        visible = manager.get_current_process_visible_accelerator_ids()
    except Exception:          # a private API: a Ray that moved it is checked once it runs
        return None
    return n if visible is None else min(n, len(visible))


def _worker_env() -> dict[str, Any] | None:
    """A runtime env with our MLflow and object-storage (AWS_*) client settings, less
    those that a submitted job's own runtime env already sets (Ray refuses the same key twice)."""
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env") or {}
    ours = {**tracking.client_env(), **files.client_env()}
    env = {k: v for k, v in ours.items() if k not in (job.get("env_vars") or {})}
    return {"env_vars": env} if env else None


def _token_auth(address: str | None) -> None:
    """Ray token auth the way the cluster has it. A local Ray always uses it
    (Ray's default; a token is made in ~/.ray/auth_token if there is none). A
    cluster is asked first, with a short timeout: if its GCS wants a token
    we send ours (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token),
    and say in one line what to set when we have none or it is refused.
    Switched on explicitly, so Ray prints no banner about it on every run."""
    try:
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:   # a Ray without token auth: nothing to follow
        return
    mode = os.environ.get("RAY_AUTH_MODE", "").lower()
    if address is None:
        if not mode:
            _enable_token_auth()
        return
    if address == "auto" or "://" in address or mode == "disabled":
        return   # Ray finds (and authenticates to) a local cluster itself; other schemes are Ray's
    if _gcs_answers(address, with_token=False):
        return
    fix = ("set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the head's token "
           "(`ray get-auth-token` on the head prints it; or copy it to ~/.ray/auth_token)")
    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        raise Unavailable(f"the Ray cluster at {address} uses token authentication and we have "
                          f"no token: {fix}")
    _enable_token_auth()
    if not _gcs_answers(address, with_token=True):
        raise Unavailable(f"the Ray cluster at {address} refused our token: {fix}")


def _gcs_answers(address: str, with_token: bool, timeout_s: float = 10) -> bool:
    """Whether the GCS at host:port answers a cheap call (False: it wants a token
    we did not send, or refused the one we sent); `Unavailable` when nothing answers."""
    import grpc
    from ray._raylet import AuthenticationTokenLoader
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    metadata = (tuple(AuthenticationTokenLoader.instance().get_token_for_http_header().items())
                if with_token else ())
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s,
                              metadata=metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return False
            raise Unavailable(f"no Ray cluster answers at {address} ({exc.code().name}): check the "
                              f"address (the head's `ray start --head --port`, default 6379) "
                              f"and that the head runs") from None
    return True


def run_sweep(spec: SweepSpec, *, storage: str | Path, tracking_uri: str, cache_dir: str | Path,
              address: str | None = None, device: str = "auto", progress=None,
              new: bool = False, note=None) -> SweepOutcome:
    """Start the sweep in <storage>/<spec name>. Raises NoFit (before anything
    of the sweep exists) when its trials cannot fit, SweepBusy while another
    driver runs it, SweepExists when the folder already holds it (unless `new`:
    then the old sweep is set aside as <name>@<time>), Interrupted on
    SIGINT/SIGTERM (the sweep stays resumable). `note` (default: stderr)
    hears one line for each thing done on the way (a stale lock taken over)."""
    note = note or _say
    check_fits(spec, address)                 # a sweep that cannot run leaves nothing behind
    exp = files.join(storage_location(storage), spec.name)
    files.check_writable(exp)                 # before the lock file goes there
    with _interruptible() as stop, files.held(exp, note):
        if files.exists(files.join(exp, MANIFEST)):
            if not new:
                raise SweepExists(f"{exp} already holds sweep {spec.name!r}")
            note(f"the previous sweep {spec.name} is kept in {files.set_aside(exp)}")
        return _run(spec, storage, tracking_uri, cache_dir, address, device, progress, stop)


def _run(spec: SweepSpec, storage: str | Path, tracking_uri: str, cache_dir: str | Path,
         address: str | None, device: str, progress, stop: _Stop) -> SweepOutcome:
    storage = storage_location(storage)
    exp = files.join(storage, spec.name)
    tracking.outage_bound()                   # a bad DYNSWEEP_TRACKING_OUTAGE_S: exit 2 before anything starts
    # everything the sweep runs on answers before its parent run exists; the store
    # (a new sqlite file: MLflow's schema, about 2 s) opens while Ray starts
    with ThreadPoolExecutor(1, thread_name_prefix="dynsweep-store") as pool:
        opening = pool.submit(tracking.open_store, tracking_uri, experiment=spec.name)
        init_ray(address, spec)
        store = opening.result()
    _check_fits(spec, address)
    parent = tracking.start_sweep(store, spec.name, spec.spec_hash(), git_sha(CODE), spec.description,
                                  params={"n_trials": spec.n_trials()})
    if spec.conjectures:
        _register_plans(store, parent, spec)
    ctx = SweepContext(spec_name=spec.name, base=spec.base.model_dump(mode="json"),
                       tracking_uri=tracking_uri, artifact_root=store.artifact_root,
                       parent_run_id=parent, cache_dir=str(Path(cache_dir).resolve()),
                       storage=storage,
                       checkpoint_every_epochs=spec.fault_tolerance.checkpoint_every_epochs,
                       device=device, plugins=tuple(spec.plugins),
                       flush_each_report=spec.scheduler.kind != "fifo" or spec.stopper is not None)
    files.write_text(files.join(exp, MANIFEST), json.dumps({"spec": spec.model_dump(mode="json"),
                                                  "context": asdict(ctx)}, indent=2))
    return _tune(spec, ctx, store, exp, address, progress, stop)


def _tune(spec: SweepSpec, ctx: SweepContext, store: Store, exp: str, address: str | None,
          progress, stop: _Stop) -> SweepOutcome:
    init_ray(address, spec)        # a no-op after _run; resume may come straight here
    _check_fits(spec, address)
    callbacks = [progress] if progress is not None else []
    if spec.resources.pack > 1 and isinstance(progress, Progress):
        progress.total = len(packs.pack_values(spec))      # Tune runs (and counts) packs
    tuner = tune.Tuner(_trainable(spec, ctx), param_space=param_space(spec), tune_config=_tune_config(spec),
                       run_config=_run_config(spec, ctx.storage, callbacks))
    results = _fit(tuner, stop, exp, store)
    return _finish(spec, ctx, store, exp, results)


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


def check_fits(spec: SweepSpec, address: str | None) -> None:
    """`_check_fits` before anything of the sweep exists (its storage folder,
    lock, MLflow experiment): a local Ray's resources are known without
    starting it; a cluster is joined for them (`init_ray`, which the sweep
    then uses)."""
    if address or os.environ.get("RAY_ADDRESS") or ray.is_initialized():
        init_ray(address, spec)
        _check_fits(spec, address)
        return
    gpus = _local_gpus()
    if gpus is None:
        return                                # checked once the local Ray runs (`_run`)
    problem = check_resources(spec, {"CPU": _local_cpus(spec), "GPU": gpus}, where="this machine")
    if problem:
        raise NoFit(spec.name, f"{problem} (as a local Ray counts them, CUDA_VISIBLE_DEVICES "
                               f"included; --address runs the sweep on a Ray cluster)")


def _check_fits(spec: SweepSpec, address: str | None) -> None:
    """Refuse a sweep whose trials cannot fit on the cluster (Tune would wait
    forever). An autoscaling cluster may grow: DYNSWEEP_AUTOSCALING=1 skips the
    check for a cluster given by address."""
    if (address or os.environ.get("RAY_ADDRESS")) and os.environ.get("DYNSWEEP_AUTOSCALING") == "1":
        return
    problem = check_resources(spec, ray.cluster_resources())
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
    note = note or _say
    exp = experiment_path(name_or_path, storage)
    spec, ctx = read_manifest(exp, tracking_uri)
    files.check_writable(exp)
    with _interruptible() as stop, files.held(exp, note):
        store = tracking.open_store(ctx.tracking_uri, ctx.artifact_root, experiment=spec.name)
        if not (tune.Tuner.can_restore(exp) and _saved_state(exp) is not None):
            note(f"sweep {spec.name} stopped before its first trial: it starts now")
            return _tune(spec, ctx, store, exp, address,
                         Progress(spec.n_trials(), spec.base.train.epochs,
                                  base=spec.base.model_dump(mode="json")), stop)
        # a searcher (Optuna) learns a trial's result only from Tune: there, Tune runs it again
        ended = {r.trial_id for r in tracking.trial_runs(store, spec.name, ctx.parent_run_id)
                 if r.status in ENDED} if spec.search.kind == "grid" else set()
        for line in settle_ended_trials(exp, ended) + repair_checkpoints(exp):
            note(line)
        init_ray(address, spec)
        _check_fits(spec, address)
        tuner = tune.Tuner.restore(exp, trainable=_trainable(spec, ctx),
                                   resume_unfinished=True, resume_errored=not restart_errored,
                                   restart_errored=restart_errored)
        results = _fit(tuner, stop, exp, store)
        return _finish(spec, ctx, store, exp, results)


def _finish(spec: SweepSpec, ctx: SweepContext, store: Store, exp: str, results) -> SweepOutcome:
    trials = tune.ExperimentAnalysis(exp).trials
    states = member_states({str(t): (t.status, t.config) for t in trials})
    _close_open_runs(store, ctx, states)
    if spec.stopper is not None:
        _record_stops(store, ctx, exp, {t.trial_id: str(t) for t in trials})
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


# ------------------------------------------------------------------ stopper
STOPPER_DIR = "stopper"       # <experiment>/stopper/<Tune trial id>.json


class SpecStopper(tune.Stopper):
    """The spec's stopper (`sweeps.stoppers`) in Tune. At each epoch-end
    report of a trial, its value of the stopper's metric joins the trial's
    series (keyed by step, with the epoch) and the pure rule reads the series
    up to that step; the trial stops when the rule fires. The final report
    (`status_*`, the last epoch's values again) adds nothing.

    The series of each trial is saved in <experiment>/stopper/<trial id>.json
    after each value and read back the first time a trial reports to a new
    driver, so a resumed sweep's stopper goes on from everything its trials
    reported before (a trial that resumes from an older checkpoint reports
    the same values at the same steps again; only the steps up to the one
    reported count). A stopped trial's file records its stop epoch and step,
    which `_record_stops` tags on its MLflow run (`stopper/epoch`)."""

    def __init__(self, rule: Stopper, exp: str):
        self.rule, self.exp = rule, exp
        self._series: dict[str, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"rule": self.rule, "exp": self.exp}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["rule"], state["exp"])

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if "step" not in result or any(str(k).startswith("status_") for k in result):
            return False
        record = self._series.get(trial_id) or _read_stopper(self.exp, trial_id)
        self._series[trial_id] = record
        step = int(result["step"])
        value = result.get(self.rule.metric)
        record["series"][str(step)] = [float(result.get("epoch", math.nan)),
                                       math.nan if value is None else float(value)]
        upto = sorted((int(s), e, v) for s, (e, v) in record["series"].items() if int(s) <= step)
        stop = self.rule.stop_index([v for _, _, v in upto])
        if stop is not None:
            record["stop"] = {"epoch": upto[stop][1], "step": upto[stop][0]}
        _write_stopper(self.exp, trial_id, record)
        return stop is not None

    def stop_all(self) -> bool:
        return False


def _stopper_file(exp: str, trial_id: str) -> str:
    return files.join(exp, STOPPER_DIR, f"{trial_id}.json")


def _read_stopper(exp: str, trial_id: str) -> dict[str, Any]:
    path = _stopper_file(exp, trial_id)
    return json.loads(files.read_text(path)) if files.exists(path) else {"series": {}}


def _write_stopper(exp: str, trial_id: str, record: dict[str, Any]) -> None:
    """Whole or not at all: written beside, then moved over the old one."""
    path = _stopper_file(exp, trial_id)
    files.write_text(path + ".tmp", json.dumps(record))
    fs, local = files.filesystem(path)
    fs.move(local + ".tmp", local)


def _record_stops(store: Store, ctx: SweepContext, exp: str, names: dict[str, str]) -> None:
    """Tag each trial the stopper stopped with the epoch and step it stopped at
    (`stopper/epoch`, `stopper/step`)."""
    runs = None
    for trial_id, name in names.items():
        path = _stopper_file(exp, trial_id)
        if not files.exists(path):
            continue
        stop = json.loads(files.read_text(path)).get("stop")
        if stop is None:
            continue
        if runs is None:
            runs = {r.trial_id: r.run_id for r in tracking.trial_runs(store, ctx.spec_name, ctx.parent_run_id)}
        if name in runs:
            store.set_tags(runs[name], {"stopper/epoch": f"{stop['epoch']:g}", "stopper/step": str(stop["step"])})


# ------------------------------------------------------------ interruptions
def _say(line: str) -> None:
    print(line, file=sys.stderr)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the sweep; Tune saved its state first, the
    parent run stays RUNNING and `resume_sweep` continues it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Stop:
    """The SIGINT/SIGTERM handler of a sweep. While Tune runs, the first signal
    stops it the way Tune stops on Ctrl-C (trials stopped, experiment state
    saved) and `_fit` raises Interrupted afterwards; outside `fit`, or on a
    second signal, Interrupted is raised at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.got: list[int] = []
        self.idle = signal.getsignal(signal.SIGUSR1)

    def __call__(self, signum, frame):
        tune_stop = signal.getsignal(signal.SIGUSR1)      # Tune's own, while fit runs
        if self.got or tune_stop is self.idle or not callable(tune_stop):
            raise Interrupted(signum)
        self.got.append(signum)
        tune_stop(signum, frame)

    def install(self) -> None:
        for s in self.SIGNALS:
            signal.signal(s, self)


@contextlib.contextmanager
def _interruptible():
    stop = _Stop()
    before = {s: signal.getsignal(s) for s in stop.SIGNALS}
    stop.install()
    try:
        yield stop
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def _fit(tuner, stop: _Stop, exp: str, store: Store):
    """tuner.fit(), then only the checkpoints the saved state names are kept. A
    tracking store that stops answering for its outage bound stops Tune as Ctrl-C
    does (Tune's SIGUSR1 handler), then TrackingDown is raised: resumable."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"      # ours forwards to Tune's
    stop.install()                                       # again: ray.init sets its SIGTERM handler
    usr1 = signal.getsignal(signal.SIGUSR1)

    def stop_tune() -> bool:
        if signal.getsignal(signal.SIGUSR1) is usr1:      # fit has not installed Tune's yet
            return False
        os.kill(os.getpid(), signal.SIGUSR1)
        return True
    try:
        with store.watch(stop_tune) as watch:
            results = tuner.fit()
    finally:
        signal.signal(signal.SIGUSR1, usr1)
    prune_saved_checkpoints(exp)
    if stop.got:
        raise Interrupted(stop.got[0])
    watch.check()
    return results


# ------------------------------------------------------------- checkpoints
# A trial's checkpoints are <experiment>/<trial>/checkpoint_NNNNNN, numbered
# in order. Restoring a sweep reads the newest experiment_state-*.json in the
# experiment folder (saved every few seconds, not at every checkpoint); each
# trial's entry there names the checkpoint it restores from.
_CHECKPOINT = re.compile(r"checkpoint_(\d+)$")


def _checkpoint_index(path: str | None) -> int | None:
    match = _CHECKPOINT.search(path.rstrip("/")) if path else None
    return int(match.group(1)) if match else None


def _saved_state(exp: str, fs=None) -> tuple[str, dict[str, Any]] | None:
    """(path, content) of the experiment state a restore would read, or None."""
    from pyarrow.fs import FileSelector

    if fs is None:
        fs, exp = files.filesystem(exp)
    names = [i.base_name for i in fs.get_file_info(FileSelector(exp, allow_not_found=True))]
    newest = max(fnmatch.filter(names, "experiment_state-*.json"), default=None)
    if newest is None:
        return None
    path = f"{exp}/{newest}"
    with fs.open_input_stream(path) as f:
        return path, json.loads(f.read().decode())


def _saved_metadata(entry: list[str]):
    """A trial's run metadata (its checkpoint manager) from its experiment-state entry."""
    from ray.tune.trainable.metadata import _TrainingRunMetadata
    return _TrainingRunMetadata.from_json_state(entry[1])


def _saved_checkpoint_index(exp: str, fs, trial_id: str) -> int | None:
    """Index of the checkpoint the saved experiment state names for one trial."""
    try:
        saved = _saved_state(exp, fs)
    except (OSError, ValueError):          # being written right now: keep everything
        return None
    for entry in (saved[1]["trial_data"] if saved else []):
        if json.loads(entry[0]).get("trial_id") == trial_id:
            latest = _saved_metadata(entry).checkpoint_manager.latest_checkpoint_result
            return _checkpoint_index(latest.checkpoint.path) if latest else None
    return None


class PruneCheckpoints(tune.Callback):
    """Deletes a trial's checkpoints older than both its latest one and the one
    the saved experiment state names, so a restore always finds its checkpoint
    and failed workers restart from the latest."""

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        fs = trial.storage.storage_filesystem
        try:
            keep_from = min(_checkpoint_index(trial.checkpoint.path) if trial.checkpoint else -1,
                            _saved_checkpoint_index(trial.storage.experiment_fs_path, fs,
                                                    trial.trial_id) or -1)
            removed = _delete_checkpoints_before(fs, trial.storage.trial_fs_path, keep_from)
        except Exception as exc:        # pruning must never stop a sweep: keep them, try next time
            print(f"could not prune the checkpoints of {trial}: {exc}", file=sys.stderr)
            return
        manager = trial.run_metadata.checkpoint_manager
        manager._checkpoint_results = [r for r in manager._checkpoint_results
                                       if r.checkpoint.path.rstrip("/") not in removed]


def prune_saved_checkpoints(exp: str) -> None:
    """After `fit` saved the final experiment state: each trial keeps only the
    checkpoint that state names."""
    fs, path = files.filesystem(exp)
    saved = _saved_state(path, fs)
    for entry in (saved[1]["trial_data"] if saved else []):
        latest = _saved_metadata(entry).checkpoint_manager.latest_checkpoint_result
        if latest is not None:
            trial_dir = latest.checkpoint.path.rstrip("/").rsplit("/", 1)[0]
            _delete_checkpoints_before(fs, trial_dir, _checkpoint_index(latest.checkpoint.path))


def _delete_checkpoints_before(fs, trial_dir: str, keep_from: int | None) -> set[str]:
    """Delete checkpoint_N folders of one trial with N < keep_from; returns their paths."""
    from pyarrow.fs import FileSelector

    removed: set[str] = set()
    if not keep_from or keep_from <= 0:
        return removed
    for info in fs.get_file_info(FileSelector(trial_dir, allow_not_found=True)):
        index = _checkpoint_index(info.path)
        if index is not None and index < keep_from:
            fs.delete_dir(info.path)
            removed.add(info.path.rstrip("/"))
    return removed


ENDED = ("finished", "diverged")        # MLflow status tags a trial sets once it is over


def settle_ended_trials(exp: str, ended: set[str]) -> list[str]:
    """Before a restore: Tune saves its experiment state every ten seconds or
    so, and a driver killed right after a trial ended leaves a state in which
    that trial still runs, from an older checkpoint; restored, Tune would train
    it again. A trial whose MLflow run has ended (a pack: every member's run;
    `ended`: their trial names) is marked TERMINATED there, with its newest
    checkpoint (a trial saves its final one before it ends its run) and the
    result reported with that checkpoint. Returns one line per trial."""
    fs, path = files.filesystem(exp)
    saved = _saved_state(path, fs)
    if saved is None:
        return []
    state_path, state = saved
    notes = []
    for entry in state["trial_data"]:
        trial = json.loads(entry[0])
        name = trial.get("custom_trial_name") or trial["trial_id"]
        if (trial["status"] not in ("RUNNING", "PENDING", "PAUSED")
                or not set(member_names(trial["config"]) or [name]) <= ended):
            continue
        metadata = _saved_metadata(entry)
        newest = _newest_checkpoint(fs, f"{path}/{trial['relative_logdir']}")
        named = metadata.checkpoint_manager.latest_checkpoint_result
        if newest is not None and (named is None or _checkpoint_index(newest) > _checkpoint_index(
                named.checkpoint.path)):
            from ray.train._internal.session import _TrainingResult
            with fs.open_input_stream(f"{newest}/{REPORTED_FILE}") as f:
                reported = json.loads(f.read().decode())
            metadata.checkpoint_manager.register_checkpoint(
                _TrainingResult(tune.Checkpoint(newest, filesystem=fs), reported))
        latest = metadata.checkpoint_manager.latest_checkpoint_result
        if latest is not None:         # what `status` shows: the trial's last epoch, not an older one
            metadata.last_result = {**metadata.last_result, **latest.metrics, "done": True}
        trial["status"] = "TERMINATED"
        entry[0] = json.dumps(trial)
        metadata.invalidate_cache()
        entry[1] = metadata.get_json_state()
        notes.append(f"{name}: ended before the driver stopped; not run again")
    if notes:
        with fs.open_output_stream(state_path) as f:
            f.write(json.dumps(state).encode())
    return notes


def _newest_checkpoint(fs, trial_dir: str) -> str | None:
    """The path of a trial's highest-numbered checkpoint that holds its reported result."""
    from pyarrow.fs import FileSelector

    found = [(_checkpoint_index(i.path), i.path.rstrip("/"))
             for i in fs.get_file_info(FileSelector(trial_dir, allow_not_found=True))]
    found = [(n, p) for n, p in found if n is not None and _file_exists(fs, f"{p}/{REPORTED_FILE}")]
    return max(found)[1] if found else None


def _file_exists(fs, path: str) -> bool:
    from pyarrow.fs import FileType
    return fs.get_file_info(path).type == FileType.File


def repair_checkpoints(exp: str) -> list[str]:
    """Before a restore: a trial whose saved checkpoint is gone (deleted by an
    older dynsweep, or by hand) falls back to its newest checkpoint that still
    exists, or starts over. Returns one line per trial changed."""
    fs, path = files.filesystem(exp)
    saved = _saved_state(path, fs)
    if saved is None:
        return []
    state_path, state = saved
    notes = []
    for entry in state["trial_data"]:
        metadata = _saved_metadata(entry)
        manager = metadata.checkpoint_manager
        latest = manager.latest_checkpoint_result if manager else None
        if latest is None or _dir_exists(fs, latest.checkpoint.path):
            continue
        kept = [r for r in manager._checkpoint_results if _dir_exists(fs, r.checkpoint.path)]
        manager._checkpoint_results = kept
        manager._latest_checkpoint_result = kept[-1] if kept else None
        metadata.invalidate_cache()
        entry[1] = metadata.get_json_state()
        name = json.loads(entry[0]).get("custom_dirname") or json.loads(entry[0])["trial_id"]
        lost = latest.checkpoint.path.rsplit("/", 1)[-1]
        notes.append(f"{name}: {lost} is gone; continuing from "
                     f"{kept[-1].checkpoint.path.rsplit('/', 1)[-1]}" if kept else
                     f"{name}: {lost} is gone and no older one is left; the trial starts over")
    if notes:
        with fs.open_output_stream(state_path) as f:
            f.write(json.dumps(state).encode())
    return notes


def _dir_exists(fs, path: str) -> bool:
    from pyarrow.fs import FileType
    return fs.get_file_info(path).type == FileType.Directory


def status_rows(exp: str, ctx: SweepContext) -> list[dict[str, Any]]:
    """One row per trial: name, Tune state, progress, key metrics, MLflow run id and status."""
    store = Store(ctx.tracking_uri, ctx.artifact_root)
    analysis = tune.ExperimentAnalysis(exp)
    mlflow_runs, last_metrics = {}, {}
    try:
        for r in tracking.trial_runs(store, ctx.spec_name, ctx.parent_run_id):
            mlflow_runs[r.trial_id] = (r.run_id, r.status)
            last_metrics[r.trial_id] = r.metrics
    except LookupError:
        pass
    rows = []
    for trial in sorted(analysis.trials, key=lambda t: str(t)):
        last = trial.last_result or {}
        if packs.PACK_KEY in trial.config:
            rows += _member_rows(trial, ctx, mlflow_runs, last_metrics)
            continue
        run_id, status = mlflow_runs.get(str(trial), (None, None))
        epochs = trial_config(trial.config, ctx.base).train.epochs
        rows.append({"trial": str(trial), "state": trial.status, "status": status,
                     "progress": f"{last.get('epoch', 0):.0f}/{epochs} epochs", "step": last.get("step"),
                     "train/loss": last.get("train/loss"), "val/acc": last.get("val/acc"),
                     "λ_H¹": last.get("hessian/top"), "λ_K¹": last.get("gradcov/top"),
                     "mlflow run": run_id})
    return sorted(rows, key=lambda row: row["trial"])    # a pack's members among the other trials


def _member_rows(trial, ctx: SweepContext, mlflow_runs: dict[str, tuple],
                 last_metrics: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """A pack's rows: one per member, its metrics from its MLflow run."""
    rows, last = [], trial.last_result or {}
    for member in trial.config[packs.PACK_KEY]["members"]:
        run_id, status = mlflow_runs.get(member["name"], (None, None))
        metrics = last_metrics.get(member["name"], {})
        epochs = trial_config({TRIAL_KEY: member["overrides"]}, ctx.base).train.epochs
        rows.append({"trial": member["name"], "state": trial.status, "status": status,
                     "progress": f"{metrics.get('train/epoch', 0):.0f}/{epochs} epochs",
                     "step": metrics.get("final/steps", last.get("step")),
                     "train/loss": metrics.get("train/loss"), "val/acc": metrics.get("val/acc"),
                     "λ_H¹": metrics.get("hessian/top"), "λ_K¹": metrics.get("gradcov/top"),
                     "mlflow run": run_id})
    return rows


# ---------------------------------------------------------------- progress
class Progress(tune.Callback):
    """One line per change: trials done/running/failed, trial-epochs done, and
    an ETA from the trial-epochs finished per second in this session (not
    from trials, which run in parallel and unevenly); the trial's epoch and
    key metrics; a last `N/N done` line.

    Picklable (Tune stores callbacks with the experiment, so a resumed sweep
    reports progress too); the console is created lazily.
    """

    def __init__(self, total: int | None, epochs: int | None = None, every_s: float = 10.0,
                 base: dict[str, Any] | None = None):
        self.total = total
        self.epochs = epochs
        self.every_s = every_s
        self.base = base                           # the spec's base config: each trial's own budget
        self._start = time.monotonic()
        self._last = 0.0
        self._console = None
        self._begun: float | None = None           # the first trial's start: the rate's clock
        self._epoch: dict[str, float] = {}        # trial -> epochs done
        self._first: dict[str, float] = {}        # trial -> epochs done when first seen here
        self._planned: dict[str, float] = {}      # trial -> epochs it will run

    def __getstate__(self) -> dict[str, Any]:
        return {"total": self.total, "epochs": self.epochs, "every_s": self.every_s, "base": self.base}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["total"], state.get("epochs"), state["every_s"], state.get("base"))

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
            for key, label in (("val/acc", "val/acc"), ("hessian/top", "λ_H¹"), ("gradcov/top", "λ_K¹")):
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
                           f"{_restart_point(trial)} ({count})[/yellow]")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._show(trials, f"[red]error in {trial}[/red] (retried up to max_failures)")

    def on_experiment_end(self, trials, **info):
        states = [t.status for t in trials]
        self._print(f"{states.count('TERMINATED')}/{self.total or len(trials)} done"
                    f"{', %d failed' % states.count('ERROR') if 'ERROR' in states else ''} "
                    f"in {_clock(time.monotonic() - self._start)}")

    def _plan(self, trial, epoch: float, step: float) -> None:
        """A trial's own epoch budget: its (swept) `train.epochs`, cut by
        `train.max_steps` once its steps per epoch are known."""
        if self.base is None or str(trial) in self._planned or not epoch or not step:
            return
        config = trial.config                      # a pack's members share their train config
        if packs.PACK_KEY in config:
            config = {TRIAL_KEY: config[packs.PACK_KEY]["members"][0]["overrides"]}
        train = trial_config(config, self.base).train
        cut = math.ceil(train.max_steps / (step / epoch)) if train.max_steps else train.epochs
        self._planned[str(trial)] = float(min(train.epochs, cut))

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
        where = "its node" if _node_lost(cause.actor_id) else "its worker process"
        return f"lost {where} ({type(cause).__name__}: {_clip(lines[0])})"
    return f"failed ({type(cause).__name__}: {_clip(lines[-1])})"


def _node_lost(actor_id) -> bool:
    """Whether the node the actor ran on is gone: dead to the GCS, or its raylet
    no longer answers (the GCS declares a node dead only after a few missed
    health checks, seconds after its worker connections dropped)."""
    import socket
    from ray._private import state

    try:
        node = state.actors(actor_id.hex() if isinstance(actor_id, bytes) else actor_id)["Address"]["NodeID"]
        (info,) = [n for n in ray.nodes() if n["NodeID"] == node]
    except Exception:               # an actor or node the GCS no longer knows: nothing to tell
        return False
    if not info["Alive"]:
        return True
    try:
        socket.create_connection((info["NodeManagerAddress"], info["NodeManagerPort"]), timeout=2).close()
    except OSError:
        return True
    return False


def _restart_point(trial) -> str:
    latest = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
    if latest is None:
        return "its start (no checkpoint yet)"
    epoch = latest.metrics.get("epoch")
    name = latest.checkpoint.path.rstrip("/").rsplit("/", 1)[-1]
    return f"{name}" + (f" (epoch {epoch:.0f})" if isinstance(epoch, (int, float)) else "")


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _clock(seconds: float) -> str:
    if seconds != seconds:
        return "--:--"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60:d}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"
