"""The two-regimes experiment's arms and main conjectures (see `plans.py`).

Every trial of the main sweep is an arm fixed by its config (`arm_of`): its
regime is the registered map's (`plans.REGIME_MAP`), looked up from (η, μ),
never read from its own curve. With e_S and e_L the plan's two effective
steps, a trial at regime R's step e is
- `matched` at μ when η/(1 − μ) = e (at μ = 0: the base arm, η = e);
- `same_lr` at μ = `same_lr_momentum` when η = e (effective step e/(1 − μ));
and `constant` or `step` (the anneal) by its schedule. A column of
`arm_frame` is one arm, `R|arm|μ|schedule`, a row one seed. Each conjecture
takes one contrast per seed from these columns and tests its mean by sign
flips (`paired_sign_flip`); a seed that misses an arm the contrast needs
(a diverged or unfinished trial) drops out of that contrast and is counted
(`excluded_incomplete_seed`). Check `arms_in_regime`: every arm present sits
on a cell of its regime on the map; otherwise the sweep did not test the
claim (invalid_protocol).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from sweeps.conjectures.inference import intersection_union, sign_flip_test
from sweeps.conjectures.plan import AnalysisPlan
from sweeps.conjectures.verdict import N_BOOT, N_PERM, Verdict, verdict_of
from sweeps.experiments.registry import Plans, conjecture
from sweeps.experiments.regimes.plans import CALIBRATED, KIND, LR, MOM, PLANS
from sweeps.experiments.regimes.regime_map import effective_step, label_at, step_key
from sweeps.table import SweepTable, param

SHORT = {"small-step": "S", "large-step": "L"}


def arm_of(lr: float, mu: float, schedule: str, options: dict[str, Any]) -> tuple[str, str] | None:
    """(regime, column name) of one trial under the plan's steps; None if it is no arm."""
    if options.get("step_small") is None or options.get("step_large") is None:
        return None
    sched = {"constant": "constant", "step": "step"}.get(schedule)
    if sched is None:
        return None
    for regime, e in (("small-step", options["step_small"]), ("large-step", options["step_large"])):
        if math.isclose(effective_step(lr, mu), float(e), rel_tol=1e-6) and (
                any(math.isclose(mu, m) for m in options["momenta"])):
            return regime, f"{SHORT[regime]}|matched|{step_key(mu)}|{sched}"
        if math.isclose(mu, float(options["same_lr_momentum"])) and math.isclose(lr, float(e),
                                                                                rel_tol=1e-6):
            return regime, f"{SHORT[regime]}|same_lr|{step_key(mu)}|{sched}"
    return None


def arm_frame(table: SweepTable, plan: AnalysisPlan
              ) -> tuple[pd.DataFrame, dict[str, Any], tuple[bool, str]]:
    """(seeds × arms of the plan's metric — NaN where the trial did not finish —, counts,
    the `arms_in_regime` check)."""
    runs = table.runs
    counts: dict[str, Any] = {**table.left_out(),
                              "regimes_from": plan.options["subgroups_from"]}
    if runs.empty or LR not in runs:
        return pd.DataFrame(), counts, (False, "no trials with optim.lr")
    metric = table.final(plan.metric, fallback={"final/train_loss": "train/loss",
                                                "final/val_acc": "val/acc"}.get(plan.metric))
    mus = param(runs, MOM, 0.0).astype(float)
    kinds = param(runs, KIND, "constant").astype(str)
    rmap, rows, off, other = plan.options["regime_map"], [], set(), 0
    for (_, r), mu, kind in zip(runs.iterrows(), mus, kinds):
        arm = arm_of(float(r[LR]), mu, kind, plan.options)
        if arm is None:
            other += 1
            continue
        regime, col = arm
        label = label_at(rmap, float(r[LR]), mu)
        if label != regime:
            off.add(f"{col} (η {float(r[LR]):g}: {label} on the map)")
        value = metric.get(r["run_id"], np.nan) if str(r["status"]) == "finished" else np.nan
        rows.append({"seed": r["seed"], "arm": col, "value": float(value)})
    counts["n_not_an_arm"] = other
    frame = (pd.DataFrame(rows).pivot_table(index="seed", columns="arm", values="value",
                                            aggfunc="first", dropna=False)
             if rows else pd.DataFrame())
    check = (not off and bool(rows), "every arm sits on a cell of its regime" if not off and rows
             else "no arm of the plan's steps in the sweep" if not rows
             else "off its regime: " + "; ".join(sorted(off)))
    return frame, counts, check


def paired_contrast(frame: pd.DataFrame, pairs: list[tuple[str, str]]
                    ) -> tuple[pd.Series, dict[str, Any]]:
    """Per seed the mean over `pairs` of column a − column b, over the seeds that hold every
    column; and details (missing arms, seeds dropped, each pair's mean difference)."""
    need = sorted({c for p in pairs for c in p})
    missing = [c for c in need if c not in frame.columns]
    if missing:
        return pd.Series(dtype=float), {"missing_arms": missing}
    sub = frame[need]
    complete = sub.dropna()
    diffs = {f"{a} − {b}": complete[a] - complete[b] for a, b in pairs}
    d = pd.concat(diffs, axis=1).mean(axis=1) if len(complete) else pd.Series(dtype=float)
    return d, {"excluded_incomplete_seed": int(len(sub) - len(complete)),
               "seeds": [str(s) for s in complete.index],
               "pair_means": {k: float(v.mean()) for k, v in diffs.items()} if len(complete) else {}}


