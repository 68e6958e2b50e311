"""The verdict of one conjecture, and the rules every conjecture is judged by.

A conjecture is a pure function `SweepTable -> list[Verdict]`. Each of its
tests is registered beforehand as an `AnalysisPlan` (`plan.py`) and run with
the shared tests of `inference.py` (`trend_test`, `compare_groups`,
`intersection_union`, re-exported here), so every paper is judged alike:

- `verdict_of(plan, result, checks)`: the verdict of one test under its plan;
- `finalize(verdicts)`: Holm's adjustment over each multiplicity family,
  then the final verdict of every test from its adjusted p.

Verdict kinds (`decide_with_reason`; the first rule that applies decides):

| kind             | when                                                              |
|------------------|-------------------------------------------------------------------|
| invalid_protocol | a manipulation check of the plan failed (or was not evaluated)    |
| underpowered     | n < the plan's min_n, or a stratum below min_per_stratum entered  |
|                  | the test; or not significant and the minimum detectable effect    |
|                  | (80 % power, level alpha / m) exceeds the effect of interest      |
| supported        | adjusted p < alpha, the predicted sign, and the CI reaches the    |
|                  | effect of interest (on the predicted side)                        |
| negligible       | adjusted p < alpha, the predicted sign, but the CI lies entirely  |
|                  | below the effect of interest: real, and too small to matter       |
| refuted          | adjusted p < alpha and the opposite sign                          |
| inconclusive     | no effect detected at adequate power (or no test possible)        |

The effect-of-interest rule reads the CI of the tested effect times the
predicted sign: its upper end must reach `effect_of_interest`. An
intersection-union test reaches it when every part's CI does; a part or a
plan with a margin (`non_inferiority`, `equivalence`) is exempt, the margin
being its effect of interest; a test without a CI is judged by its point effect.
Strata below the plan's `min_per_stratum` are excluded before a trend test
(`verdict_of` runs it again with the plan's minimum) and counted in the reason.
Holm's m is the number of tests registered in the family: a test that could
not be computed counts as p = 1 and its reason says so.
Without a plan (`decide`) only the sign and p rules apply.

Every random draw uses `numpy.random.default_rng(rng_seed)`: the same table
gives the same verdict. Trials that are not `finished` (diverged, errored,
still running) are never averaged in: `SweepTable.usable()` splits them off
and the counts go into `details`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Literal, Mapping

import numpy as np

from sweeps.conjectures.inference import (TestResult, compare_groups, intersection_union,
                                          trend_test)
from sweeps.conjectures.plan import AnalysisPlan
from sweeps.conjectures.stats import ALPHA, N_BOOT, N_PERM, POWER, holm, minimum_detectable

VerdictKind = Literal["supported", "negligible", "refuted", "inconclusive", "underpowered",
                      "invalid_protocol"]
VERDICTS: tuple[str, ...] = ("supported", "negligible", "refuted", "inconclusive", "underpowered",
                             "invalid_protocol")
PLAN_CHANGED, SEEDS_SEEN = "plan changed", "seeds seen"      # why a verdict is exploratory
Checks = Mapping[str, tuple[bool, str]]   # manipulation check name -> (passed, one-line detail)
__all__ = ["ALPHA", "N_BOOT", "N_PERM", "VERDICTS", "AnalysisPlan", "Checks", "TestResult",
           "Verdict", "compare_groups", "decide", "decide_with_reason", "finalize", "inconclusive",
           "intersection_union", "trend_test", "verdict_of"]


@dataclass(frozen=True)
class Verdict:
    """Whether one conjecture holds on one sweep, with the numbers behind it.

    `p_value` is the p the verdict used: the Holm-adjusted one after
    `finalize`, equal to `p_raw` before. `ci_low`/`ci_high` bound the tested
    effect at `ci_level`. `plan_hash` is the plan the test ran under,
    `registered_hash` the plan registered before the results were seen; they
    differ only for an `exploratory` verdict. `registered_at` (when the plan
    was registered: the sweep's start, UTC) and `history` (`first`, or what
    an earlier sweep of the same conjecture registered and whether it saw
    these seeds) are filled in when a stored sweep is judged (`sweeps.judge`).
    `exploratory_reason` says why a verdict is exploratory: `plan changed`
    (its plan differs from the registered one), `seeds seen` (an earlier
    sweep of the conjecture trained on its seeds), or both.
    """

    name: str
    statement: str
    verdict: VerdictKind
    statistic: float = math.nan
    effect: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    p_value: float = math.nan
    n: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    p_raw: float = math.nan
    p_adjusted: float = math.nan
    p_method: str = ""
    n_perm: int = 0
    p_mc_se: float = math.nan
    ci_level: float = math.nan
    family: str = ""
    n_family: int = 1
    plan_hash: str = ""
    registered_hash: str = ""
    exploratory: bool = False
    registered_at: str = ""
    history: str = ""
    exploratory_reason: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        if not np.isfinite(self.p_raw):
            set_("p_raw", self.p_value)
        if not np.isfinite(self.p_adjusted):
            set_("p_adjusted", self.p_value)
        if not self.reason:
            set_("reason", str(self.details.get("reason") or _default_reason(self)))
        if self.exploratory and not self.exploratory_reason:
            set_("exploratory_reason", PLAN_CHANGED)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain dict of every field (numpy scalars and arrays converted)."""
        return _jsonable(asdict(self))

    def summary(self) -> str:
        """One line: name, verdict, statistic, effect [CI at its level], p, n, reason."""
        level = f" {self.ci_level:.0%}" if np.isfinite(self.ci_level) else ""
        tag = " EXPLORATORY" if self.exploratory else ""
        ci = (f"[{_fmt(self.ci_low)}, {_fmt(self.ci_high)}]{level}"
              if np.isfinite(self.ci_low) and np.isfinite(self.ci_high) else "[no CI]")
        return (f"{self.name}: {self.verdict.upper()}{tag}  stat={_fmt(self.statistic)} "
                f"effect={_fmt(self.effect)} {ci} "
                f"p={_fmt(self.p_value)} n={self.n}  ({self.reason})")


