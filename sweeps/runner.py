"""The only module that talks to Ray (Tune, and Train for multi-worker trials).

run_sweep:    spec -> Tuner (grid or Optuna, FIFO or ASHA) -> fit, with live progress.
resume_sweep: Tuner.restore of a stopped sweep: unfinished (and errored) trials
              continue from their last checkpoints; finished ones are not re-run.
sweep_status: one row per trial from Tune's experiment state + the MLflow run id.

Layout: <storage>/<spec name>/ is Tune's experiment folder, and
dynsweep.json beside Tune's files records what resume needs (the spec, the
MLflow parent run, the tracking URI, the data cache). <storage> is a local or
shared-filesystem path, or a URI Tune understands (s3://, gs://).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from sweeps.errors import Unavailable
from sweeps.spec import SpecError, SweepSpec, check_resources, parse_spec, trial_name
from sweeps.trial import TRIAL_KEY, SweepContext, run_trial, trial_config
from sweeps import tracking
from sweeps.tracking import Store, git_sha

MANIFEST = "dynsweep.json"


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
                                  storage_path=_join(ctx.storage, "_ray_train")),
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


def _trainable(spec: SweepSpec, ctx: SweepContext):
    r = spec.resources
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
    base = spec.base.model_dump(mode="json")

    def name(trial) -> str:
        """Grid: content hash + seed (deterministic). Optuna may sample a config
        twice, so its names also carry Tune's trial id."""
        readable = trial_name(trial_config(trial.config, base))
        return readable if spec.search.kind == "grid" else f"{readable}-{trial.trial_id}"

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


def _run_config(spec: SweepSpec, storage: str, callbacks: list) -> tune.RunConfig:
    return tune.RunConfig(
        name=spec.name, storage_path=storage,
        failure_config=tune.FailureConfig(max_failures=spec.fault_tolerance.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        callbacks=callbacks, verbose=0)


# ------------------------------------------------------------------ public
@dataclass
class SweepOutcome:
    name: str
    experiment_path: str
    parent_run_id: str
    rows: list[dict[str, Any]]
    errors: int


def init_ray(address: str | None, spec: SweepSpec) -> None:
    """Connect to the cluster at `address` (else $RAY_ADDRESS), or start a local
    Ray. Either way with Ray token auth as the cluster has it (`_token_auth`);
    a cluster that does not answer or refuses us is `Unavailable`, one line.
    A cluster's workers do not inherit our environment: they get the MLflow
    client settings (credentials) through the job's runtime env."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")   # our Progress lines replace Tune's tables
    # short trials checkpoint every epoch by design: no warning about snapshot frequency
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
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
    r = spec.resources
    need = max(r.cpus_per_trial, 1 + r.workers_per_trial if r.workers_per_trial > 1 else 0)
    ray.init(num_cpus=max(os.cpu_count() or 1, int(need + 0.999)), include_dashboard=False,
             log_to_driver=False, configure_logging=False)


def _worker_env() -> dict[str, Any] | None:
    """A runtime env with our MLflow client settings, less those that a submitted
    job's own runtime env already sets (Ray refuses the same key twice)."""
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env") or {}
    env = {k: v for k, v in tracking.client_env().items() if k not in (job.get("env_vars") or {})}
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
              address: str | None = None, device: str = "auto", progress=None) -> SweepOutcome:
    storage = storage_location(storage)
    exp = _join(storage, spec.name)
    # everything the sweep runs on answers before its parent run exists
    _check_writable(exp)
    store = tracking.open_store(tracking_uri, experiment=spec.name)
    init_ray(address, spec)
    _check_fits(spec, address)
    parent = tracking.start_sweep(store, spec.name, spec.spec_hash(), git_sha(), spec.description,
                                  params={"n_trials": spec.n_trials()})
    if spec.conjectures:
        _register_plans(store, parent, spec)
    ctx = SweepContext(spec_name=spec.name, base=spec.base.model_dump(mode="json"),
                       tracking_uri=tracking_uri, artifact_root=store.artifact_root,
                       parent_run_id=parent, cache_dir=str(Path(cache_dir).resolve()),
                       storage=storage,
                       checkpoint_every_epochs=spec.fault_tolerance.checkpoint_every_epochs,
                       device=device, plugins=tuple(spec.plugins))
    _write_text(_join(exp, MANIFEST), json.dumps({"spec": spec.model_dump(mode="json"),
                                                  "context": asdict(ctx)}, indent=2))
    callbacks = [progress] if progress is not None else []
    tuner = tune.Tuner(_trainable(spec, ctx), param_space=param_space(spec),
                       tune_config=_tune_config(spec), run_config=_run_config(spec, storage, callbacks))
    results = tuner.fit()
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
        raise SpecError(f"{spec.name}: {problem}{hint}")


