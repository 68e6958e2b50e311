"""What the driver and a trial share, without torch or Ray.

The `SweepContext` a driver hands every trial of one sweep execution; the
keys of a Tune config (a grid trial's overrides under `TRIAL_KEY`, a pack's
name and members under `PACK_KEY`); the files in a trial's checkpoint; and
each trial's name and config from its swept values, and the grid's packs. The driver, `status` and
the trainables read these alike, so none of them needs torch to name a trial.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from dynamics_core.config import TrialConfig
from dynamics_core.pack_rules import LEVEL_SHARED, MAY_DIFFER, momentum_from
from sweeps.spec import SweepSpec, with_overrides

STATE_FILE = "state.pt"
RUN_IDS_FILE = "mlflow_run_ids.json"   # in each checkpoint: {member name: MLflow run id}
REPORTED_FILE = "reported.json"    # in each checkpoint: the metrics reported with it
TRIAL_KEY = "__trial__"            # grid search: one Tune value holding all overrides
PACK_KEY = "__pack__"              # Tune config: {"name": …, "members": [{"name": …, "overrides": …}]}


@dataclass(frozen=True)
class SweepContext:
    """What every trial of one sweep execution needs from the driver."""

    spec_name: str
    base: dict[str, Any]               # the spec's base trial config (json form)
    tracking_uri: str
    artifact_root: str | None
    parent_run_id: str
    cache_dir: str                     # absolute: workers do not share the driver's cwd
    storage: str                       # the sweep's Ray storage root
    checkpoint_every_epochs: int = 1
    device: str = "auto"
    plugins: tuple[str, ...] = ()      # the spec's plugin modules, imported before the config
    # a scheduler or stopper may end a trial at any report (ASHA, a spec's stopper): its
    # metrics are stored before each report, since Tune may end the worker before it flushes
    flush_each_report: bool = False
    # the headline (metric key, short label) columns of the sweep's probes, recorded at launch
    # (`driver.probe_columns`): `status` and the progress line show them; () in older manifests
    columns: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:      # read back from the manifest's JSON: lists
        object.__setattr__(self, "columns", tuple((str(k), str(v)) for k, v in self.columns))


# ------------------------------------------------------------------ trials
def trial_config(config: dict[str, Any], base: dict[str, Any]) -> TrialConfig:
    """The frozen trial config for a Tune `config` (grid value or Optuna sample)."""
    overrides = dict(config.get(TRIAL_KEY, {}))
    overrides.update({k: v for k, v in config.items() if k != TRIAL_KEY})
    return with_overrides(base, overrides)


# Short names of often swept fields; any other field is named by its last part.
ALIASES = {"optim.lr": "lr", "train.batch_size": "bs", "optim.momentum": "mom",
           "optim.weight_decay": "wd", "train.epochs": "ep", "model.width": "width"}
NAME_LIMIT = 100


def trial_names(swept: list[dict[str, Any]]) -> list[str]:
    """Each trial's name from its swept values, e.g. `lr=0.2,bs=32,s0`: also its
    folder, MLflow run name and `trial_id` tag, so it is deterministic and
    filesystem-safe. Where two would be equal, a short hash of the values
    follows (`…,s0-3f2a1c`)."""
    names = [trial_label(values) for values in swept]
    return [f"{name}-{_values_hash(values)}" if names.count(name) > 1 else name
            for name, values in zip(names, swept)]


def trial_label(values: dict[str, Any]) -> str:
    """`alias=value,…` over the swept values (the seed last, as `s<seed>`)."""
    parts = [f"{ALIASES.get(path, path.rsplit('.', 1)[-1])}={_short(value)}"
             for path, value in values.items() if path != "seed"]
    if "seed" in values:
        parts.append(f"s{values['seed']}")
    name = re.sub(r"[^A-Za-z0-9._=+,-]", "_", ",".join(parts)) or "trial"
    return name if len(name) <= NAME_LIMIT else f"{name[:NAME_LIMIT - 7]}-{_values_hash(values)}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) <= 4 and not any(isinstance(v, (list, dict)) for v in value):
        return "+".join(_short(v) for v in value)
    if isinstance(value, (list, dict)):
        return _values_hash(value)
    return str(value)


def _values_hash(values: Any) -> str:
    return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:6]


# ------------------------------------------------------------------ packs
def pack_values(spec: SweepSpec) -> list[dict[str, Any]]:
    """The sweep's packs, in trial order: each {"name", "members"}, the
    trials of one kind (`_shared`) spread evenly over as few packs as hold them."""
    overrides = spec.overrides()
    base = spec.base.model_dump(mode="json")
    groups: dict[str, list[dict[str, Any]]] = {}
    for name, values in zip(trial_names(overrides), overrides):
        key = _shared(with_overrides(base, values))
        groups.setdefault(key, []).append({"name": name, "overrides": values})
    chunks = [chunk for members in groups.values() for chunk in _even(members, spec.resources.pack)]
    return [{"name": f"pack{i}-{members[0]['name']}", "members": members} for i, members in enumerate(chunks)]


def _even(members: list[Any], k: int) -> list[list[Any]]:
    """`members` in order, in as few packs of up to k as they need, of sizes
    that differ by at most one (20 by 16: 10 + 10, not 16 + 4, so that no
    small pack is left to run alone at the end)."""
    n = -(-len(members) // k)
    size, extra = divmod(len(members), n)
    bounds = [0]
    for i in range(n):
        bounds.append(bounds[-1] + size + (i < extra))
    return [members[a:b] for a, b in zip(bounds, bounds[1:])]


def _shared(cfg: TrialConfig) -> str:
    """What the members of one pack must have in common (`pack_compatible`):
    the epoch from which they train with momentum (their buffers start
    together), and in an IMP pack their length and whether they are paired."""
    flat = {k: v for k, v in cfg.flat().items() if k not in MAY_DIFFER}
    flat["momentum from"] = momentum_from(cfg) or 0
    if cfg.pruning.levels > 0:
        flat.update({k: v for k, v in cfg.flat().items() if k in LEVEL_SHARED})
        flat["paired"] = cfg.pruning.ablation != "none"
    return json.dumps(flat, sort_keys=True, default=str)


def tune_units(spec: SweepSpec) -> list[dict[str, Any]] | None:
    """The grid's Tune config values, one per Tune trial: each pack's name and
    members (`resources.pack` > 1) or each trial's overrides; None for a
    search, whose sampler draws its own."""
    if spec.search.kind != "grid":
        return None
    return pack_values(spec) if spec.resources.pack > 1 else spec.overrides()


def describe(spec: SweepSpec, units: list[dict[str, Any]] | None) -> str:
    """"16 trial(s)", or with `resources.pack` "16 trial(s) in 2 pack(s) of up to 8"."""
    if spec.resources.pack == 1 or units is None:
        return f"{spec.n_trials()} trial(s)"
    return f"{spec.n_trials()} trial(s) in {len(units)} pack(s) of up to {spec.resources.pack}"


def member_names(config: dict[str, Any]) -> list[str]:
    """The trial names of a Tune config's pack members ([] for an unpacked trial)."""
    return [m["name"] for m in config[PACK_KEY]["members"]] if PACK_KEY in config else []


def member_states(trials: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """{Tune trial: (state, config)} -> {trial name: state}, a pack's state for each member."""
    out = {}
    for name, (state, config) in trials.items():
        for member in member_names(config) or [name]:
            out[member] = state
    return out