def _default_reason(v: Verdict) -> str:
    if not np.isfinite(v.p_value):
        return "no test could be computed"
    cmp = "<" if v.verdict in ("supported", "negligible", "refuted") else "≥"
    return f"p={_fmt(v.p_value)} {cmp} {_fmt(v.details.get('alpha', ALPHA))}"


def inconclusive(name: str, statement: str, reason: str, /, n: int = 0, **details: Any) -> Verdict:
    """A verdict that could not be reached (too little data), saying why."""
    return Verdict(name, statement, "inconclusive", n=n, details={**details, "reason": reason},
                   reason=reason)


# --------------------------------------------------------------- the rules
def decide_with_reason(p_value: float, effect: float, predicted_sign: int, alpha: float = ALPHA, *,
                       n_tests: int = 1, n: int | None = None, min_n: int = 0,
                       min_stratum: int | None = None, min_per_stratum: int = 0,
                       mde: float = math.nan, effect_of_interest: float = math.nan,
                       reach: float | None = None,
                       failed_check: str | None = None) -> tuple[VerdictKind, str]:
    """(kind, one-line reason) by the rules of the module docstring, in their order.

    `p_value` is the p to judge by (Holm-adjusted over `n_tests` when > 1);
    `effect` is the tested effect (the statistic minus its null value), whose
    sign decides supported vs refuted; `mde` is the minimum detectable |effect|
    at 80% power. `reach` is the largest effect on the predicted side the CI
    admits (its end times the predicted sign; NaN without a CI, then the
    point effect stands in); None, or no `effect_of_interest`, skips the
    effect-of-interest rule. Without `effect_of_interest` there is no power rule.
    """
    if failed_check:
        return "invalid_protocol", failed_check
    if n is not None and n < min_n:
        return "underpowered", f"n={n} < min {min_n}"
    if min_stratum is not None and min_stratum < min_per_stratum:
        return "underpowered", f"smallest stratum {min_stratum} < min {min_per_stratum} per stratum"
    if not np.isfinite(p_value):
        return "inconclusive", "no test could be computed"
    label = f"adj p={_fmt(p_value)}" if n_tests > 1 else f"p={_fmt(p_value)}"
    holm_txt = f" (Holm over {n_tests})" if n_tests > 1 else ""
    if p_value < alpha and np.isfinite(effect) and effect != 0:
        agree = np.sign(effect) == np.sign(predicted_sign)
        head = (f"{label} < {_fmt(alpha)}{holm_txt}, effect {_fmt(effect)} has the "
                f"{'predicted' if agree else 'opposite'} sign")
        if not agree:
            return "refuted", head
        if reach is None or not np.isfinite(effect_of_interest):
            return "supported", head
        bound, what = ((reach, "its CI reaches") if np.isfinite(reach)
                       else (abs(effect), "no CI; the effect is"))
        if bound < effect_of_interest:
            return ("negligible", f"{head}, but {what} only {_fmt(bound)} < "
                    f"{_fmt(effect_of_interest)} of interest")
        return "supported", f"{head}; {what} {_fmt(bound)} ≥ {_fmt(effect_of_interest)} of interest"
    why = f"{label} ≥ {_fmt(alpha)}{holm_txt}" if p_value >= alpha else f"{label}, effect 0"
    if np.isfinite(effect_of_interest):
        if not (mde <= effect_of_interest):
            return ("underpowered", f"{why} and minimum detectable effect {_fmt(mde)} > "
                    f"{_fmt(effect_of_interest)} of interest at {POWER:.0%} power")
        return ("inconclusive", f"{why}; no effect detected at adequate power "
                f"(minimum detectable {_fmt(mde)} ≤ {_fmt(effect_of_interest)})")
    return "inconclusive", why


def decide(p_value: float, effect: float, predicted_sign: int, alpha: float = ALPHA,
           **rule: Any) -> VerdictKind:
    """The verdict kind alone: `decide_with_reason(...)[0]`.

    With only (p, effect, sign, alpha): supported / refuted if p < alpha with
    the effect's sign equal / opposite to the predicted one, else inconclusive.
    """
    return decide_with_reason(p_value, effect, predicted_sign, alpha, **rule)[0]


# ------------------------------------------------------- plans and families
# what `details["test"]` of a TestResult says for each statistic a plan may name
_TEST_OF = {"stratified_spearman": "Spearman", "difference_of_means": "difference of means",
            "non_inferiority": "difference of means", "intersection_union": "intersection-union",
            "paired_sign_flip": "sign-flip", "sign_test": "binomial sign test",
            "censored_trend": "censored trend", "equivalence": "equivalence"}


def _check_statistic(plan: AnalysisPlan, result: TestResult) -> None:
    """The result must come from the test the plan names (ValueError otherwise)."""
    test = result.details.get("test")
    margin = "margin" in result.details
    if test is None:
        return
    wrong_test = _TEST_OF[plan.statistic] not in test
    wrong_test |= ("equivalence" in test) != (plan.statistic == "equivalence")
    wrong_margin = "difference" in test and (plan.statistic == "non_inferiority") != margin
    if wrong_test or wrong_margin:
        raise ValueError(f"plan {plan.conjecture!r} names {plan.statistic}, "
                         f"the result is a {test}{' with a margin' if margin else ''}")
    if plan.statistic == "equivalence" and result.details["margin"] != plan.effect_of_interest:
        raise ValueError(f"plan {plan.conjecture!r}: the equivalence margin is its effect of "
                         f"interest {plan.effect_of_interest:g}, the test used "
                         f"{result.details['margin']:g}")


def _check_outcome(plan: AnalysisPlan, checks: Checks | None) -> tuple[str | None, dict[str, Any]]:
    """(first failed or missing planned check as a reason, or None; all outcomes for details)."""
    checks = dict(checks or {})
    unknown = set(checks) - {c.name for c in plan.checks}
    if unknown:
        raise ValueError(f"checks {sorted(unknown)} are not in the plan of {plan.conjecture!r}")
    failed, out = None, {}
    for c in plan.checks:
        passed, detail = checks.get(c.name, (False, "not evaluated"))
        out[c.name] = {"passed": bool(passed), "detail": str(detail), "description": c.description}
        if not passed and failed is None:
            failed = f"manipulation check {c.name} failed: {detail}"
    return failed, out


def verdict_of(plan: AnalysisPlan, result: TestResult | None, *, checks: Checks | None = None,
          name: str | None = None, statement: str | None = None, n: int | None = None,
          reason: str | None = None, **details: Any) -> Verdict:
    """The verdict of one test under its plan (before multiplicity: see `finalize`).

    `result` None means no test could be run; then `n` and `reason` say why.
    The result must come from the plan's statistic (ValueError otherwise).
    `checks` are the experiment's manipulation-check outcomes,
    {name: (passed, one-line detail)}; a planned check missing from them
    counts as failed. `name` defaults to the plan's conjecture (give
    `conjecture[metric]` when one plan is applied to several metrics).
    """
    failed, outcomes = _check_outcome(plan, checks)
    if result is not None:
        _check_statistic(plan, result)
        if (result.rerun is not None and result.min_stratum is not None
                and result.min_stratum < plan.min_per_stratum):
            result = result.rerun(min_per_stratum=plan.min_per_stratum)   # exclude, then test
    r = result if result is not None else TestResult(math.nan, math.nan, math.nan, math.nan,
                                                     math.nan, int(n or 0))
    rule = {"effect": r.tested_effect, "predicted_sign": plan.predicted_sign, "alpha": plan.alpha,
            "n": int(r.n if result is not None else (n or 0)), "min_n": plan.min_n,
            "min_stratum": r.min_stratum, "min_per_stratum": plan.min_per_stratum,
            "n_eff": r.n_eff, "se": r.se, "sides": r.sides,
            "effect_of_interest": plan.effect_of_interest, "reach": _reach(plan, r),
            "notes": _notes(r), "failed_check": failed}
    kind, why = _apply(rule, r.p_value, 1)
    extra = reason if result is None else r.details.get("reason")
    if not np.isfinite(r.p_value) and extra and kind != "invalid_protocol":
        why = extra if kind == "inconclusive" else f"{why} ({extra})"
    return Verdict(name or plan.conjecture, statement or plan.statement, kind, r.statistic,
                   r.effect, r.ci_low, r.ci_high, r.p_value, rule["n"],
                   {**r.details, **details, "checks": outcomes, "rule": rule,
                    "plan": plan.to_dict(), **({"reason": reason} if reason else {})},
                   reason=why, p_raw=r.p_value, p_adjusted=r.p_value, p_method=r.p_method,
                   n_perm=r.n_perm, p_mc_se=r.p_mc_se, ci_level=r.ci_level, family=plan.family,
                   plan_hash=plan.hash(), registered_hash=plan.registered_hash or plan.hash(),
                   exploratory=plan.exploratory)


def _signed_reach(t: Any, sign: int) -> float:
    """The largest tested effect on the predicted side that a CI admits; NaN without a CI."""
    lo, hi = t.ci_low - t.null_value, t.ci_high - t.null_value
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return math.nan
    return float(max(sign * lo, sign * hi))


def _reach(plan: AnalysisPlan, r: TestResult) -> float | None:
    """`reach` of `decide_with_reason` for a result under its plan (None: rule exempt).

    A margin is itself the effect of interest (non-inferiority): exempt. An
    intersection-union effect is the smallest signed part, so it reaches the
    effect of interest when every part does: the smallest part reach (a part
    without a CI stands in with its point effect; a part with a margin is exempt).
    """
    if plan.statistic == "non_inferiority" or "margin" in r.details:
        return None
    parts = r.details.get("parts")
    if plan.statistic == "intersection_union" and parts:
        reaches = []
        for part in parts:
            if "margin" in part:
                continue
            s = part["predicted_sign"]
            lo, hi = (c - part.get("null_value", 0.0) for c in part["ci"])
            effect = s * (part["effect"] - part.get("null_value", 0.0))
            reaches.append(max(s * lo, s * hi) if np.isfinite(lo) and np.isfinite(hi) else effect)
        return float(min(reaches)) if reaches else None
    return _signed_reach(r, plan.predicted_sign)


def _notes(r: TestResult) -> str:
    """What the reason line adds about the data: strata excluded, times censored."""
    d, out = r.details, []
    if d.get("excluded_strata"):
        ex = d["excluded_strata"]
        out.append(f"{len(ex)} strata ({sum(ex.values())} trials) below the plan's minimum of "
                   f"{d['min_per_stratum']} per stratum excluded before the test")
    if "censored_per_level" in d:
        per = ", ".join(f"{k}: {v}" for k, v in d["censored_per_level"].items())
        out.append(f"censored at the budget per level: {per or 'none'}")
    return "; ".join(out)


def _apply(rule: dict[str, Any], p: float, m: int) -> tuple[VerdictKind, str]:
    """The rules on one test's recorded inputs; power judged at the Bonferroni level alpha / m."""
    mde = minimum_detectable(rule["n_eff"], rule["se"], rule["alpha"] / max(m, 1), rule["sides"])
    rule["mde"] = mde
    kind, why = decide_with_reason(p, rule["effect"], rule["predicted_sign"], rule["alpha"],
                                   n_tests=m, n=rule["n"], min_n=rule["min_n"],
                                   min_stratum=rule["min_stratum"],
                                   min_per_stratum=rule["min_per_stratum"], mde=mde,
                                   effect_of_interest=rule["effect_of_interest"],
                                   reach=rule.get("reach"), failed_check=rule["failed_check"])
    notes = rule.get("notes")
    return kind, (f"{why}; {notes}" if notes and kind != "invalid_protocol" else why)


def finalize(verdicts: Iterable[Verdict],
             plans: Iterable[AnalysisPlan] | None = None) -> list[Verdict]:
    """Holm over each family, then every planned verdict decided again from its adjusted p.

    A family's size m is the number of its planned verdicts: every registered
    test the experiments attempted, computed or not. A test that could not be
    computed counts as p = 1 (it cannot be rejected, and m does not depend on
    the outcome) and its reason says so. (A test is left out of m only when
    it is never attempted, which must be decided before the results: the
    conjectures not asked for, a metric the spec did not measure.) The power rule is judged at alpha / m, the level the
    family's smallest p must pass. Verdicts made without a plan pass through
    unchanged. With `plans`, every planned verdict must have been judged
    under one of them (same hash).
    """
    verdicts = list(verdicts)
    if plans is not None:
        known = {p.hash() for p in plans}
        for v in verdicts:
            if "rule" in v.details and v.plan_hash not in known:
                raise ValueError(f"{v.name} was judged under plan {v.plan_hash}, "
                                 "which is not among the given plans")
    families: dict[str, list[int]] = {}
    for i, v in enumerate(verdicts):
        if "rule" in v.details:
            families.setdefault(v.family, []).append(i)
    out = list(verdicts)
    for idx in families.values():
        m = len(idx)
        adjusted = holm([verdicts[i].p_raw for i in idx])
        for i, p_adj in zip(idx, adjusted):
            v = verdicts[i]
            rule = dict(v.details["rule"])
            kind, why = _apply(rule, p_adj, m)
            if not np.isfinite(v.p_raw):
                own = v.reason.split(_AS_P1)[0]        # idempotent: the judged reason
                why = (own if kind == "inconclusive" else why) + f"{_AS_P1}{m}"
            out[i] = replace(v, verdict=kind, reason=why, p_value=float(p_adj),
                             p_adjusted=float(p_adj), n_family=m,
                             details={**v.details, "rule": rule})
    return out

_AS_P1 = "; counted as p = 1 in Holm's family of "


# ------------------------------------------------------------------ helpers
def _fmt(v: float) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.4g}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
