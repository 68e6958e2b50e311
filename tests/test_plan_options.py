"""A plan is the whole analysis: every option of every registered plan is in its
hash, and the experiment's analysis reads it (no module constant decides instead).

Each experiment's conjectures are judged on a small constructed table (the
builders of its tests) under its registered plans, whose `options` record which
keys the experiment's code reads. Every option must be read, except prose that
describes the design (`DESCRIPTIVE`). A few options are then perturbed to show
the verdict's numbers follow them, and the subgroup rule refuses outcome strata.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable

import pytest

from sweeps import experiments
from sweeps.conjectures.plan import AnalysisPlan, check_subgroups
from sweeps.experiments import critical_periods as cp
from sweeps.experiments import early_phase as ep
from sweeps.experiments import regimes

import test_exp_critical_periods as t_cp
from test_exp_breakeven import with_minibatch_unit
import test_exp_early_phase as t_ep
import test_exp_frequency as t_freq
import test_exp_large_lr as t_lr
import test_exp_regimes as t_reg
import test_exp_stages as t_stages
import test_exp_stiffness as t_stiff
from test_conjectures import FAST, breakeven_trials, make_table

# options that are prose about the design (what a unit or a contrast is), not a setting
DESCRIPTIVE = {"value", "parts", "onset", "before", "after", "contrast", "strata", "direction",
               "unit", "pairing", "summary", "groups", "k_rule", "outcome", "baseline",
               "early", "late", "es_rule", "never_fires", "scores",
               "marker"}     # stages.closer_than_fit: "all" (its `markers` list is the setting)


class Tracked(dict):
    """Options that remember which keys the experiments' code looked up."""

    def _seen(self, key: Any) -> None:
        if sys._getframe(2).f_globals.get("__name__", "").startswith("sweeps.experiments"):
            self.__dict__.setdefault("reads", set()).add(key)

    def __getitem__(self, key: Any) -> Any:
        self._seen(key)
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._seen(key)
        return super().get(key, default)


def tracked(plan: AnalysisPlan) -> AnalysisPlan:
    plan = dataclasses.replace(plan)
    object.__setattr__(plan, "options", Tracked(plan.options))
    return plan


TABLES: dict[str, Callable[[], Any]] = {
    "breakeven": lambda: make_table(_with_trace(with_minibatch_unit(breakeven_trials("paper")))),
    "critical_periods": t_cp.table,
    "early_phase": t_ep.table,
    **{c: t_ep.table_v2 for c in ep.V2_CONJECTURES},
    "frequency": lambda: make_table(t_freq.sweep()),
    "large_lr.calibration": t_lr.calibration_table,
    "large_lr": t_lr.main_table,
    "regimes.two_stage": lambda: make_table(t_reg.seed_effect_trials()),
    "regimes.calibration": lambda: make_table(t_reg.calibration_trials()),
    "regimes": lambda: make_table(t_reg.main_trials()),
    "stiffness": lambda: make_table(t_stiff.sweep(xi=0.6)),
    "stages": t_stages.sweep,
}
# plan variants judged too: a detector option is read only under its detector
VARIANTS: dict[str, Callable[[AnalysisPlan], AnalysisPlan]] = {
    "breakeven.c2": lambda p: p.with_overrides(detector="stability"),
}


def _with_trace(trials: list[dict]) -> list[dict]:
    """Add hessian/trace (an optional metric, judged only when logged): 3 × λ_H¹."""
    for t in trials:
        steps, top = t["curves"]["hessian/top"]
        t["curves"]["hessian/trace"] = (steps, 3 * top)
    return trials


def _table_for(conjecture: str) -> Any:
    """The conjecture's own table where it has one, else its experiment's."""
    return TABLES.get(conjecture, TABLES[conjecture.split(".")[0]])()


def _reads(conjecture: str) -> dict[str, set[str]]:
    """Option keys read per verdict name while judging `conjecture` (all variants)."""
    base = experiments.plans_of(conjecture)
    table = _table_for(conjecture)
    out: dict[str, set[str]] = {k: set() for k in base}
    variants = [lambda p: p] + [v for prefix, v in VARIANTS.items()
                                if conjecture.startswith(prefix)]
    for make in variants:
        plans = {k: tracked(make(p)) for k, p in base.items()}
        experiments.get_conjecture(conjecture)(table, plans, **FAST)
        for k, p in plans.items():
            out[k] |= p.options.__dict__.get("reads", set())
    return out


CONJECTURES = sorted(c for c in experiments.conjecture_names() if experiments.plans_of(c))


@pytest.mark.slow
@pytest.mark.parametrize("conjecture", CONJECTURES)
def test_every_option_of_the_plan_is_read_by_the_analysis(conjecture):
    reads = _reads(conjecture)
    for key, plan in experiments.plans_of(conjecture).items():
        prose = {k for k, v in plan.options.items() if k in DESCRIPTIVE
                 and (isinstance(v, str) or (isinstance(v, dict)
                                             and all(isinstance(x, str) for x in v.values())))}
        unread = set(plan.options) - reads[key] - prose
        assert not unread, f"{key}: options the analysis never reads: {sorted(unread)}"
        assert reads[key] <= set(plan.options), f"{key}: reads options the plan lacks"


