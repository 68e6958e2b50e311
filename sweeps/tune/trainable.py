"""Trials in Tune: the session adapter and the trainables.

`TuneSession` is a `trial.Session` backed by Tune's function API. A trial is
one of three trainables, by the spec's resources: a single worker
(`sweeps.trial.run_trial`), several workers as a Ray Train TorchTrainer (DDP;
rank 0 probes, logs and checkpoints), or a pack of grid trials trained at
once (`sweeps.packs.run_pack`). `trainable(spec, ctx)` picks it and gives it
its CPUs and GPUs.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ray import tune

from sweeps import packs
from sweeps import storage as files
from sweeps.context import SweepContext
from sweeps.spec import SweepSpec
from sweeps.trial import run_trial


# ------------------------------------------------------------ the session
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


# ------------------------------------------------------------ trainables
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


def trainable(spec: SweepSpec, ctx: SweepContext):
    """The spec's trainable with its resources: a pack, a multi-worker or a single-worker trial."""
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
