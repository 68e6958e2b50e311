"""Typed, frozen trial configuration: one small model per concern, composed.

Every field has a default; unknown keys are errors (pydantic `extra=forbid`),
so a typo in a spec names its field path, and so are non-finite floats
(`allow_inf_nan=False`: `lr: .inf` is a typo, not a setting), and so is
anything but a number where a number goes (`Int`, `Float`: `epochs: yes`
is a YAML boolean, not 1 epoch). `TrialConfig.run_hash()` is the
content address of a trial: the hash of the canonical *non-default* fields,
with the seed and the environment-only fields (paths, device) left out, so
adding a new field with a default never changes old hashes. Each section
also declares how `dynsweep run --smoke` shrinks it: a `Smoke` rule on a
field, `_smoke_section` for a rule across its fields (`_Frozen.smoke()`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError


def _number(value: Any) -> Any:
    """Where a number goes, a YAML boolean (`yes`, `true`, `on`) is not 1 and a
    quoted "0.1" is not 0.1: both are refused, naming the field. Numbers (ints
    also for floats) and None (optional fields) pass to pydantic's own checks."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", f"Input should be a number, not the boolean "
                                  f"{str(value).lower()} (YAML reads yes/no/on/off as booleans too)")
    if isinstance(value, (str, bytes)):
        raise PydanticCustomError("number_type", f"Input should be a number, not the string "
                                  f"{value!r} (write numbers unquoted)")
    return value


# Numeric field types: pydantic's int and float, less their bool and string inputs.
_NUMBER = BeforeValidator(_number)
Int = Annotated[int, _NUMBER]
Float = Annotated[float, _NUMBER]
OptInt = Annotated[int | None, _NUMBER]
OptFloat = Annotated[float | None, _NUMBER]


# ------------------------------------------------------------------ --smoke
@dataclass(frozen=True)
class Smoke:
    """How `dynsweep run --smoke` shrinks one field: metadata on the field's
    type (`epochs: Annotated[Int, Smoke(...)] = ...`), read by `_Frozen.smoke`
    and `smoke_rule`, so `sweeps.spec.smoke` knows no field by name.

    `to(value)` is the field's smoke value in the base config. Where a grid
    axis or a variant sets the field, `grid` and `variant` say what happens to
    the swept values: "keep" them, "shrink" them by `to` too, or "drop" the
    field (the axis or the variant's key goes; the base's smoke value holds).
    """

    to: Callable[[Any], Any]
    grid: Literal["keep", "shrink", "drop"] = "keep"
    variant: Literal["keep", "shrink", "drop"] = "keep"


def _const(value: Any) -> Callable[[Any], Any]:
    return lambda _: value


def _at_most(n: int) -> Callable[[Any], Any]:
    return lambda v: min(v, n) if isinstance(v, int) else v


def _zero_if_set(v: Any) -> Any:
    return 0 if v is not None else v


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def smoke(self) -> "_Frozen":
        """This section shrunk for `--smoke`: each field by its `Smoke` rule,
        each sub-section by its own `smoke()`, then `_smoke_section` for a
        rule across fields (a deficit's window). Validated like any config."""
        values = {}
        for name, field in type(self).model_fields.items():
            value, rule = getattr(self, name), smoke_rule(field)
            if isinstance(value, _Frozen):
                value = value.smoke()
            elif rule is not None:
                value = rule.to(value)
            values[name] = value
        return type(self).model_validate(self._smoke_section(values))

    def _smoke_section(self, values: dict[str, Any]) -> dict[str, Any]:
        """A section's own smoke rule across its fields: none by default."""
        return values


def smoke_rule(field: Any) -> Smoke | None:
    """The `Smoke` rule in a pydantic field's metadata, or None."""
    return next((m for m in field.metadata if isinstance(m, Smoke)), None)


def smoke_rule_at(path: str) -> Smoke | None:
    """The `Smoke` rule of a dotted TrialConfig field path (`train.epochs`), or None."""
    model: Any = TrialConfig
    *parents, leaf = path.split(".")
    for name in parents:
        field = getattr(model, "model_fields", {}).get(name)
        if field is None:
            return None
        model = field.annotation
    field = getattr(model, "model_fields", {}).get(leaf)
    return smoke_rule(field) if field is not None else None


