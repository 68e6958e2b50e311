"""A finished sweep -> verdicts on its conjectures + the papers' figures and
tables, in MLflow.

Reads the sweep's trial runs into a tidy table (`tracking.load_table`), runs
the named conjectures (default: those the spec listed, recorded on the
sweep's parent run), draws the figures and builds the tables of the
experiments those conjectures belong to (`sweeps.experiments`), and logs all
of it to the sweep's one `conjectures` run (updated in place, each judgement
kept as a versioned JSON artifact, each verdict also a tag
`verdict.<name>` for MLflow's search box, e.g. `supported` or
`supported (exploratory)`).

Plans: when the sweep's parent run carries the plans registered before its
trials ran (`plans.json`, written from `experiments.registered_plans`), every
verdict is judged under the code's plan and marked exploratory where that
plan differs from the registered one (both hashes on the verdict). Overrides
(`--window`, `--detector`) make exploratory plans too. The conjectures run
records the hash of the plans used and of those registered
(`dynsweep.plans_hash`, `dynsweep.registered_plans_hash`) and the plans used
as `plans_used.json`.

Registration and history (the forking paths, on every verdict): each verdict
carries its registered plan's hash, when it was registered (`registered_at`:
the parent run's start, when `plans.json` was written) and its `history`
among the sweeps of the same store that registered the same conjecture and
started earlier (`tracking.sweeps_registering`): `first`, or `replaces
<hash> after <sweep>` (the latest earlier sweep registered another plan for
this verdict) / `repeats <hash> after <sweep>` (the same plan), then `fresh
seeds`, `same seeds` or `k of n seeds seen`. The seeds are those of the
trial runs (param `seed`), compared with the union over every earlier sweep
of the conjecture. A verdict on any seed an earlier sweep of its conjecture
trained on is exploratory (`exploratory_reason` includes `seeds seen`),
whatever the plans: its data were seen before its plan was fixed. A plain
replication (same plan, same seeds) is therefore exploratory too; only new
seeds confirm.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from sweeps import experiments, tracking
from sweeps.conjectures import Verdict
from sweeps.conjectures.plan import AnalysisPlan
from sweeps.conjectures.verdict import PLAN_CHANGED, SEEDS_SEEN
from sweeps.report import make_figures
from sweeps.tracking import Store
from sweeps.tracking.reader import load_json_artifact
# on the parent run: the conjectures registered, and their plans (`plans.json`) at sweep start
from sweeps.tracking.registrations import CONJECTURES_TAG, PLANS_ARTIFACT, SweepRegistration

PLUGINS_TAG = "dynsweep.plugins"
PLANS_HASH_TAG = "dynsweep.plans_hash"
REGISTERED_HASH_TAG = "dynsweep.registered_plans_hash"


@dataclass
class Judgement:
    """What one judging of a sweep produced and logged."""

    verdicts: list[Verdict]
    run_id: str                                  # the sweep's `conjectures` run
    version: int                                 # this judgement's number on that run
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)   # file name -> table
    plans_hash: str = ""                          # the plans judged under
    registered_plans_hash: str | None = None      # those registered at sweep start (None: none)
    registered_at: str = ""                       # when (UTC); "" when none were registered
    parent_run_id: str = ""                       # the sweep judged
    ran_on: dict[str, Any] = field(default_factory=dict)    # `tracking.ran_on`: commit, torch, threads
    judged_with: dict[str, Any] = field(default_factory=dict)  # the judging code: {"commit": …}

    def to_dict(self) -> dict[str, Any]:
        """What `dynsweep conjectures --json` prints, and the verdict files under
        docs/ keep: the sweep, what it ran on, its plans, every verdict."""
        return {"sweep_run_id": self.parent_run_id, "ran_on": self.ran_on, "judged_with": self.judged_with,
                "plans_hash": self.plans_hash,
                "registered_plans_hash": self.registered_plans_hash, "registered_at": self.registered_at,
                "verdicts": [v.to_dict() for v in self.verdicts]}


@dataclass(frozen=True)
class StoreSources:
    """`experiments.Sources` over the tracking store: probe arrays by run."""

    store: Store

    def probe_arrays(self, run_id: str, name: str) -> dict[int, np.ndarray]:
        return tracking.load_probe_arrays(self.store, run_id, name)


def judge(name: str, tracking_uri: str, parent_run_id: str | None = None,
          names: Iterable[str] | None = None,
          overrides: Mapping[str, Any] | None = None) -> Judgement:
    store = Store(tracking_uri)
    parent = parent_run_id or tracking.find_sweep(store, name)
    if parent is None:
        raise LookupError(f"no sweep named {name!r} in {tracking_uri}")
    parent_tags = store.tags(parent)
    experiments.load_plugins(m for m in parent_tags.get(PLUGINS_TAG, "").split(",") if m)
    if names is None:
        names = [n for n in parent_tags.get(CONJECTURES_TAG, "").split(",") if n]
    names = list(names)
    if not names:
        raise LookupError(f"sweep {name!r} lists no conjectures (give --only NAME[,NAME])")
    involved = list(dict.fromkeys(experiments.experiment_of(n).name for n in names))
    table = tracking.load_table(store, name, parent)
    registered = load_json_artifact(store, parent, PLANS_ARTIFACT)
    verdicts = experiments.evaluate(names, table, overrides=overrides, registered=registered)
    this = tracking.sweep_registration(store, parent)
    registered_at = this.registered_at if registered is not None else ""
    verdicts = with_history(verdicts, names, this, registered_at,
                            tracking.registrations_of(store, names, this.started_ms, [parent]))
    used = {k: p for n in names for k, p in experiments.plans_for(n, overrides, registered).items()}
    hashes = {PLANS_HASH_TAG: experiments.plans_hash(used),
              REGISTERED_HASH_TAG: experiments.plans_hash(registered) if registered else "none"}
    figures = make_figures(table, involved, StoreSources(store))
    tables = {fname: frame for e in involved for fname, build in experiments.get(e).tables.items()
              if (frame := build(table)) is not None}
    tags = {**{_verdict_tag(v.name): verdict_label(v) for v in verdicts}, **hashes}
    rid, version = tracking.log_judgement(store, name, parent, [v.to_dict() for v in verdicts],
                                          figures, tables, tags)
    store.log_json(rid, {k: p.to_dict() for k, p in used.items()}, "plans_used.json")
    return Judgement(verdicts, rid, version, tables, hashes[PLANS_HASH_TAG],
                     None if registered is None else hashes[REGISTERED_HASH_TAG], registered_at,
                     parent, tracking.ran_on(store, name, parent), {"commit": tracking.code_commit()})


def with_history(verdicts: list[Verdict], names: list[str], this: SweepRegistration,
                 registered_at: str, earlier: Mapping[str, list[SweepRegistration]]
                 ) -> list[Verdict]:
    """The verdicts with `registered_at` and `history` set, and marked exploratory
    (`seeds seen`) where an earlier sweep of their conjecture (`earlier[name]`,
    oldest first) trained on any of this sweep's seeds."""
    out = []
    for v in verdicts:
        before = earlier.get(_conjecture_of(v.name, names), [])
        if not before:
            out.append(dataclasses.replace(v, registered_at=registered_at, history="first"))
            continue
        last = before[-1]
        seen = this.seeds & frozenset().union(*(e.seeds for e in before))
        key = v.name if last.plans and v.name in last.plans else _conjecture_of(v.name, names)
        prev = AnalysisPlan.from_dict(last.plans[key]).hash() if last.plans and key in last.plans else ""
        mine = "" if v.registered_hash == "unregistered" else v.registered_hash
        verb = "repeats" if prev == mine else "replaces"
        history = f"{verb} {prev or 'no plan'} after {last.sweep}; {_seeds_text(seen, this.seeds)}"
        changes: dict[str, Any] = {"registered_at": registered_at, "history": history}
        if seen:
            reasons = [PLAN_CHANGED] if v.exploratory else []
            changes.update(exploratory=True, exploratory_reason="; ".join([*reasons, SEEDS_SEEN]))
        out.append(dataclasses.replace(v, **changes))
    return out


