"""Sweep specs: YAML -> validated `SweepSpec` -> the trials it stands for.

Validation happens here, once, at the edge: a file that cannot be read or is
not UTF-8, YAML errors and duplicate keys, unknown keys, wrong types (a YAML
boolean or a quoted number where a number goes), non-finite numbers, values out of range, grid paths that do not exist, grid
values and search ranges that make an invalid trial, and sweeps larger than
`max_trials` are all `SpecError`s whose one-line message names the file and
the field path (e.g. `breakeven.yaml: grid.optim.lr[1]: Input should be
greater than 0`). Nothing is started before a spec validates.

Validating never builds every trial: the trial count comes from the axis
sizes, and each grid value, variant and search bound is validated once, in a
trial config that differs from `base` only there. That is enough because a
field's limits are its own, except where a model validator checks several
fields together (today `data.deficit`): the axes under such a model are
validated jointly, every combination of their values in every variant (at
most `max_trials` configs), and for Optuna every corner of their ranges.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator,
                      model_validator)

from dynamics_core.config import DataConfig, Float, Int, OptFloat, TrialConfig, flatten, smoke_rule_at, unflatten
from sweeps import stoppers


class SpecError(ValueError):
    """A spec that cannot run; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Distribution(_Strict):
    """One Optuna search dimension."""

    kind: Literal["loguniform", "uniform", "int", "choice"]
    low: OptFloat = None
    high: OptFloat = None
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
        elif self.kind == "int" and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError("int needs whole-number low and high")
        return self

    def samples(self) -> list[tuple[str, Any]]:
        """Values that stand for everything it can sample, each with its field
        name: the choices; the bounds (a field's limits are an interval, so
        valid bounds make a valid range); for a float range also a fractional
        value inside it (so a float range on an integer field is caught)."""
        if self.kind == "choice":
            return [(f"values[{i}]", v) for i, v in enumerate(self.values)]
        if self.kind == "int":
            return [("low", int(self.low)), ("high", int(self.high))]
        mid = math.sqrt(self.low * self.high) if self.kind == "loguniform" else (self.low + self.high) / 2
        return [("low", self.low), ("high", self.high), ("inside", math.nextafter(mid, self.high))]


# Reported to Tune at the end of every epoch, so searchers and schedulers can use them.
EpochMetric = Literal["val/acc", "val/loss", "train/loss", "train/acc"]


class SearchSpec(_Strict):
    kind: Literal["grid", "optuna"] = "grid"
    num_samples: Int = Field(8, ge=1)
    metric: EpochMetric = "val/acc"    # Optuna scores a trial by its last value
    mode: Literal["min", "max"] = "max"
    space: dict[str, Distribution] = {}
    seed: Int = 0                      # Optuna sampler seed


class SchedulerSpec(_Strict):
    kind: Literal["fifo", "asha"] = "fifo"
    metric: EpochMetric = "val/acc"
    mode: Literal["min", "max"] = "max"
    grace_period: Int = Field(1, ge=1)          # epochs
    reduction_factor: Float = Field(3.0, gt=1.0)


class ResourcesSpec(_Strict):
    cpus_per_trial: Float = Field(1.0, gt=0.0)
    gpus_per_trial: Float = Field(0.0, ge=0.0)   # fractional GPUs allowed
    workers_per_trial: Int = Field(1, ge=1)      # >1: DDP through Ray Train
    pack: Int = Field(1, ge=1)                   # >1: up to `pack` grid trials trained at once (sweeps.packs)


class FaultToleranceSpec(_Strict):
    max_failures: Int = Field(2, ge=0)
    # each checkpoint flushes the trial's MLflow buffer, saves, and Tune copies it (benchmarks/README.md:
    # ~0.1 s, a fifth of a small MLP's epoch); resume is bitwise from any, so this only bounds lost work
    checkpoint_every_epochs: Int = Field(5, ge=1)


class SweepSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)
    description: str = ""
    base: TrialConfig = TrialConfig()
    grid: dict[str, list[Any]] = {}
    # arms that differ in several fields at once (e.g. a 3-step baseline beside
    # two-stage schedules): each a mapping of dotted overrides, crossed with the grid
    variants: list[dict[str, Any]] = []
    seeds: list[Int] = Field(default_factory=lambda: [0], min_length=1)
    search: SearchSpec = SearchSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    # stops a trial early by a rule on its per-epoch reports (sweeps/stoppers.py):
    # {kind: stiffness, threshold: 0.45, patience: 5, relative: true, metric: ...}
    stopper: SerializeAsAny[stoppers.Stopper] | None = None
    resources: ResourcesSpec = ResourcesSpec()
    fault_tolerance: FaultToleranceSpec = FaultToleranceSpec()
    conjectures: list[str] = []
    max_trials: Int = Field(10_000, ge=1)   # a bigger sweep is refused (typo guard)
    # modules imported before the spec is validated, on the driver and in every
    # trial: they register experiments (sweeps.experiments.register) and probes
    plugins: list[str] = []

    @field_validator("stopper", mode="before")
    @classmethod
    def _stopper_kind(cls, value: Any) -> stoppers.Stopper | None:
        return stoppers.parse(value)

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

    def data_configs(self) -> list[DataConfig]:
        """The distinct data configs of the trials, from the `data.*` axes alone
        (Optuna: the base's), without building every trial."""
        if self.search.kind == "optuna":
            return [self.base.data]
        base = self.base.model_dump(mode="json")
        paths = [p for p in self.grid if p.startswith("data.")]
        configs: list[DataConfig] = []
        for variant in self.variants or [{}]:
            arm = {p: v for p, v in variant.items() if p.startswith("data.")}
            for combo in itertools.product(*(self.grid[p] for p in paths)):
                cfg = with_overrides(base, {**arm, **dict(zip(paths, combo))}).data
                if cfg not in configs:
                    configs.append(cfg)
        return configs

    def spec_hash(self) -> str:
        """Content hash of what the sweep computes (`max_trials` only guards it)."""
        # a spec without a stopper hashes as it did before the field existed
        exclude = {"max_trials"} | ({"stopper"} if self.stopper is None else set())
        blob = json.dumps(self.model_dump(mode="json", exclude=exclude), sort_keys=True, default=str)
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
    return parse_spec(read_yaml(path), source=str(path))