# --------------------------------------------------------------------- data
class DeficitConfig(_Frozen):
    """A training-data deficit active for epochs in [start_epoch, end_epoch)."""

    kind: Literal["none", "blur", "vflip", "label_permutation", "noise"] = "none"
    start_epoch: Int = Field(0, ge=0)
    end_epoch: Int = Field(0, ge=0)

    @model_validator(mode="after")
    def _window(self) -> "DeficitConfig":
        if self.kind != "none" and self.end_epoch <= self.start_epoch:
            raise ValueError("end_epoch must be greater than start_epoch")
        return self

    def _smoke_section(self, values: dict[str, Any]) -> dict[str, Any]:
        """--smoke: a deficit covers the one smoke epoch."""
        return {**values, "start_epoch": 0, "end_epoch": 1} if values["kind"] != "none" else values

    def boundary_epochs(self) -> set[int]:
        """Epochs where the training data changes."""
        return {self.start_epoch, self.end_epoch} if self.kind != "none" else set()


class PatchConfig(_Frozen):
    """Li/Wei/Ma patch data: a fraction of examples carry a class patch z + zeta_c
    (+ a per-example noise xi_i of norm about `noise`)."""

    fraction: Float = Field(0.0, ge=0.0, le=1.0)
    scale: Float = Field(0.5, gt=0.0)      # magnitude of the patch z
    zeta: Float = Field(0.1, ge=0.0)       # class-dependent offset size
    size: Int = Field(4, ge=1)             # patch length (1-D) or side (2-D)
    noise: Float = Field(0.0, ge=0.0)      # per-example Gaussian noise, expected norm ~ noise


class DataConfig(_Frozen):
    dataset: Literal["mnist1d", "cifar10", "mnist", "fashion_mnist", "sine1d", "digits"] = "mnist1d"
    root: str | None = None        # environment: where torchvision sets / caches live
    download: bool = False         # environment: allowed only with internet
    train_size: Annotated[OptInt, Smoke(_const(500))] = Field(None, ge=10)   # class-balanced subset
    test_size: Annotated[OptInt, Smoke(_const(200))] = Field(None, ge=10)
    label_noise: Float = Field(0.0, ge=0.0, le=1.0)
    deficit: DeficitConfig = DeficitConfig()
    patch: PatchConfig = PatchConfig()
    augment: bool = False          # random crop + flip for image sets
    data_seed: Int = 0             # mnist1d generation, subsets, label noise


# -------------------------------------------------------------------- model
class ModelConfig(_Frozen):
    name: Literal["mlp", "cnn1d", "cnn2d", "simple_cnn", "resnet20", "allcnn"] = "mlp"
    width: Int = Field(128, ge=1)           # hidden units (mlp) / channels (cnn1d, cnn2d); others fixed
    depth: Int = Field(2, ge=1)             # hidden layers (mlp)
    activation: Literal["relu", "tanh", "gelu"] = "relu"
    batchnorm: bool = False                 # mlp, cnn1d, simple_cnn, allcnn (resnet20 always BN)
    dropout: Float = Field(0.0, ge=0.0, lt=1.0)
    preact_noise: Float = Field(0.0, ge=0.0)   # Gaussian noise std before activations
    init_seed: OptInt = None                # None: derived from the trial seed


# ---------------------------------------------------------------- optimizer
class ScheduleConfig(_Frozen):
    """Learning-rate (and momentum) schedule, in epochs.

    constant; step (x factor at each fraction in milestones, the classic 3-step
    schedule is milestones [0.5, 0.75], factor 0.1); exponential (x gamma per
    epoch); two_stage (lr, momentum for stage1_epochs, then lr2, momentum2;
    with anneal_epoch, lr2 x factor from that epoch on: a final anneal).
    warmup_epochs ramps linearly from 0 in front of any of them.
    restart_epoch (exponential only) restarts the decay there: from that epoch
    on the rate is lr x gamma^(epoch - restart_epoch), e.g. at the end of a
    training-data deficit, so the recovery starts at the initial rate.
    """

    kind: Literal["constant", "step", "exponential", "two_stage"] = "constant"
    milestones: tuple[Float, ...] = (0.5, 0.75)
    factor: Float = Field(0.1, gt=0.0)
    gamma: Float = Field(0.97, gt=0.0)
    stage1_epochs: Annotated[Int, Smoke(_zero_if_set, grid="drop", variant="shrink")] = Field(0, ge=0)
    lr2: OptFloat = Field(None, gt=0.0)
    momentum2: OptFloat = Field(None, ge=0.0, lt=1.0)
    anneal_epoch: OptInt = Field(None, ge=1)          # two_stage: lr2 x factor from here on
    warmup_epochs: Float = Field(0.0, ge=0.0)
    noise_off_epoch: Annotated[OptInt, Smoke(_zero_if_set, variant="shrink")] = Field(None, ge=0)  # preact noise off here
    # exponential: the decay starts over here (--smoke: at epoch 1, where a smoke deficit ends)
    restart_epoch: Annotated[OptInt, Smoke(_at_most(1), variant="shrink")] = Field(None, ge=1)

    @model_validator(mode="after")
    def _restart_is_exponential(self) -> "ScheduleConfig":
        if self.restart_epoch is not None and self.kind != "exponential":
            raise ValueError("restart_epoch restarts an exponential decay: it needs kind: exponential")
        return self

    def boundary_epochs(self) -> set[int]:
        """Epochs where the optimizer (or the noise) changes."""
        out = {self.stage1_epochs} if self.kind == "two_stage" else set()
        if self.kind == "two_stage" and self.anneal_epoch is not None:
            out.add(self.anneal_epoch)
        if self.noise_off_epoch is not None:
            out.add(self.noise_off_epoch)
        if self.restart_epoch is not None:
            out.add(self.restart_epoch)
        return out


