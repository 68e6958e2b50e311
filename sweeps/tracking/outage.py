"""A tracking store that stops answering in the middle of a sweep (a server
restarted, a network blip, its database failing over).

Every MLflow call of a `Store` goes through `PatientClient`: while the store
does not answer, the call is tried again (every 1-5 s) until it has not
answered for the outage bound, `DYNSWEEP_TRACKING_OUTAGE_S` seconds (default
300); then it raises `TrackingDown`, one line naming the store. The trial
waits meanwhile: no metric is dropped, and a retried write is never stored
twice (MLflow ignores a metric identical to a logged one: same key, step,
value and timestamp; `create_run` looks for its run before trying again).

This loop is the retry policy of every dynsweep process: MLflow's own
per-request retries (`MLFLOW_HTTP_REQUEST_MAX_RETRIES`, default 7 with
exponential backoff, minutes per request) are off unless that variable is set.

While Tune runs, the driver asks the store every few seconds (`watch`); once it
has not answered for the bound, the sweep stops as on Ctrl-C (trials stopped,
checkpoints kept, runs left RUNNING) and fails with `TrackingDown`, and
`dynsweep resume` continues it once the store is back. Trials wait
`WORKER_GRACE_S` longer than the driver, so the driver decides.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from mlflow.exceptions import MlflowException

from sweeps.errors import Unavailable

log = logging.getLogger(__name__)

OUTAGE_ENV = "DYNSWEEP_TRACKING_OUTAGE_S"
DEFAULT_OUTAGE_S = 300.0
WORKER_GRACE_S = 60.0

_T = TypeVar("_T")


class TrackingDown(Unavailable):
    """The tracking store has not answered for the outage bound (one line)."""

    resumable = True          # the CLI adds the `dynsweep resume` command

    def __init__(self, uri: str, waited_s: float):
        super().__init__(f"MLflow at {uri} has not answered for {waited_s:.0f} s ({OUTAGE_ENV}="
                         f"{outage_bound():g}): the sweep stopped, its checkpoints and runs are kept; "
                         f"start the server again (mlflow/start_server.sh)")


def outage_bound() -> float:
    """Seconds a sweep waits for a tracking store that does not answer."""
    raw = os.environ.get(OUTAGE_ENV, "").strip()
    if not raw:
        return DEFAULT_OUTAGE_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:
        from sweeps.spec import SpecError        # bad input: exit 2 in one line
        raise SpecError(f"{OUTAGE_ENV}={raw!r}: give the seconds to wait for the tracking store (> 0)")
    return value


def own_retries() -> None:
    """Make `Patience` the retry policy of this process: MLflow's per-request
    retries (minutes each) off unless the user set them. Called where a store
    is opened or its client built, not at import."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def is_down(exc: BaseException) -> bool:
    """Whether `exc` says the store did not answer (as opposed to refusing the request):
    MLflow's REST client wraps connection errors, timeouts and 5xx/429 replies as
    `API request to <url> failed with ...`; a SQL store wraps an unreachable database
    as TEMPORARILY_UNAVAILABLE (a locked sqlite file is `retry`'s business)."""
    if not isinstance(exc, MlflowException):
        return False
    text = str(exc)
    if text.startswith("API request to ") and " failed with " in text:
        return True
    return exc.error_code == "TEMPORARILY_UNAVAILABLE" and "locked" not in text.lower()