def read_yaml(path: Path) -> Any:
    """The one YAML document in `path`; every way a file can fail to be one is a SpecError."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: a directory, not a spec file") from None
    except PermissionError:
        raise SpecError(f"{path}: not readable (permission denied)") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} "
                        f"at offset {exc.start})") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror or exc})") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError(f"{path}: empty file (a spec is a mapping with at least `name`)")
        duplicate = _duplicate_key(node)
        if duplicate:
            where, line = duplicate
            raise SpecError(f"{path}: {where}: duplicate key (line {line}); YAML would keep only the last")
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise SpecError(f"{path}: YAML error{at}: {what}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: YAML error: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()


def _duplicate_key(node: yaml.Node, where: str = "", seen: set[int] | None = None) -> tuple[str, int] | None:
    """(dotted path, line) of the first key written twice in one mapping, at any depth."""
    seen = set() if seen is None else seen
    if id(node) in seen:                  # an alias of a node already walked
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            path = f"{where}.{name}" if where else str(name)
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if (key.tag, key.value) in keys:
                    return path, key.start_mark.line + 1
                keys.add((key.tag, key.value))
            found = _duplicate_key(value, path, seen)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, f"{where}[{i}]", seen)
            if found:
                return found
    return None


def parse_spec(raw: Any, source: str = "<spec>", stored: bool = False) -> SweepSpec:
    """The validated spec. `stored`: read back from a sweep's manifest, checked
    when the sweep started, so its conjecture names are not looked up again
    (that imports every experiment: most of `dynsweep status`'s time)."""
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a spec is a mapping with at least `name`")
    _load_plugins(raw.get("plugins", []), source)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{source}: {_describe(exc)}") from None
    _check_size(spec, source)
    _check_grid(spec, source)
    _check_search(spec, source)
    _check_pack(spec, source)
    if not stored:
        _check_conjectures(spec, source)
    _check_stopper(spec, source)
    return spec


def _load_plugins(modules: Any, source: str) -> None:
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise SpecError(f"{source}: plugins: a list of module names")
    if not modules:
        return                     # the registry (scipy.stats, every experiment) only when asked
    from sweeps.experiments import load_plugins

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


def _coupled(path: str) -> bool:
    """Whether a config field sits under a model validator that checks several
    fields together, so its values are valid only in combination."""
    model: Any = TrialConfig
    for part in path.split("."):
        if model.__pydantic_decorators__.model_validators:
            return True
        model = model.model_fields[part].annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return False
    return bool(model.__pydantic_decorators__.model_validators)


def _check_size(spec: SweepSpec, source: str) -> None:
    """Counted from the axis sizes, never by building the trials."""
    n = spec.n_trials()
    if n <= spec.max_trials:
        return
    if spec.search.kind == "optuna":
        raise SpecError(f"{source}: search.num_samples: {n:,} exceeds max_trials: {spec.max_trials:,}")
    factors = [f"{len(spec.variants)} variants"] if spec.variants else []
    factors += [f"{len(v)} {p}" for p, v in spec.grid.items()] + [f"{len(spec.seeds)} seeds"]
    raise SpecError(f"{source}: grid: {n:,} trials ({' × '.join(factors)}) exceed max_trials: "
                    f"{spec.max_trials:,} (raise max_trials if you mean it)")


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
    coupled = [p for p in spec.grid if _coupled(p)]
    if not coupled:
        return
    for i, variant in enumerate(spec.variants or [{}]):
        for combo in itertools.product(*(spec.grid[p] for p in coupled)):
            point = dict(zip(coupled, combo))
            try:
                with_overrides(base, {**variant, **point})
            except ValidationError as exc:
                at = ", ".join(f"{p}={v!r}" for p, v in point.items())
                arm = f" in variants[{i}]" if spec.variants else ""
                raise SpecError(f"{source}: grid: {at}{arm}: {_describe(exc)}") from None


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
    base = spec.base.model_dump(mode="json")
    for path, dist in spec.search.space.items():
        if path not in valid:
            raise SpecError(f"{source}: search.space.{path}: no such config field")
        for name, value in dist.samples():
            try:
                with_overrides(base, {path: value})
            except ValidationError as exc:
                where = (f"search.space.{path}: a sample inside (low, high), {value!r}" if name == "inside"
                         else f"search.space.{path}.{name}")
                raise SpecError(f"{source}: {where}: {_describe(exc)}") from None
    coupled = [p for p in spec.search.space if _coupled(p)]
    if len(coupled) < 2:
        return
    corners = [[v for n, v in spec.search.space[p].samples() if n != "inside"] for p in coupled]
    for combo in itertools.product(*corners):
        point = dict(zip(coupled, combo))
        try:
            with_overrides(base, point)
        except ValidationError as exc:
            at = ", ".join(f"{p}={v!r}" for p, v in point.items())
            raise SpecError(f"{source}: search.space: {at}: {_describe(exc)}") from None


def _check_pack(spec: SweepSpec, source: str) -> None:
    """`resources.pack` > 1: what packed trials cannot do is refused here, in one
    line naming the field; each grid value and variant is checked once."""
    if spec.resources.pack == 1:
        return
    r = spec.resources
    refused = [("search.kind", spec.search.kind, spec.search.kind != "grid", "packed trials need a grid search"),
               ("scheduler.kind", spec.scheduler.kind, spec.scheduler.kind != "fifo",
                "packed trials need the fifo scheduler (Tune sees a pack as one trial)"),
               ("resources.workers_per_trial", r.workers_per_trial, r.workers_per_trial > 1,
                "a pack trains in one process"),
               ("stopper.kind", spec.stopper and spec.stopper.kind, spec.stopper is not None,
                "a stopper stops one trial, and Tune sees a pack as one")]
    for path, value, refuse, why in refused:
        if refuse:
            raise SpecError(f"{source}: resources.pack: {path}: {value}: {why}")
    from dynamics_core.pack_rules import pack_compatible

    base = spec.base.model_dump(mode="json")
    where = [("base", {})] + [(f"variants[{i}]", v) for i, v in enumerate(spec.variants)]
    where += [(f"grid.{p}[{i}]", {p: v}) for p, values in spec.grid.items() for i, v in enumerate(values)]
    for name, overrides in where:
        why = pack_compatible([with_overrides(base, overrides)])
        if why is not None:
            at = "" if name == "base" else f" (at {name})"
            raise SpecError(f"{source}: resources.pack: {why}{at}")


def _check_conjectures(spec: SweepSpec, source: str) -> None:
    if not spec.conjectures:
        return
    from sweeps.experiments import conjecture_names

    valid = conjecture_names()
    for i, name in enumerate(spec.conjectures):
        if name not in valid:
            raise SpecError(f"{source}: conjectures[{i}]: unknown conjecture {name!r}; "
                            f"valid: {', '.join(valid)}")


def _check_stopper(spec: SweepSpec, source: str) -> None:
    """The stopper's metric must be reported at every epoch end: checked on the
    base config and on each grid value, variant and search bound that sets a
    `probes.*` field (the only ones that switch the metric on or off)."""
    if spec.stopper is None:
        return
    base = spec.base.model_dump(mode="json")
    configs = [("base.", spec.base)]
    configs += [(f"grid.{p}[{i}]: ", with_overrides(base, {p: v}))
                for p, values in spec.grid.items() if p.startswith("probes.") for i, v in enumerate(values)]
    configs += [(f"variants[{i}]: ", with_overrides(base, v)) for i, v in enumerate(spec.variants)
                if any(p.startswith("probes.") for p in v)]
    configs += [(f"search.space.{p}.{n}: ", with_overrides(base, {p: v}))
                for p, d in spec.search.space.items() if p.startswith("probes.") for n, v in d.samples()]
    for where, cfg in configs:
        problem = spec.stopper.requires(cfg)
        if problem:
            field, why = problem
            raise SpecError(f"{source}: {where}{field}: {why} (stopper.kind: {spec.stopper.kind})")


def check_resources(spec: SweepSpec, available: dict[str, float],
                    where: str = "the Ray cluster") -> str | None:
    """Which per-trial request (naming its field) exceeds what the Ray cluster
    offers, or None. `available` is `ray.cluster_resources()` ("CPU", "GPU"),
    or what a local Ray would have (`where` names what offers it).

    Tune waits forever for a trial that cannot fit, so this runs before
    anything of the sweep exists (`driver.check_fits`). A multi-worker trial needs one CPU
    for its Tune coordinator plus cpus_per_trial and gpus_per_trial per
    worker. An autoscaling cluster may offer more than it has now: ask only a
    local or fixed-size Ray.
    """
    r, cpus, gpus = spec.resources, available.get("CPU", 0.0), available.get("GPU", 0.0)
    w = r.workers_per_trial

    def has(n: float) -> str:
        return f"{where} has {n:g}" if n else f"{where} has none"

    if w == 1:
        if r.gpus_per_trial > gpus:
            return f"resources.gpus_per_trial: {r.gpus_per_trial:g} GPU per trial, but {has(gpus)}"
        if r.cpus_per_trial > cpus:
            return f"resources.cpus_per_trial: {r.cpus_per_trial:g} CPUs per trial, but {has(cpus)}"
        return None
    if w * r.gpus_per_trial > gpus:
        return (f"resources.workers_per_trial: {w} workers × {r.gpus_per_trial:g} GPU "
                f"= {w * r.gpus_per_trial:g} GPUs per trial, but {has(gpus)}")
    if 1 + w * r.cpus_per_trial > cpus:
        return (f"resources.workers_per_trial: 1 + {w} workers × {r.cpus_per_trial:g} CPUs "
                f"= {1 + w * r.cpus_per_trial:g} CPUs per trial, but {has(cpus)}")
    return None


def smoke(spec: SweepSpec) -> SweepSpec:
    """The same sweep shrunk to seconds: first two values per axis, one seed,
    and each config field as its section declares (`dynamics_core.config.Smoke`
    on the field, a section's `_smoke_section`): today one epoch, small probe
    sets, few probe points, at most two pruning levels rewinding to step ≤ 2.
    Nothing here names a config field."""
    def swept(path: str, value: Any, where: str) -> Any:
        rule = smoke_rule_at(path)
        return rule.to(value) if rule is not None and getattr(rule, where) == "shrink" else value

    def dropped(path: str, where: str) -> bool:
        rule = smoke_rule_at(path)
        return rule is not None and getattr(rule, where) == "drop"

    grid = {p: list(dict.fromkeys(swept(p, x, "grid") for x in v))[:2] for p, v in spec.grid.items()
            if not dropped(p, "grid")}
    variants = [{p: swept(p, v, "variant") for p, v in variant.items() if not dropped(p, "variant")}
                for variant in spec.variants]
    variants = [v for i, v in enumerate(variants) if v not in variants[:i]]
    search = spec.search.model_copy(update={"num_samples": min(2, spec.search.num_samples)})
    return spec.model_copy(update={
        "base": spec.base.smoke(), "grid": grid, "variants": variants,
        "seeds": spec.seeds[:1], "search": search})