def _perturbed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 1.5 + 1
    if value is None:
        return 1
    if isinstance(value, str):
        return value + "_"
    if isinstance(value, list):
        return [*value, "x"]
    return {**value, "x": 1}


@pytest.mark.parametrize("key", sorted(k for e in experiments.names()
                                       for k in experiments.get(e).plans))
def test_every_option_is_in_the_hash(key):
    plan = experiments.get(key.split(".")[0]).plans[key]
    for name, value in plan.options.items():
        changed = dataclasses.replace(plan, options={**plan.options, name: _perturbed(value)})
        assert changed.hash() != plan.hash(), f"{key}: option {name} is outside the hash"


def _with(plans: dict, key: str, **options: Any) -> dict:
    return {key: plans[key].with_overrides(options={**plans[key].options, **options})}


def test_the_regime_rule_is_the_calibration_plans():
    t = make_table(t_reg.calibration_trials())
    (v,) = regimes.calibration(t, **FAST)
    # the oscillating curves fall in 4 of 9 changes: small-step under a rule of 0.4, so no e
    # is large-step at every μ any more
    (w,) = regimes.calibration(t, _with(regimes.PLANS, regimes.CAL, min_decrease_frac=0.4), **FAST)
    assert v.details["step_large"] == 0.8 and w.details["step_large"] is None
    assert w.exploratory and not v.exploratory and w.registered_hash == v.plan_hash


def test_the_high_sparsity_rule_and_dense_minimum_are_the_plans():
    t = t_ep.table()
    name = "early_phase.signs_and_magnitudes_needed"
    before = ep.signs_and_magnitudes_needed(t, **FAST)
    after = ep.signs_and_magnitudes_needed(t, _with(ep.PLANS, name, min_dense_acc=0.999), **FAST)
    assert all(v.verdict != "invalid_protocol" for v in before)
    assert all(v.verdict == "invalid_protocol" for v in after)


def test_the_blur_check_threshold_is_the_plans():
    t = t_cp.table()
    name = "critical_periods.removal_hurts[exponential]"
    (v,) = [x for x in cp.removal_hurts(t, **FAST) if x.name == name]
    (w,) = [x for x in cp.removal_hurts(t, _with(cp.PLANS, name, min_drop=0.99), **FAST)
            if x.name == name]
    assert v.verdict != "invalid_protocol" and w.verdict == "invalid_protocol"


def test_stiffness_band_lag_and_baselines_are_the_plans():
    t = make_table(t_stiff.sweep())
    from sweeps.experiments import stiffness as S
    name = f"stiffness.near_zero_after_onset[{S.TV_SIGN_WITHIN}]"
    (v,) = [x for x in S.near_zero_after_onset(t, **FAST) if x.name == name]
    (w,) = [x for x in S.near_zero_after_onset(t, _with(S.PLANS, name, lag=0), **FAST) if x.name == name]
    (u,) = [x for x in S.near_zero_after_onset(t, _with(S.PLANS, name, band=0.01), **FAST) if x.name == name]
    assert v.details["lag"] == 10 and w.details["lag"] == 0
    assert v.details["mean_after"] < 0.1 < w.details["mean_after"]
    assert v.verdict == "supported" and u.verdict == "refuted"
    name = "stiffness.stopper_vs_baselines[fixed_epoch/error]"
    (a,) = [x for x in S.stopper_vs_baselines(t, **FAST) if x.name == name]
    (b,) = [x for x in S.stopper_vs_baselines(t, _with(S.PLANS, name, fixed_epoch=12), **FAST)
            if x.name == name]
    assert a.details["fixed_epoch"] == 22 and b.details["fixed_epoch"] == 12
    assert a.details["mean_baseline"] != b.details["mean_baseline"]


# ------------------------------------------------------- post-treatment subgroups
@pytest.mark.parametrize("source", ["optim.lr", "data.dataset", "seed", "calibration:regimes_v1"])
def test_a_design_variable_may_define_subgroups(source):
    check_subgroups(source)
    plan = dataclasses.replace(regimes.PLANS["regimes.momentum_matched[small-step]"],
                               options={"subgroups_from": source})
    assert plan.options["subgroups_from"] == source


@pytest.mark.parametrize("source", ["train/loss", "val/acc", "final/train_loss", "probe/acc",
                                    "regime", "stiffness/train_val/sign"])
def test_a_regime_plan_that_reads_the_outcome_curve_is_refused(source):
    plan = regimes.PLANS["regimes.momentum_matched[small-step]"]
    with pytest.raises(ValueError, match="post-treatment"):
        dataclasses.replace(plan, options={**plan.options, "subgroups_from": source})
    with pytest.raises(ValueError, match="subgroups_from"):
        AnalysisPlan.from_dict({**plan.to_dict(),
                                "options": {**plan.options, "subgroups_from": source}})


def test_the_tracking_sees_an_option_no_code_reads():
    """The check above can fail: an option the analysis ignores is not recorded as read."""
    plan = experiments.plans_of("frequency.low_first")["frequency.low_first"]
    extra = tracked(dataclasses.replace(plan, options={**plan.options, "dead_threshold": 0.3}))
    experiments.get_conjecture("frequency.low_first")(make_table(t_freq.sweep()),
                                                  {"frequency.low_first": extra}, **FAST)
    reads = extra.options.__dict__["reads"]
    assert "threshold" in reads and "dead_threshold" not in reads