def _seeds_text(seen: frozenset[int], mine: frozenset[int]) -> str:
    if not seen:
        return "fresh seeds"
    if seen == mine:
        return "same seeds"
    return f"{len(seen)} of {len(mine)} seeds seen"


def _conjecture_of(verdict_name: str, names: Iterable[str]) -> str:
    """The judged conjecture a verdict belongs to (`breakeven.c1_lr` for
    `breakeven.c1_lr[hessian/top]`)."""
    for n in names:
        if verdict_name == n or verdict_name.startswith(n + "["):
            return n
    return verdict_name.split("[", 1)[0]


def verdict_label(v: Verdict) -> str:
    """The verdict kind, with " (exploratory)" when its plan was not the registered
    one, " (exploratory: seeds seen)" (or "plan changed; seeds seen") when an earlier
    sweep of its conjecture trained on its seeds."""
    if not v.exploratory:
        return v.verdict
    if v.exploratory_reason in ("", PLAN_CHANGED):
        return f"{v.verdict} (exploratory)"
    return f"{v.verdict} (exploratory: {v.exploratory_reason})"


def _verdict_tag(name: str) -> str:
    """`verdict.breakeven.c1_lr.hessian/top` for `breakeven.c1_lr[hessian/top]`
    (MLflow keys allow letters, digits, `_ - . / ` and spaces)."""
    return "verdict." + re.sub(r"[^\w\-./ ]", ".", name).strip(".").replace("..", ".")
