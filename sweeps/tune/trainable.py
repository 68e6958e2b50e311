"""Trials in Tune: the session adapter and the trainables.

`RaySession` is a `trial.Session` over Ray's report/checkpoint API: Tune's
in a Tune trial, Ray Train's in a DDP worker. A trial is one of two
trainables, by the spec's resources: one worker (an unpacked trial, or a
pack of grid trials trained at once), or several workers as a Ray Train
TorchTrainer (DDP; rank 0 probes, logs and checkpoints). Every worker runs
the one entry, `sweeps.worker.run_unit`. `trainable(spec, ctx)` picks the
trainable and gives it its CPUs and GPUs.
"""
from __future__ import annotations

from dataclasses import asdict
from types import ModuleType
from typing import Any

from ray import tune

from sweeps import storage as files
from sweeps.context import SweepContext
from sweeps.spec import SweepSpec
from sweeps.worker import run_unit


# ------------------------------------------------------------ the session
class RaySession:
    """trial.Session over `api`, which is `ray.tune` in a Tune trial and
    `ray.train` in a Ray Train worker (each has its own Checkpoint and report)."""

    def __init__(self, api: ModuleType, name: str):
        self.api, self.name = api, name

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        checkpoint = self.api.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self.api.report(metrics, checkpoint=checkpoint)

    def checkpoint_dir(self) -> str | None:
        checkpoint = self.api.get_checkpoint()
        return checkpoint.to_directory() if checkpoint is not None else None

    def trial_name(self) -> str:
        return self.name


def _tune_session() -> RaySession:
    return RaySession(tune, tune.get_context().get_trial_name())


# ------------------------------------------------------------ trainables
def _one_worker(config: dict[str, Any], ctx: SweepContext) -> None:
    """A Tune trial trained in its own worker: an unpacked trial, or a pack
    of grid trials trained at once (`sweeps.packs`)."""
    run_unit(config, ctx, _tune_session())


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
    """One DDP rank of a multi-worker trial."""
    import ray.train

    ctx = SweepContext(**loop_config["ctx"])
    run_unit(loop_config["config"], ctx, RaySession(ray.train, loop_config["trial_name"]), distributed=True)


def trainable(spec: SweepSpec, ctx: SweepContext):
    """The spec's trainable with its resources: a multi-worker trial, or one
    worker (a spec with packs has one worker per trial, `spec._check_pack`)."""
    r = spec.resources
    if r.workers_per_trial > 1:
        fn = tune.with_parameters(_multi_worker, ctx=ctx, workers=r.workers_per_trial,
                                  use_gpu=r.gpus_per_trial > 0)
        # the Train workers reserve their own CPUs/GPUs; the Tune trial (1 CPU) coordinates
        return tune.with_resources(fn, {"cpu": 1})
    fn = tune.with_parameters(_one_worker, ctx=ctx)
    return tune.with_resources(fn, {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial})
