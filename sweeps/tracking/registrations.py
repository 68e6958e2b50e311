"""Which sweeps registered plans for a conjecture, when, and on which seeds.

A sweep registers its conjectures before its trials run: the tag
`dynsweep.conjectures` (their names, comma-separated) and the artifact
`plans.json` (their plans, by verdict name) on its parent run. Judging a
sweep asks who came before it: every other parent run, in any experiment of
the store, that registered the same conjecture and started earlier, with the
plans it registered and the seeds its trial runs (param `seed`) trained on.

Deleted runs count too: their results were seen, and deleting a sweep must not
make a later verdict on the same seeds look confirmatory.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mlflow.entities import ViewType

from sweeps.tracking.reader import load_json_artifact
from sweeps.tracking.store import KIND_TAG, PARENT_TAG, RUN_NAME_TAG, Store, chunks, quote

CONJECTURES_TAG = "dynsweep.conjectures"   # on the parent run: the conjectures it registered
PLANS_ARTIFACT = "plans.json"              # on the parent run: their plans, by verdict name
SEED_PARAM = "seed"                        # on each trial run (the trial config's `seed`)
_PAGE = 1000
_EXPERIMENTS_PER_SEARCH = 50


@dataclass(frozen=True)
class SweepRegistration:
    """One sweep's registration, read back from its parent run."""

    run_id: str
    experiment: str
    sweep: str                          # the parent run's name, `<spec>@<start time>`
    started_ms: int                     # the parent run's start: when its plans were registered
    conjectures: tuple[str, ...]
    plans: dict[str, Any] | None        # plans.json (plan dicts by verdict name); None: none logged
    plans_hash: str | None              # the parent's param `plans_hash`
    seeds: frozenset[int]               # the seeds of its trial runs

    @property
    def registered_at(self) -> str:
        """The start time in UTC, ISO 8601 to the second (`2025-03-01T12:00:05Z`)."""
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_ms / 1000))


def sweep_registration(store: Store, parent_run_id: str) -> SweepRegistration:
    """The registration of the sweep whose parent run is `parent_run_id`."""
    run = store.client.get_run(parent_run_id)
    name = store.client.get_experiment(run.info.experiment_id).name
    return _registration(store, run, name)


def sweeps_registering(store: Store, conjecture: str, before_ms: int | None = None,
                       exclude: Iterable[str] = ()) -> list[SweepRegistration]:
    """Every sweep in the store that registered `conjecture` (the exact name),
    oldest first; with `before_ms`, only those started before then; the parent
    runs in `exclude` left out."""
    return registrations_of(store, [conjecture], before_ms, exclude)[conjecture]


def registrations_of(store: Store, conjectures: Iterable[str], before_ms: int | None = None,
                     exclude: Iterable[str] = ()) -> dict[str, list[SweepRegistration]]:
    """`sweeps_registering` for several conjectures at once, each sweep read once
    (the conjectures of one experiment are usually registered together)."""
    exp_names = {e.experiment_id: e.name for e in _experiments(store)}
    skip = set(exclude)
    read: dict[str, SweepRegistration] = {}
    out: dict[str, list[SweepRegistration]] = {}
    for conjecture in dict.fromkeys(conjectures):
        flt = (f"tags.`{KIND_TAG}` = 'sweep' and "
               f"tags.`{CONJECTURES_TAG}` LIKE '%{quote(conjecture)}%'")
        found = []
        for ids in chunks(sorted(exp_names), _EXPERIMENTS_PER_SEARCH):
            for run in _search(store, ids, flt):
                rid = run.info.run_id
                listed = run.data.tags.get(CONJECTURES_TAG, "").split(",")
                if (conjecture not in listed or rid in skip
                        or (before_ms is not None and run.info.start_time >= before_ms)):
                    continue
                if rid not in read:
                    read[rid] = _registration(store, run, exp_names[run.info.experiment_id])
                found.append(read[rid])
        out[conjecture] = sorted(found, key=lambda r: (r.started_ms, r.run_id))
    return out


def trial_seeds(store: Store, parent_run_id: str, experiment_id: str) -> frozenset[int]:
    """The seeds (param `seed`) of a sweep's trial runs, deleted ones included."""
    flt = f"tags.`{PARENT_TAG}` = '{quote(parent_run_id)}' and tags.`{KIND_TAG}` = 'trial'"
    seeds = set()
    for run in _search(store, [experiment_id], flt):
        value = run.data.params.get(SEED_PARAM)
        if value is not None:
            seeds.add(int(value))
    return frozenset(seeds)


def _registration(store: Store, run, experiment: str) -> SweepRegistration:
    tags = run.data.tags
    return SweepRegistration(
        run_id=run.info.run_id, experiment=experiment,
        sweep=tags.get(RUN_NAME_TAG) or run.info.run_name or run.info.run_id,
        started_ms=int(run.info.start_time),
        conjectures=tuple(n for n in tags.get(CONJECTURES_TAG, "").split(",") if n),
        plans=load_json_artifact(store, run.info.run_id, PLANS_ARTIFACT),
        plans_hash=run.data.params.get("plans_hash"),
        seeds=trial_seeds(store, run.info.run_id, run.info.experiment_id))


def _experiments(store: Store) -> list:
    out, token = [], None
    while True:
        page = store.client.search_experiments(view_type=ViewType.ALL, max_results=_PAGE,
                                               page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _search(store: Store, experiment_ids: list[str], flt: str) -> list:
    runs, token = [], None
    while True:
        page = store.client.search_runs(experiment_ids, filter_string=flt, max_results=_PAGE,
                                        run_view_type=ViewType.ALL, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs
