"""The analysis plan of one conjecture, written down before the sweep is judged.

A plan fixes everything a verdict depends on: which metric, over which window
of each run, with which detector and exclusion rules, by which statistic, in
which direction, at which alpha, in which multiplicity family, how many trials
are enough, what effect is worth detecting, and which manipulation checks must
pass for the experiment to have tested the claim at all.

Statistics (`STATISTICS`, each one test of `inference.py`):
`stratified_spearman` (`trend_test`), `difference_of_means` and
`non_inferiority` (`compare_groups`, the latter with a margin),
`intersection_union`, `paired_sign_flip` (`sign_flip_test`: one sample of
per-trial contrasts, exact over the 2^n sign patterns up to 10^5, else Monte
Carlo), `sign_test` (`sign_test`: exact binomial share against p0) and
`censored_trend` (`trend_test(..., censored=mask)`: times to an event that
may not occur within the budget, censored there; Gehan scores within cells)
and `equivalence` (`equivalence_test`: the mean of per-unit contrasts within
±`effect_of_interest`, two one-sided tests; the margin is the plan's
effect of interest).

The engine only carries the window, detector and exclusions: the experiment
applies them. It uses the rest to judge (`verdict.verdict_of`, `verdict.finalize`).

`options` holds every other threshold, rule and setting the experiment's
analysis reads (a plan is the whole analysis: no module constant decides a
verdict). A conjecture keyword that sets one (`with_options`; default
`FROM_PLAN`) changes the plan, so its verdict is exploratory.
`options["subgroups_from"]`, when a plan groups trials, must name a design
variable (`check_subgroups`): a config param path, `seed` or
`calibration:<name>`, never a logged metric (a post-treatment subgroup).

`plan.hash()` is a short content hash of the plan's canonical JSON. A plan
changed after the results were seen (`with_overrides`, e.g. a CLI `--window`)
is marked `exploratory`, keeps the registered plan's hash as
`registered_hash`, and its verdicts say so.

Windows (`parse_window`):
- `whole_run`: every measurement;
- `after_breakeven`: measurements at or after the trial's break-even step;
- `until_<metric><op><value>`: measurements up to the first step where the
  metric satisfies the condition, e.g. `until_train_acc>=0.65`;
- `from_<metric><op><value>`: measurements from that step on.
`op` is one of >=, <=, >, <.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

STATISTICS: tuple[str, ...] = ("stratified_spearman", "difference_of_means", "non_inferiority",
                               "intersection_union", "paired_sign_flip", "sign_test",
                               "censored_trend", "equivalence")
WINDOW_KINDS: tuple[str, ...] = ("whole_run", "after_breakeven", "until", "from")
OPS: tuple[str, ...] = (">=", "<=", ">", "<")
_NAME = re.compile(r"^[A-Za-z_][\w.\-/]*$")
_THRESHOLD = re.compile(r"^(until|from)_([A-Za-z_][\w./\-]*?)(>=|<=|>|<)"
                        r"([-+]?[0-9.]+(?:[eE][-+]?\d+)?)$")
# fields that say where a plan came from, not what it analyses: outside the hash
_BOOKKEEPING = ("exploratory", "registered_hash")
# a subgroup (stratum) variable must be fixed by the design: a config param path
# such as `optim.lr`, or `calibration:<name>` (a registered map from design values
# to groups); never a logged metric, which the treatment itself may move
_DESIGN_VARIABLE = re.compile(r"^(?:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|seed|calibration:[\w.\-]+)$")
_METRIC_PREFIXES = ("train/", "val/", "final/", "probe/", "level/")


class _FromPlan:
    """Default of a conjecture's keyword that the plan's `options` decide."""

    def __repr__(self) -> str:
        return "FROM_PLAN"


FROM_PLAN: Any = _FromPlan()


# ------------------------------------------------------------------ windows
@dataclass(frozen=True)
class Window:
    """Which measurements of each run count: a kind, and for thresholds a condition."""

    kind: Literal["whole_run", "after_breakeven", "until", "from"]
    metric: str | None = None
    op: str | None = None
    value: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in WINDOW_KINDS:
            raise ValueError(f"window kind must be one of {WINDOW_KINDS}, got {self.kind!r}")
        threshold = self.kind in ("until", "from")
        given = self.metric is not None and self.op is not None and self.value is not None
        if threshold != given:
            raise ValueError(f"window {self.kind!r} needs a metric, op and value "
                             "exactly when it is until/from")
        if self.op is not None and self.op not in OPS:
            raise ValueError(f"window op must be one of {OPS}, got {self.op!r}")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(f"window threshold must be finite, got {self.value!r}")

    def __str__(self) -> str:
        if self.kind in ("whole_run", "after_breakeven"):
            return self.kind
        return f"{self.kind}_{self.metric}{self.op}{self.value:g}"

    def holds(self, value: float) -> bool:
        """Whether one measurement of the metric satisfies the threshold condition."""
        return {">=": value >= self.value, "<=": value <= self.value,
                ">": value > self.value, "<": value < self.value}[self.op]


def parse_window(text: str | Window) -> Window:
    """`whole_run`, `after_breakeven`, `until_<metric><op><value>` or `from_…` as a Window."""
    if isinstance(text, Window):
        return text
    text = str(text).strip()
    if text in ("whole_run", "after_breakeven"):
        return Window(text)
    m = _THRESHOLD.match(text)
    if not m:
        raise ValueError(f"bad window {text!r}: expected whole_run, after_breakeven, "
                         "until_<metric><op><value> or from_<metric><op><value>")
    return Window(m[1], m[2], m[3], float(m[4]))


# ----------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Check:
    """A manipulation check: a condition the experiment must have produced."""

    name: str
    description: str


@dataclass(frozen=True)
class AnalysisPlan:
    """How one conjecture is judged; see the module docstring."""

    conjecture: str
    statement: str
    metric: str
    statistic: str
    predicted_sign: int
    window: str = "whole_run"
    detector: str | None = None
    exclusions: tuple[str, ...] = ()
    family: str = ""
    alpha: float = 0.05
    min_n: int = 10
    min_per_stratum: int = 3
    effect_of_interest: float = 0.5
    checks: tuple[Check, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    exploratory: bool = False
    registered_hash: str | None = None

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("window", str(parse_window(self.window)))
        set_("exclusions", tuple(str(e) for e in self.exclusions))
        set_("checks", tuple(c if isinstance(c, Check) else Check(**c) for c in self.checks))
        set_("options", dict(self.options))
        set_("family", self.family or self.conjecture)
        for name in (self.conjecture, self.metric, self.family, *self.exclusions,
                     *(c.name for c in self.checks)):
            if not _NAME.match(name):
                raise ValueError(f"bad name {name!r} in the plan of {self.conjecture!r}")
        if len({c.name for c in self.checks}) != len(self.checks):
            raise ValueError(f"duplicate manipulation check in the plan of {self.conjecture!r}")
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {self.statistic!r}")
        if self.predicted_sign not in (-1, 1):
            raise ValueError(f"predicted_sign must be -1 or +1, got {self.predicted_sign!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if self.min_n < 1 or self.min_per_stratum < 1:
            raise ValueError("min_n and min_per_stratum must be >= 1")
        if not (math.isfinite(self.effect_of_interest) and self.effect_of_interest > 0):
            raise ValueError(f"effect_of_interest must be > 0, got {self.effect_of_interest!r}")
        json.dumps(self.options)                    # options must be JSON: fail at definition
        check_subgroups(self.options.get("subgroups_from"), self.conjecture)

    @property
    def parsed_window(self) -> Window:
        return parse_window(self.window)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict; `from_dict(to_dict())` is the same plan."""
        d = dataclasses.asdict(self)
        d["exclusions"] = list(self.exclusions)
        d["options"] = dict(self.options)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AnalysisPlan":
        return cls(**{**d, "exclusions": tuple(d.get("exclusions", ())),
                      "checks": tuple(Check(**c) for c in d.get("checks", ()))})

    def canonical_json(self) -> str:
        """Sorted-key compact JSON of what the plan analyses (bookkeeping fields left out)."""
        d = {k: v for k, v in self.to_dict().items() if k not in _BOOKKEEPING}
        return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    def hash(self) -> str:
        """First 12 hex digits of the SHA-256 of `canonical_json()`."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:12]

    def with_overrides(self, **changes: Any) -> "AnalysisPlan":
        """A new plan with `changes`, marked exploratory; remembers the registered hash."""
        bad = set(changes) & set(_BOOKKEEPING)
        if bad:
            raise ValueError(f"cannot override {sorted(bad)}")
        return dataclasses.replace(self, **changes, exploratory=True,
                                   registered_hash=self.registered_hash or self.hash())

    def with_options(self, **given: Any) -> "AnalysisPlan":
        """The plan with `given` options (FROM_PLAN ones skipped), exploratory where they
        change it: a conjecture's keyword that overrides its plan is a changed plan."""
        changed = {k: v for k, v in given.items()
                   if v is not FROM_PLAN and (k not in self.options or self.options[k] != v)}
        return self.with_overrides(options={**self.options, **changed}) if changed else self

    def check(self, name: str) -> Check:
        """The planned manipulation check called `name`; KeyError if none."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"plan {self.conjecture!r} has no manipulation check {name!r}")


def check_subgroups(source: Any, conjecture: str = "") -> None:
    """Refuse a subgroup source that is not a design variable (post-treatment subgroups).

    Grouping trials by something the treatment can move (their own loss curve,
    a final accuracy) makes the groups an outcome: a test within them compares
    trials selected on the result. `None` (no subgroups) passes.
    """
    if source is None:
        return
    text = str(source)
    if text.startswith(_METRIC_PREFIXES) or "/" in text or not _DESIGN_VARIABLE.match(text):
        raise ValueError(f"plan {conjecture!r}: subgroups_from={text!r} is not a design variable "
                         "(a config param path such as optim.lr, or calibration:<name>); "
                         "subgroups read from a logged metric are post-treatment")
