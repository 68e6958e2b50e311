"""SIGINT and SIGTERM while a sweep runs, without Ray.

`interruptible()` installs a `Stop` handler for the sweep's lifetime. While
Tune runs (`sweeps.tune.fit`), the first signal stops it the way Tune stops
on Ctrl-C (trials stopped, experiment state saved) and `Interrupted` is
raised once `fit` returns; outside `fit`, or on a second signal, at once.
The sweep stays resumable either way.
"""
from __future__ import annotations

import contextlib
import signal


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the sweep; Tune saved its state first, the
    parent run stays RUNNING and `resume_sweep` continues it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Stop:
    """The SIGINT/SIGTERM handler of a sweep. While Tune runs, the first signal
    stops it the way Tune stops on Ctrl-C (trials stopped, experiment state
    saved) and `fit` raises Interrupted afterwards; outside `fit`, or on a
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
def interruptible():
    stop = Stop()
    before = {s: signal.getsignal(s) for s in stop.SIGNALS}
    stop.install()
    try:
        yield stop
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