def resume_sweep(name_or_path: str, *, storage: str | Path, tracking_uri: str | None = None,
                 restart_errored: bool = False, address: str | None = None) -> SweepOutcome:
    """Progress callbacks come back with Tune's pickled RunConfig. `tracking_uri`
    overrides the recorded one (the store moved, e.g. to a tracking server)."""
    exp = experiment_path(name_or_path, storage)
    spec, ctx = read_manifest(exp, tracking_uri)
    _check_writable(exp)
    store = tracking.open_store(ctx.tracking_uri, ctx.artifact_root, experiment=spec.name)
    init_ray(address, spec)
    _check_fits(spec, address)
    tuner = tune.Tuner.restore(exp, trainable=_trainable(spec, ctx),
                               resume_unfinished=True, resume_errored=not restart_errored,
                               restart_errored=restart_errored)
    results = tuner.fit()
    return _finish(spec, ctx, store, exp, results)


def _finish(spec: SweepSpec, ctx: SweepContext, store: Store, exp: str, results) -> SweepOutcome:
    states = {str(t): t.status for t in tune.ExperimentAnalysis(exp).trials}
    _close_open_runs(store, ctx, states)
    errors = sum(1 for r in results if r.error is not None)
    if all(state in ("TERMINATED", "ERROR") for state in states.values()):
        tracking.end_sweep(store, ctx.parent_run_id, "FAILED" if errors else "FINISHED")
    return SweepOutcome(spec.name, exp, ctx.parent_run_id, status_rows(exp, ctx), errors)


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


def experiment_path(name_or_path: str, storage: str | Path) -> str:
    """The experiment folder of a sweep given by name (under storage) or by its folder."""
    for exp in (storage_location(name_or_path), _join(storage_location(storage), name_or_path)):
        if _exists(_join(exp, MANIFEST)):
            return exp
    raise FileNotFoundError(f"no sweep {name_or_path!r} under {storage_location(storage)} "
                            f"(no {MANIFEST} there); see `dynsweep list --storage ...`")


def read_manifest(exp: str, tracking_uri: str | None = None) -> tuple[SweepSpec, SweepContext]:
    blob = json.loads(_read_text(_join(exp, MANIFEST)))
    ctx = SweepContext(**blob["context"])
    if tracking_uri:
        ctx = replace(ctx, tracking_uri=tracking_uri)
    return parse_spec(blob["spec"], source=_join(exp, MANIFEST)), ctx


def list_sweeps(storage: str | Path) -> list[dict[str, Any]]:
    from pyarrow.fs import FileSelector, FileType

    fs, root = _fs(storage_location(storage))
    if fs.get_file_info(root).type != FileType.Directory:
        return []
    rows = []
    for info in sorted(fs.get_file_info(FileSelector(root)), key=lambda i: i.base_name):
        manifest = fs.get_file_info(f"{info.path}/{MANIFEST}")
        if info.type != FileType.Directory or manifest.type != FileType.File:
            continue
        trials = [t for t in fs.get_file_info(FileSelector(info.path))
                  if fs.get_file_info(f"{t.path}/params.json").type == FileType.File]
        blob = json.loads(_read_text(_join(storage_location(storage), info.base_name, MANIFEST)))
        rows.append({"name": info.base_name, "trials": len(trials),
                     "modified": manifest.mtime.strftime("%Y-%m-%d %H:%M") if manifest.mtime else "-",
                     "description": blob["spec"].get("description", "").strip()[:60]})
    return rows


# ----------------------------------------------------------------- storage
def storage_location(location: str | Path) -> str:
    """A URI as given, or a local path made absolute (workers run elsewhere)."""
    text = str(location)
    return text.rstrip("/") if "://" in text else str(Path(text).expanduser().resolve())


