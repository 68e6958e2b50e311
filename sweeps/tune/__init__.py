"""Everything that imports Ray: one module per job.

    cluster.py      joining a cluster or starting a local Ray, token auth,
                    a local Ray's resources, the env a cluster's workers get
    trainable.py    the Ray session adapter and the trainables (one worker:
                    a trial or a pack; multi-worker via Ray Train)
    config.py       the Tuner's settings: param space, TuneConfig, RunConfig
    fit.py          a Tuner fit or restored, under the sweep's signal handler
    stopper.py      the spec's stopper as a Tune stopper, and its record files
    progress.py     the `Progress` callback: the lines a running sweep prints
    checkpoints.py  Tune's saved experiment state and the trials' checkpoints:
                    the one module that uses Tune's private internals

The driver (`sweeps.driver`) imports these inside the functions that need
them. This package's own import loads nothing, and `checkpoints` imports Ray
only inside its functions, so `dynsweep status` reads a sweep without Ray.
"""