def _pairs(plan: AnalysisPlan, regime: str | None = None, arm: str = "matched"
           ) -> list[tuple[str, str]]:
    """The (a, b) columns of a contrast, a − b (see plans.py): with `regime`, momentum's in
    that regime (`arm` matched or same_lr, against the base arm); without, large − small
    under the plan's `schedule`, μ matched."""
    moms = [step_key(m) for m in plan.options["momenta"]]
    if regime is None:
        sched = plan.options["schedule"]
        return [(f"L|matched|{m}|{sched}", f"S|matched|{m}|{sched}") for m in moms]
    r = SHORT[regime]
    base = f"{r}|matched|0|constant"
    if arm == "same_lr":
        return [(f"{r}|same_lr|{step_key(plan.options['same_lr_momentum'])}|constant", base)]
    return [(f"{r}|matched|{m}|constant", base) for m in moms if m != "0"]


def _judge(plan: AnalysisPlan, name: str, d: pd.Series, info: dict[str, Any],
           counts: dict[str, Any], check: tuple[bool, str], **kw: Any) -> Verdict:
    checks = {CALIBRATED.name: check}
    if info.get("missing_arms") or d.empty:
        why = (f"arms not in the sweep: {', '.join(info['missing_arms'])}"
               if info.get("missing_arms") else "no seed holds every arm of the contrast")
        return verdict_of(plan, None, name=name, checks=checks, n=0, reason=why, **counts, **info)
    res = sign_flip_test(d.to_numpy(float), **kw)
    return verdict_of(plan, res, name=name, checks=checks, **counts, **info)


def _kw(plan: AnalysisPlan, n_perm: int, n_boot: int, rng_seed: int) -> dict[str, Any]:
    return dict(n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=plan.alpha)


def _simple(table: SweepTable, plans: Plans, n_perm: int, n_boot: int,
            rng_seed: int) -> list[Verdict]:
    """Each plan's paired contrast, tested (the conjectures with one contrast a verdict)."""
    out = []
    for key, plan in plans.items():
        frame, counts, check = arm_frame(table, plan)
        momentum = "arm" in plan.options
        d, info = paired_contrast(frame, _pairs(plan, plan.options["regime"], plan.options["arm"])
                                  if momentum else _pairs(plan))
        out.append(_judge(plan, key, d, info, counts, check, **_kw(plan, n_perm, n_boot, rng_seed)))
    return out


@conjecture(PLANS)
def large_step_optimizes_worse(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                               n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """At equal steps the large-step arm ends with the higher train loss (constant η; per
    seed the mean over μ of loss(e_L, μ) − loss(e_S, μ), μ matched)."""
    return _simple(table, plans, n_perm, n_boot, rng_seed)


@conjecture(PLANS)
def momentum_matched(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                     n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Momentum at a matched effective step lowers the final train loss in the small-step
    regime and raises it in the large-step one (one verdict per regime)."""
    return _simple(table, plans, n_perm, n_boot, rng_seed)


@conjecture(PLANS)
def momentum_same_lr(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                     n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Momentum at the same η (the paper's comparison, a larger effective step too) lowers
    the final train loss in the small-step regime and raises it in the large-step one."""
    return _simple(table, plans, n_perm, n_boot, rng_seed)


@conjecture(PLANS)
def large_step_generalizes(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                           n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """With an anneal in both arms, the large-step arm ends with the higher test accuracy
    (per seed the mean over μ of acc(e_L, μ) − acc(e_S, μ), μ matched)."""
    return _simple(table, plans, n_perm, n_boot, rng_seed)


@conjecture(PLANS)
def momentum_acc_same_sign(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                           n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Momentum's effect on final test accuracy (matched effective step) has one sign in
    both regimes.

    Parts: the small-step and the large-step contrast (`momentum_matched`'s, on
    test accuracy), each a two-sided sign-flip test. Their common sign s is the
    sign of the sum of their means; intersection–union of the parts at (s, s):
    supported when both are significant with sign s (p the larger part p;
    choosing s from the data keeps the level, as each part's p is two-sided),
    refuted when one is significant against it.
    """
    (plan,) = plans.values()
    frame, counts, check = arm_frame(table, plan)
    parts, infos = [], {}
    for regime in ("small-step", "large-step"):
        d, info = paired_contrast(frame, _pairs(plan, regime, "matched"))
        infos[regime] = info
        parts.append(d)
    missing = sorted({a for i in infos.values() for a in i.get("missing_arms", [])})
    if missing or any(p.empty for p in parts):
        return [_judge(plan, plan.conjecture, pd.Series(dtype=float),
                       {"missing_arms": missing} if missing else {}, counts, check)]
    kw = _kw(plan, n_perm, n_boot, rng_seed)
    tests = [sign_flip_test(p.to_numpy(float), **kw) for p in parts]
    sign = 1 if float(parts[0].mean() + parts[1].mean()) >= 0 else -1
    res = intersection_union(tests, [sign, sign])
    return [verdict_of(plan, res, checks={CALIBRATED.name: check}, **counts, common_sign=sign,
                       momentum_effect={r: float(p.mean()) for r, p in zip(infos, parts)},
                       by_regime=infos)]
