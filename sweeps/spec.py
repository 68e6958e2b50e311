"""Sweep specs: YAML -> validated `SweepSpec` -> the trials it stands for.

Validation happens here, once, at the edge: unknown keys, wrong types, values
out of range, grid paths that do not exist and grid values that make an
invalid trial are all `SpecError`s whose message names the file and the
field path (e.g. `breakeven.yaml: grid.optim.lr[1]: Input should be greater
than 0`). Nothing is started before a spec validates.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dynamics_core.config import TrialConfig, flatten, unflatten


class SpecError(ValueError):
    """A spec that cannot run; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Distribution(_Strict):
    """One Optuna search dimension."""

    kind: Literal["loguniform", "uniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> "Distribution":
        if self.kind == "choice":
            if not self.values:
                raise ValueError("choice needs a non-empty `values` list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{self.kind} needs low < high")
        elif self.kind == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        return self


# Reported to Tune at the end of every epoch, so searchers and schedulers can use them.
EpochMetric = Literal["val/acc", "val/loss", "train/loss", "train/acc"]


class SearchSpec(_Strict):
    kind: Literal["grid", "optuna"] = "grid"
    num_samples: int = Field(8, ge=1)
    metric: EpochMetric = "val/acc"    # Optuna scores a trial by its last value
    mode: Literal["min", "max"] = "max"
    space: dict[str, Distribution] = {}
    seed: int = 0                      # Optuna sampler seed


class SchedulerSpec(_Strict):
    kind: Literal["fifo", "asha"] = "fifo"
    metric: EpochMetric = "val/acc"
    mode: Literal["min", "max"] = "max"
    grace_period: int = Field(1, ge=1)          # epochs
    reduction_factor: float = Field(3.0, gt=1.0)


class ResourcesSpec(_Strict):
    cpus_per_trial: float = Field(1.0, gt=0.0)
    gpus_per_trial: float = Field(0.0, ge=0.0)   # fractional GPUs allowed
    workers_per_trial: int = Field(1, ge=1)      # >1: DDP through Ray Train


class FaultToleranceSpec(_Strict):
    max_failures: int = Field(2, ge=0)
    checkpoint_every_epochs: int = Field(1, ge=1)


class SweepSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)
    description: str = ""
    base: TrialConfig = TrialConfig()
    grid: dict[str, list[Any]] = {}
    # arms that differ in several fields at once (e.g. a 3-step baseline beside
    # two-stage schedules): each a mapping of dotted overrides, crossed with the grid
    variants: list[dict[str, Any]] = []
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    search: SearchSpec = SearchSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    resources: ResourcesSpec = ResourcesSpec()
    fault_tolerance: FaultToleranceSpec = FaultToleranceSpec()
    conjectures: list[str] = []
    # modules imported before the spec is validated, on the driver and in every
    # trial: they register experiments (sweeps.experiments.register) and probes
    plugins: list[str] = []

    @field_validator("grid")
    @classmethod
    def _grid_axes(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in grid.items():
            if not values:
                raise ValueError(f"grid axis {path!r} is empty")
        return grid

    # ------------------------------------------------------------ the trials
    def trials(self) -> list[TrialConfig]:
        """Every variant × grid point × seed, in a stable order (grid axes as written)."""
        base = self.base.model_dump(mode="json")
        return [with_overrides(base, o) for o in self.overrides()]

    def overrides(self) -> list[dict[str, Any]]:
        """The dotted overrides of each trial (variant, grid point, seed), in trial order."""
        paths = list(self.grid)
        return [{**variant, **dict(zip(paths, combo)), "seed": seed}
                for variant in (self.variants or [{}])
                for combo in itertools.product(*(self.grid[p] for p in paths))
                for seed in self.seeds]

    def n_trials(self) -> int:
        """How many trials the sweep starts: the grid's size, or Optuna's samples."""
        if self.search.kind == "optuna":
            return self.search.num_samples
        return len(self.variants or [{}]) * len(self.seeds) * math.prod(len(v) for v in self.grid.values())

    def spec_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def with_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> TrialConfig:
    flat = flatten(base)
    flat.update(overrides)
    return TrialConfig.model_validate(unflatten(flat))


def trial_name(cfg: TrialConfig) -> str:
    """Deterministic trial name: content hash of the config, then the seed."""
    return f"{cfg.run_hash()[:10]}-s{cfg.seed}"


# ---------------------------------------------------------------- loading
def load_spec(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: no such spec file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: YAML error: {exc}") from None
    return parse_spec(raw, source=str(path))


def parse_spec(raw: Any, source: str = "<spec>") -> SweepSpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a spec is a mapping with at least `name`")
    _load_plugins(raw.get("plugins", []), source)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{source}: {_describe(exc)}") from None
    _check_grid(spec, source)
    _check_search(spec, source)
    _check_conjectures(spec, source)
    return spec


def _load_plugins(modules: Any, source: str) -> None:
    from sweeps.experiments import load_plugins

    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise SpecError(f"{source}: plugins: a list of module names")
    for i, module in enumerate(modules):
        try:
            load_plugins([module])
        except Exception as exc:   # ImportError, or the plugin's own registration error
            raise SpecError(f"{source}: plugins[{i}]: cannot import {module!r}: {exc}") from None


def _describe(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        loc = prefix + ".".join(str(p) for p in err["loc"])
        lines.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(lines)


def _valid_paths() -> set[str]:
    return set(flatten(TrialConfig().model_dump(mode="json")))


def _check_grid(spec: SweepSpec, source: str) -> None:
    valid = _valid_paths()
    base = spec.base.model_dump(mode="json")
    for path, values in spec.grid.items():
        if path not in valid:
            raise SpecError(f"{source}: grid.{path}: no such config field "
                            f"(fields look like optim.lr, train.batch_size)")
        for i, value in enumerate(values):
            try:
                with_overrides(base, {path: value})
            except ValidationError as exc:
                raise SpecError(f"{source}: grid.{path}[{i}]: {_describe(exc)}") from None
    if len(spec.seeds) != len(set(spec.seeds)):
        raise SpecError(f"{source}: seeds: duplicate seeds")
    for i, variant in enumerate(spec.variants):
        for path in variant:
            if path not in valid or path == "seed":
                raise SpecError(f"{source}: variants[{i}].{path}: no such config field")
            if path in spec.grid:
                raise SpecError(f"{source}: variants[{i}].{path}: also a grid axis")
        try:
            with_overrides(base, variant)
        except ValidationError as exc:
            raise SpecError(f"{source}: variants[{i}]: {_describe(exc)}") from None
        if variant in spec.variants[:i]:
            raise SpecError(f"{source}: variants[{i}]: duplicate variant")


def _check_search(spec: SweepSpec, source: str) -> None:
    if spec.search.kind == "grid":
        if spec.search.space:
            raise SpecError(f"{source}: search.space: only used with search.kind: optuna")
        return
    if spec.grid or spec.variants:
        raise SpecError(f"{source}: {'grid' if spec.grid else 'variants'}: not allowed with "
                        f"search.kind: optuna (put the dimensions in search.space)")
    if not spec.search.space:
        raise SpecError(f"{source}: search.space: Optuna needs at least one dimension")
    valid = _valid_paths()
    for path in spec.search.space:
        if path not in valid:
            raise SpecError(f"{source}: search.space.{path}: no such config field")


def _check_conjectures(spec: SweepSpec, source: str) -> None:
    if not spec.conjectures:
        return
    from sweeps.experiments import conjecture_names

    valid = conjecture_names()
    for i, name in enumerate(spec.conjectures):
        if name not in valid:
            raise SpecError(f"{source}: conjectures[{i}]: unknown conjecture {name!r}; "
                            f"valid: {', '.join(valid)}")


def smoke(spec: SweepSpec) -> SweepSpec:
    """The same sweep shrunk to seconds: first two values per axis, one seed,
    one epoch, small probe sets, few probe points."""
    base = spec.base.model_dump(mode="json")
    flat = flatten(base)
    flat.update({"train.epochs": 1, "data.train_size": 500, "data.test_size": 200,
                 "probes.probe_size": 64, "probes.val_probe_size": 32,
                 "probes.schedule.points": 4, "probes.gradcov_minibatch": 16})
    if flat.get("optim.schedule.stage1_epochs"):
        flat["optim.schedule.stage1_epochs"] = 0
    if flat.get("optim.schedule.noise_off_epoch") is not None:
        flat["optim.schedule.noise_off_epoch"] = 0
    if flat.get("data.deficit.kind", "none") != "none":
        flat["data.deficit.start_epoch"], flat["data.deficit.end_epoch"] = 0, 1
    grid = {p: v[:2] for p, v in spec.grid.items()
            if p not in ("train.epochs", "optim.schedule.stage1_epochs")}
    variants = [{p: (0 if p in ("optim.schedule.stage1_epochs", "optim.schedule.noise_off_epoch")
                     and v is not None else v)
                 for p, v in variant.items() if p != "train.epochs"} for variant in spec.variants]
    variants = [v for i, v in enumerate(variants) if v not in variants[:i]]
    search = spec.search.model_copy(update={"num_samples": min(2, spec.search.num_samples)})
    return spec.model_copy(update={
        "base": TrialConfig.model_validate(unflatten(flat)), "grid": grid, "variants": variants,
        "seeds": spec.seeds[:1], "search": search})