def _join(location: str, *names: str) -> str:
    return "/".join([location.rstrip("/"), *names])


def _fs(location: str):
    import pyarrow.fs

    if "://" in location:
        return pyarrow.fs.FileSystem.from_uri(location)
    return pyarrow.fs.LocalFileSystem(), location


def _exists(location: str) -> bool:
    from pyarrow.fs import FileType

    fs, path = _fs(location)
    return fs.get_file_info(path).type == FileType.File


def _write_text(location: str, text: str) -> None:
    fs, path = _fs(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def _check_writable(location: str) -> None:
    """Create `location` and a file in it, or say in one line that the storage cannot be written."""
    probe = _join(location, ".dynsweep-write-check")
    try:
        _write_text(probe, "")
        fs, path = _fs(probe)
        fs.delete_file(path)
    except Exception as exc:   # OSError locally, pyarrow's errors for s3:// and gs://
        raise Unavailable(f"cannot write the sweep storage {location} ({type(exc).__name__}): "
                          f"check that it exists and is writable (on a cluster: shared by every node)"
                          ) from None


def _read_text(location: str) -> str:
    fs, path = _fs(location)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def status_rows(exp: str, ctx: SweepContext) -> list[dict[str, Any]]:
    """One row per trial: name, Tune state, progress, key metrics, MLflow run id and status."""
    store = Store(ctx.tracking_uri, ctx.artifact_root)
    analysis = tune.ExperimentAnalysis(exp)
    mlflow_runs = {}
    try:
        for r in tracking.trial_runs(store, ctx.spec_name, ctx.parent_run_id):
            mlflow_runs[r.trial_id] = (r.run_id, r.status)
    except LookupError:
        pass
    rows = []
    for trial in sorted(analysis.trials, key=lambda t: str(t)):
        last = trial.last_result or {}
        run_id, status = mlflow_runs.get(str(trial), (None, None))
        epochs = trial_config(trial.config, ctx.base).train.epochs
        rows.append({"trial": str(trial), "state": trial.status, "status": status,
                     "progress": f"{last.get('epoch', 0):.0f}/{epochs} epochs", "step": last.get("step"),
                     "train/loss": last.get("train/loss"), "val/acc": last.get("val/acc"),
                     "λ_H¹": last.get("hessian/top"), "λ_K¹": last.get("gradcov/top"),
                     "mlflow run": run_id})
    return rows


# ---------------------------------------------------------------- progress
class Progress(tune.Callback):
    """One line per change: trials done/running/failed, elapsed, ETA.

    Picklable (Tune stores callbacks with the experiment, so a resumed sweep
    reports progress too); the console is created lazily.
    """

    def __init__(self, total: int | None, every_s: float = 10.0):
        self.total = total
        self.every_s = every_s
        self._start = time.monotonic()
        self._last = 0.0
        self._console = None

    def __getstate__(self) -> dict[str, Any]:
        return {"total": self.total, "every_s": self.every_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["total"], state["every_s"])

    def on_trial_start(self, iteration, trials, trial, **info):
        self._show(trials, f"started {trial}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if time.monotonic() - self._last >= self.every_s:
            acc = result.get("val/acc")
            note = f"{trial} epoch {result.get('epoch', 0):.0f}" + (f" val/acc {acc:.3f}" if acc is not None else "")
            self._show(trials, note)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._show(trials, f"finished {trial}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._show(trials, f"[red]error in {trial}[/red] (retried up to max_failures)")

    def _show(self, trials, note: str) -> None:
        from rich.console import Console

        self._console = self._console or Console(stderr=True, highlight=False)
        self._last = time.monotonic()
        states = [t.status for t in trials]
        done, running = states.count("TERMINATED"), states.count("RUNNING")
        failed = states.count("ERROR")
        total = self.total or len(trials)
        elapsed = self._last - self._start
        eta = elapsed / done * (total - done - failed) if done else float("nan")
        self._console.print(f"[{done}/{total} done, {running} running, {failed} failed] "
                            f"elapsed {_clock(elapsed)} ETA {_clock(eta)} — {note}")


def _clock(seconds: float) -> str:
    if seconds != seconds:
        return "--:--"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60:d}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"
