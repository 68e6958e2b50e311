"""Running Tune: a new sweep's Tuner (`run`) or a stopped sweep's restore
(`restore`), fit under the sweep's signal handler (`sweeps.interrupts`) and
the tracking store's outage watch; afterwards each trial keeps only the
checkpoint the saved experiment state names. Returns Tune's results.
"""
from __future__ import annotations

import os
import signal

from ray import tune

from sweeps.context import SweepContext
from sweeps.interrupts import Interrupted, Stop
from sweeps.spec import SweepSpec
from sweeps.tracking import Store
from sweeps.tune import checkpoints
from sweeps.tune.config import param_space, run_config, tune_config
from sweeps.tune.progress import Progress
from sweeps.tune.trainable import trainable


def run(spec: SweepSpec, ctx: SweepContext, exp: str, store: Store, stop: Stop, *,
        units: list[dict] | None, progress: bool = False):
    """A new Tuner over the sweep's Tune trials (`units`, from
    `sweeps.context.tune_units`: packs or trials of a grid, None for a
    search), fit; with `progress`, a live display counts them and shows the
    headline columns of the sweep's probes (`ctx.columns`)."""
    callbacks = []
    if progress:
        callbacks.append(Progress(len(units) if units is not None else spec.n_trials(),
                                  spec.base.train.epochs, base=spec.base.model_dump(mode="json"),
                                  columns=ctx.columns))
    tuner = tune.Tuner(trainable(spec, ctx), param_space=param_space(spec, units), tune_config=tune_config(spec),
                       run_config=run_config(spec, ctx.storage, callbacks))
    return _fit(tuner, stop, exp, store)


def restorable(exp: str) -> bool:
    """Whether Tune saved the sweep in `exp` (else it stopped before its first trial)."""
    return tune.Tuner.can_restore(exp) and checkpoints.saved_state(exp) is not None


def restore(spec: SweepSpec, ctx: SweepContext, exp: str, store: Store, stop: Stop,
            restart_errored: bool):
    """The saved sweep restored and fit: unfinished trials continue from their
    last checkpoints, errored ones too or (`restart_errored`) from scratch.
    Progress callbacks come back with Tune's pickled RunConfig."""
    tuner = tune.Tuner.restore(exp, trainable=trainable(spec, ctx),
                               resume_unfinished=True, resume_errored=not restart_errored,
                               restart_errored=restart_errored)
    return _fit(tuner, stop, exp, store)


def _fit(tuner, stop: Stop, exp: str, store: Store):
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
    checkpoints.prune_saved_checkpoints(exp)
    if stop.got:
        raise Interrupted(stop.got[0])
    watch.check()
    return results