class Patience:
    """The outage bound of one store: `outlast(fn)` calls fn until the store answers
    or has not answered for `seconds`. After one call gave up, calls that find the
    store still down give up at once (a trial marking its run errored does not
    wait a second time)."""

    def __init__(self, uri: str, seconds: float | None):
        self.uri = uri
        self.seconds = seconds            # None: no waiting (the check before a sweep)
        self._gave_up = False

    def outlast(self, fn: Callable[[], _T]) -> _T:
        began, delay = None, 1.0
        while True:
            try:
                result = fn()
            except Exception as exc:
                if self.seconds is None or not is_down(exc):
                    raise
                now = time.monotonic()
                if began is None:
                    began = now
                    log.warning("MLflow at %s does not answer (%s); waiting up to %.0f s",
                                self.uri, str(exc).splitlines()[0][:200], self.seconds)
                if self._gave_up or now - began >= self.seconds:
                    self._gave_up = True
                    raise TrackingDown(self.uri, now - began) from exc
                time.sleep(min(delay, self.seconds - (now - began)))
                delay = min(2 * delay, 5.0)
            else:
                if began is not None:
                    log.warning("MLflow at %s answers again after %.0f s", self.uri, time.monotonic() - began)
                self._gave_up = False
                return result


class PatientClient:
    """An MlflowClient whose every call waits out an outage (`Patience`)."""

    def __init__(self, client: Any, patience: Patience):
        own_retries()
        self._client = client
        self.patience = patience

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        if name == "create_run":
            return self._create_run

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.patience.outlast(lambda: attr(*args, **kwargs))
        return call

    def _create_run(self, experiment_id: str, start_time: int | None = None,
                    tags: dict[str, str] | None = None, run_name: str | None = None) -> Any:
        """create_run whose lost reply cannot make the run twice: a try after a failed
        one first looks for a run with its name and identifying tags."""
        tried = False

        def attempt() -> Any:
            nonlocal tried
            if tried and run_name:
                found = self._created(experiment_id, tags or {}, run_name)
                if found is not None:
                    return found
            tried = True
            return self._client.create_run(experiment_id, start_time=start_time, tags=tags,
                                           run_name=run_name)
        return self.patience.outlast(attempt)

    def _created(self, experiment_id: str, tags: dict[str, str], run_name: str) -> Any:
        def q(value: str) -> str:
            return str(value).replace("\\", "\\\\").replace("'", "\\'")
        clauses = [f"attributes.run_name = '{q(run_name)}'"]
        clauses += [f"tags.`{k}` = '{q(tags[k])}'" for k in ("mlflow.parentRunId", "dynsweep.kind", "trial_id")
                    if k in tags]
        found = self._client.search_runs([experiment_id], filter_string=" and ".join(clauses), max_results=1)
        return found[0] if found else None


class Watch:
    """The driver's view of the store while Tune runs (see `watch`)."""

    def __init__(self, uri: str, probe: Callable[[], Any], stop: Callable[[], bool], seconds: float):
        self.uri, self.probe, self.stop, self.seconds = uri, probe, stop, seconds
        self.every_s = min(5.0, max(0.5, seconds / 4))
        self.stopped_after: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dynsweep-tracking-watch", daemon=True)

    def _run(self) -> None:
        last_ok = time.monotonic()
        while not self._done.wait(self.every_s):
            try:
                self.probe()
            except Exception as exc:
                if not is_down(exc):              # it answered, if only to refuse: not an outage
                    last_ok = time.monotonic()
            else:
                last_ok = time.monotonic()
            down = time.monotonic() - last_ok
            if down >= self.seconds and self.stopped_after is None and self.stop():
                self.stopped_after = down

    def check(self) -> None:
        """Raise TrackingDown if the watch stopped the sweep."""
        if self.stopped_after is not None:
            raise TrackingDown(self.uri, self.stopped_after)


@contextmanager
def watch(uri: str, probe: Callable[[], Any], stop: Callable[[], bool]) -> Iterator[Watch]:
    """While the block runs, `probe()` the store every few seconds; once it has not
    answered for the outage bound, call `stop()` (again at the next probe while it
    returns False). A sqlite file is not watched: it has no outage."""
    w = Watch(uri, probe, stop, outage_bound())
    if not uri.startswith("sqlite:"):
        w._thread.start()
    try:
        yield w
    finally:
        w._done.set()
        if w._thread.is_alive():
            w._thread.join(timeout=w.every_s + 1)