class OptimConfig(_Frozen):
    name: Literal["sgd", "adam"] = "sgd"
    lr: Float = Field(0.1, gt=0.0)
    momentum: Float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: Float = Field(0.0, ge=0.0)
    betas: tuple[Float, Float] = (0.9, 0.999)
    schedule: ScheduleConfig = ScheduleConfig()


# ----------------------------------------------------------------- training
class TrainConfig(_Frozen):
    epochs: Annotated[Int, Smoke(_const(1), grid="drop", variant="drop")] = Field(5, ge=1)
    batch_size: Int = Field(100, ge=1)
    max_steps: OptInt = Field(None, ge=1)         # stop early at this step
    divergence_loss: Float = Field(1e3, gt=0.0)   # loss above this = diverged
    log_every: Int = Field(0, ge=0)               # train/loss cadence (0: every epoch)
    bf16: bool = False                            # autocast on CUDA only
    device: str = "auto"                          # environment: auto | cpu | cuda[:i]
    deterministic: bool = True


# ------------------------------------------------------------------- probes
class ProbeScheduleConfig(_Frozen):
    """When expensive probes run: log-spaced steps, every n, or listed steps."""

    kind: Literal["log", "every", "steps", "epoch"] = "log"
    points: Annotated[Int, Smoke(_const(4))] = Field(12, ge=1)   # log: how many log-spaced steps
    # log: the first log-spaced step; the grid spans [log_start, total]. The default 1 spends
    # its first points on steps 1, 2, 3 …, where they merge; a later start puts them on the rise
    log_start: Int = Field(1, ge=1)
    every: Int = Field(100, ge=1)       # every: period in steps
    steps: tuple[Int, ...] = ()         # steps: explicit optimizer steps


class ProbesConfig(_Frozen):
    """Which probes run and on what. Defaults: break-even spectra + stiffness."""

    hessian: bool = True        # hessian/top (Lanczos), hessian/n_hvp
    hessian_trace: bool = False # hessian/trace (Hutchinson)
    gradcov: bool = True        # gradcov/top, gradcov/trace, gradcov/smallest_nonzero
    stiffness: bool = True      # stiffness/train_train/*, stiffness/train_val/*
    fisher: bool = False        # fisher/trace
    frequency: bool = False     # freq/delta_k*
    timeline: bool = True       # timeline/dist_init, grad_norm, sign_flips
    snapshots: bool = False     # flattened weights at each probe step (artifact "weights")
    gradcov_mb: bool = False    # gradcov_mb/top, trace, trace_over_top: K of mini-batch mean gradients
    sgd_noise: bool = False     # sgd_noise/s2, curv_mean, grad_var, noise_term (needs hessian)
    extra: tuple[str, ...] = ()     # probes registered by plugins (measure.register_probe), by name
    schedule: ProbeScheduleConfig = ProbeScheduleConfig()
    probe_size: Annotated[Int, Smoke(_const(64))] = Field(256, ge=2)      # fixed probe set drawn from train data
    val_probe_size: Annotated[Int, Smoke(_const(32))] = Field(128, ge=2)  # for train-val stiffness
    probe_seed: Int = 0
    hessian_size: OptInt = Field(None, ge=2)   # batch for curvature (None: probe_size)
    hessian_tol: Float = Field(3e-3, gt=0.0)   # Lanczos residual; λ_H¹ error ≲ 2e-5 (benchmarks/)
    hutchinson_samples: Int = Field(20, ge=1)
    # gradcov/*: per example, or "minibatch": means of gradcov_minibatch probe examples, so only
    # probe_size / gradcov_minibatch vectors; for the paper's unit with enough batches use gradcov_mb
    gradcov_unit: Literal["example", "minibatch"] = "example"
    gradcov_minibatch: Annotated[Int, Smoke(_const(16))] = Field(128, ge=1)
    # gradcov_mb: K in the mini-batch unit, from its own fixed subset of
    # gradcov_mb_batches x gradcov_mb_size training examples (the paper: batch 128)
    gradcov_mb_batches: Int = Field(16, ge=2)
    gradcov_mb_size: Annotated[Int, Smoke(_const(16))] = Field(128, ge=1)
    fisher_samples: Int = Field(1, ge=1)
    frequencies: Int = Field(4, ge=1)        # how many label-spectrum peaks to track
    # tracked peaks at least this many grid bins (1/L) apart, the higher kept, k = 0 no neighbour;
    # None: the first local maxima (probes.frequency.label_peaks)
    frequency_min_sep: OptInt = Field(None, ge=1)
    # Δ_F and the peaks of labels and outputs each less its mean over the probe set: uncentred,
    # the constant part (the class priors) leaks into low k through the spread of the projections
    frequency_centring: Literal["none", "mean"] = "none"
    # Gaussian kernel widths (std, input space) of the frequency filter variant
    # (freq/e_low_w{j}, freq/e_high_w{j}) in units of the probe inputs' median
    # nearest-neighbour distance; () turns it off (dynamics_core/measure/frequency.py)
    frequency_widths: tuple[Annotated[Float, Field(gt=0)], ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    stiffness_bins: Int = Field(10, ge=1)    # input-distance bins of stiffness_distance and ξ
    # ξ = the input distance where binned within-class train–train sign stiffness first falls to
    # this level (0: the paper's zero crossing; a level above 0 defines ξ where it never reaches 0)
    stiffness_xi_level: Float = Field(0.0, ge=-1.0, le=1.0)
    bn_mode: Literal["eval", "train"] = "eval"

    @model_validator(mode="after")
    def _sgd_noise_needs_hessian(self) -> "ProbesConfig":
        if self.sgd_noise and not self.hessian:
            raise ValueError("sgd_noise is measured along the top Hessian eigenvector: "
                             "it needs hessian: true")
        return self


# ------------------------------------------------------------------ pruning
Ablation = Literal["none", "random_magnitudes_kept_signs", "kept_magnitudes_random_signs",
                   "shuffle_layer", "shuffle_network", "reinit"]


class PruningConfig(_Frozen):
    """IMP with rewinding (`dynamics_core.imp`). levels=0 trains the dense network only.

    Each level prunes `rate` of the remaining prunable weights (global
    magnitude), rewinds the survivors to their values at optimizer step
    `rewind_step` (0: initialisation), applies `ablation` there and trains
    again from that step. `exclude` names prunable weights kept dense (OpenLTH
    spares the output layer of its CIFAR ResNets: `fc.weight` here).
    """

    levels: Annotated[Int, Smoke(_at_most(2), grid="shrink", variant="shrink")] = Field(0, ge=0)
    rate: Float = Field(0.2, gt=0.0, lt=1.0)
    # optimizer steps taken; 0 = initialisation
    rewind_step: Annotated[Int, Smoke(_at_most(2), grid="shrink", variant="shrink")] = Field(0, ge=0)
    ablation: Ablation = "none"
    ablation_seed: OptInt = None           # None: derived from the trial seed
    exclude: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _ablation_needs_a_level(self) -> "PruningConfig":
        if self.ablation != "none" and self.levels == 0:
            raise ValueError("an ablation acts at the rewind point: it needs levels >= 1")
        return self


class TrialConfig(_Frozen):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    probes: ProbesConfig = ProbesConfig()
    pruning: PruningConfig = PruningConfig()
    seed: Int = 0

    def boundary_epochs(self) -> set[int]:
        """Epochs where the training problem changes: always resumable points."""
        out = self.data.deficit.boundary_epochs() | self.optim.schedule.boundary_epochs()
        return {e for e in out if 0 < e < self.train.epochs}

    def run_hash(self) -> str:
        """Content address: sha256 of canonical non-default, non-environment fields."""
        canon = _prune(non_default_fields(self), HASH_EXCLUDED)
        blob = json.dumps(canon, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def flat(self) -> dict[str, Any]:
        """Every field under its dotted path: {'optim.lr': 0.1, ...}."""
        return flatten(self.model_dump(mode="json"))


# Fields that say where/how a trial runs, not what it computes.
HASH_EXCLUDED = frozenset({"seed", "data.root", "data.download", "train.device"})


def non_default_fields(cfg: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in type(cfg).model_fields.items():
        value = getattr(cfg, name)
        if isinstance(value, BaseModel):
            sub = non_default_fields(value)
            if sub:
                out[name] = sub
        elif value != field.default:
            out[name] = json.loads(json.dumps(value, default=list))
    return out


def _prune(tree: dict[str, Any], excluded: frozenset[str], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if path in excluded:
            continue
        if isinstance(value, dict):
            value = _prune(value, excluded, path + ".")
            if not value:          # a section left empty by pruning is no section
                continue
        out[key] = value
    return out


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree
