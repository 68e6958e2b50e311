"""Readers and conjectures of the early-phase experiment (the plans, and why
their numbers: `plans.py`).

Rows: `level_frame` (one row per trial and loop level), `high_sparsity_acc`
(v1's statistic), `level_gaps` / `dense_gap` (v2: per unablated chain and IMP
level, d = its minus the dense accuracy of the same trial), `k_star` (v2: the fixed sequence of
TOSTs from the largest k down), `plateau_gains` (v2's convergence check).
Conjectures: v1 `rewind_beats_init`, `signs_and_magnitudes_needed`,
`shuffling_fails`; v2 `rewound_matches_dense`, `k_star_positive`,
`signs_and_magnitudes_at_k_star`, `shuffling_at_k_star`, `dist_init_rises`,
`grad_norm_falls`, `sign_flips_before_k_star`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from sweeps.conjectures.inference import TestResult, equivalence_test, sign_flip_test
from sweeps.conjectures.plan import FROM_PLAN, AnalysisPlan
from sweeps.conjectures.verdict import (N_BOOT, N_PERM, compare_groups, inconclusive,
                                        intersection_union, Verdict, verdict_of)
from sweeps.experiments.early_phase.plans import ABLATION, HIGH, K, LEVEL_KEYS, LR
from sweeps.experiments.registry import Plans, conjecture
from sweeps.experiments.early_phase.plans import PLANS
from sweeps.table import SweepTable, param


# ------------------------------------------------------------------- rows
def level_frame(table: SweepTable) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per finished trial and loop level: run_id, seed, lr, k, ablation,
    level, imp_level, ablated, condition (the ablation on ablated levels, else
    "none"), sparsity, acc; and the exclusion counts."""
    runs, excluded = table.usable()
    cols = ["run_id", "seed", "lr", "k", "ablation", "level", "imp_level", "ablated",
            "condition", "sparsity", "acc"]
    wide = table.levels(LEVEL_KEYS, runs["run_id"])
    if wide.empty:
        return pd.DataFrame(columns=cols), excluded
    info = pd.DataFrame({"run_id": runs["run_id"], "seed": runs["seed"],
                         "lr": param(runs, LR, np.nan), "k": param(runs, K, 0),
                         "ablation": param(runs, ABLATION, "none").fillna("none").astype(str)})
    df = wide.merge(info, on="run_id")
    df = df.assign(level=df["level"].astype(int), imp_level=df["imp/level"].fillna(0).astype(int),
                   ablated=df["imp/ablated"].fillna(0).astype(bool),
                   sparsity=df["imp/sparsity"].fillna(0.0).astype(float),
                   acc=df["final/val_acc"].astype(float))
    df["condition"] = np.where(df["ablated"], df["ablation"], "none")
    return df[cols].sort_values(["lr", "k", "ablation", "seed", "level"]).reset_index(drop=True), excluded


def high_sparsity_acc(df: pd.DataFrame, high: float = HIGH) -> pd.DataFrame:
    """Per trial and condition: the mean accuracy over levels at sparsity ≥ `high` (`acc`),
    with seed, lr, k, ablation."""
    keep = df[(df["sparsity"] >= high - 1e-9) & np.isfinite(df["acc"])]
    keys = ["run_id", "seed", "lr", "k", "ablation", "condition"]
    return keep.groupby(keys, dropna=False)["acc"].mean().reset_index()


def _checks(df: pd.DataFrame, run_ids: Any, high: float, min_dense_acc: float) -> dict:
    rows = df[df["run_id"].isin(list(run_ids))]
    dense = rows.loc[rows["level"] == 0, "acc"]
    reached = rows.groupby("run_id")["sparsity"].max()
    mean = float(dense.mean()) if len(dense) else float("nan")
    return {"dense_learns": (bool(mean >= min_dense_acc),
                             f"mean dense accuracy {mean:.3f} (need ≥ {min_dense_acc:g})"),
            "high_sparsity_reached": (bool(len(reached) and (reached >= high - 1e-9).all()),
                                      f"lowest final sparsity {reached.min() if len(reached) else float('nan'):.3f} "
                                      f"(need ≥ {high:g})")}


def _arm(lr: float, k: int) -> str:
    return f"lr={lr:g},k={int(k)}"


# ------------------------------------------------------------ conjectures
@conjecture(PLANS)
def rewind_beats_init(table: SweepTable, plans: Plans, *,
                      k: Any = FROM_PLAN, high: Any = FROM_PLAN,
                      min_dense_acc: Any = FROM_PLAN, n_perm: int = N_PERM,
                      n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Per η arm: high-sparsity accuracy at the rewind step `k` (default: the
    arm's largest k) minus that at k = 0, paired by seed. Every k's mean is in
    details (`mean_by_k`). `k`, `high`, `min_dense_acc` are the plan's options
    (given here, they change the plan: exploratory)."""
    (plan,) = plans.values()
    plan = plan.with_options(k=k, high=high, min_dense_acc=min_dense_acc)
    k, high = plan.options["k"], float(plan.options["high"])
    min_dense_acc = float(plan.options["min_dense_acc"])
    df, excluded = level_frame(table)
    df = df[df["ablation"] == "none"]
    out = []
    for lr, rows in df.groupby("lr"):
        ks = sorted(int(x) for x in rows["k"].unique() if x > 0)
        chosen = k if k is not None else (ks[-1] if ks else None)
        if chosen is None or not (rows["k"] == 0).any():
            continue
        rows = rows[rows["k"].isin([0, chosen])]
        per = high_sparsity_acc(rows, high)
        a, base = per[per["k"] == chosen], per[per["k"] == 0]
        res = compare_groups(a["acc"], base["acc"], blocks_a=a["seed"], blocks_b=base["seed"],
                             n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=plan.alpha)
        means = high_sparsity_acc(df[df["lr"] == lr], high).groupby("k")["acc"].mean()
        out.append(verdict_of(plan, res, checks=_checks(df, rows["run_id"].unique(), high, min_dense_acc),
                              name=f"{plan.conjecture}[{_arm(lr, chosen)}]", lr=float(lr), k=chosen,
                              high=high, mean_by_k={int(i): float(v) for i, v in means.items()},
                              **excluded))
    if not out:
        return [inconclusive(plan.conjecture, plan.statement, "no η arm with finished trials at "
                             "k = 0 and at some k > 0", **excluded)]
    return out


def _ablations_needed(table: SweepTable, plans: Plans, high: Any, min_dense_acc: Any,
                      n_perm: int, n_boot: int, rng_seed: int) -> list[Verdict]:
    """One intersection-union verdict per (η, k) with ablation trials: every part's
    ablated levels end below the same trials' unablated levels (paired by seed).
    The parts, their predicted sign, `high` and `min_dense_acc` are the plan's."""
    (plan,) = plans.values()
    plan = plan.with_options(high=high, min_dense_acc=min_dense_acc)
    parts = tuple(plan.options["parts"])
    high, min_dense_acc = float(plan.options["high"]), float(plan.options["min_dense_acc"])
    df, excluded = level_frame(table)
    df = df[df["ablation"].isin(parts)]
    out = []
    for (lr, k), rows in df.groupby(["lr", "k"]):
        per = high_sparsity_acc(rows, high)
        results = []
        for part in parts:
            a = per[(per["ablation"] == part) & (per["condition"] == part)]
            b = per[(per["ablation"] == part) & (per["condition"] == "none")]
            results.append(compare_groups(a["acc"], b["acc"], blocks_a=a["seed"], blocks_b=b["seed"],
                                          n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed,
                                          alpha=plan.alpha))
        res = intersection_union(results, [int(plan.options["part_sign"])] * len(parts))
        out.append(verdict_of(plan, res, checks=_checks(df, rows["run_id"].unique(), high, min_dense_acc),
                              name=f"{plan.conjecture}[{_arm(lr, k)}]", lr=float(lr), k=int(k),
                              high=high, ablations=list(parts), **excluded))
    if not out:
        return [inconclusive(plan.conjecture, plan.statement,
                             f"no finished trials with pruning.ablation in {list(parts)}",
                             **excluded)]
    return out


@conjecture(PLANS)
def signs_and_magnitudes_needed(table: SweepTable, plans: Plans, *,
                                high: Any = FROM_PLAN, min_dense_acc: Any = FROM_PLAN,
                                n_perm: int = N_PERM, n_boot: int = N_BOOT,
                                rng_seed: int = 0) -> list[Verdict]:
    """Random magnitudes (signs kept) and random signs (magnitudes kept) each lose accuracy."""
    return _ablations_needed(table, plans, high, min_dense_acc, n_perm, n_boot, rng_seed)


@conjecture(PLANS)
def shuffling_fails(table: SweepTable, plans: Plans, *,
                    high: Any = FROM_PLAN, min_dense_acc: Any = FROM_PLAN,
                    n_perm: int = N_PERM, n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Shuffling the rewound survivors within a layer or across the network loses accuracy."""
    return _ablations_needed(table, plans, high, min_dense_acc, n_perm, n_boot, rng_seed)


# ------------------------------------------------------------------ tables
def level_table(table: SweepTable) -> pd.DataFrame | None:
    """Per trial and level: η, k, ablation, IMP level, ablated, sparsity, final test accuracy."""
    df, _ = level_frame(table)
    return None if df.empty else df




# ================================================================= v2 rows
def level_gaps(df: pd.DataFrame) -> pd.DataFrame:
    """Per unablated chain (ablation "none") and IMP level ≥ 1: run_id, seed, lr, k,
    imp_level, level, sparsity, acc, the dense accuracy of the same trial (its level 0)
    and d = acc − dense."""
    plain = df[(df["ablation"] == "none") & ~df["ablated"]]
    dense = plain[plain["level"] == 0].set_index("run_id")["acc"].rename("dense")
    out = plain[plain["imp_level"] >= 1].join(dense, on="run_id")
    out = out.assign(d=out["acc"] - out["dense"])
    cols = ["run_id", "seed", "lr", "k", "imp_level", "level", "sparsity", "acc", "dense", "d"]
    return out[cols].sort_values(["lr", "imp_level", "k", "seed"]).reset_index(drop=True)


def dense_gap(df: pd.DataFrame, target: float) -> pd.DataFrame:
    """`level_gaps` at one level per chain: the first IMP level at sparsity ≥ `target`
    (chains that never reach it have no row)."""
    gaps = level_gaps(df)
    first = gaps[gaps["sparsity"] >= target - 1e-9].groupby("run_id")["imp_level"].min()
    return gaps[gaps["imp_level"] == gaps["run_id"].map(first)].reset_index(drop=True)


def sparsity_label(gaps: pd.DataFrame) -> str:
    """The mean sparsity of rows of one IMP level, as verdict names print it (0.80)."""
    return f"{gaps['sparsity'].mean():.2f}"


def plateau_gains(table: SweepTable, run_ids: Any, plateau_from: float) -> pd.Series:
    """Per trial: the dense level 0's test accuracy (`val/acc` at its epoch ends, the steps
    up to that of `level/0/final/val_acc`) at its last epoch E minus at epoch ⌈plateau_from·E⌉."""
    ends = table.metric("level/0/final/val_acc").groupby("run_id")["step"].last()
    acc = table.metric("val/acc")
    out = {}
    for rid in run_ids:
        if rid not in ends.index:
            continue
        v = acc[(acc["run_id"] == rid) & (acc["step"] > 0) & (acc["step"] <= ends[rid])]["value"]
        v = v.to_numpy()
        if len(v) >= 2:
            out[rid] = float(v[-1] - v[math.ceil(plateau_from * len(v)) - 1])
    return pd.Series(out, dtype=float)


def v2_checks(table: SweepTable, df: pd.DataFrame, run_ids: Any, plan: AnalysisPlan) -> dict:
    """`dense_plateaus` and `target_reached` over the trials `run_ids`."""
    o = plan.options
    ids = list(dict.fromkeys(run_ids))
    gains = plateau_gains(table, ids, float(o["plateau_from"]))
    mean = float(gains.mean()) if len(gains) else float("nan")
    rows = df[df["run_id"].isin(ids) & ~df["ablated"]]
    reached = rows.groupby("run_id")["sparsity"].max()
    target = float(o["target"])
    return {"dense_plateaus": (bool(mean < float(o["plateau_gain"])),
                               f"mean last-quarter gain of the dense test accuracy {mean:+.4f} "
                               f"over {len(gains)} trials (need < {float(o['plateau_gain']):g})"),
            "target_reached": (bool(len(reached) and (reached >= target - 1e-9).all()),
                               f"lowest final sparsity "
                               f"{reached.min() if len(reached) else float('nan'):.3f} "
                               f"(need ≥ {target:g})")}


@dataclasses.dataclass(frozen=True)
class KStar:
    """The fixed sequence of TOSTs at one η: k* (k_max when `censored`), the result at k*
    with the sequence's adjusted p, and every k's TOST (k -> result)."""

    k: int
    censored: bool
    result: TestResult
    by_k: dict[int, TestResult]


def _wide(gaps: pd.DataFrame) -> pd.DataFrame:
    """d as seeds × k (descending k)."""
    w = gaps.pivot_table(index="seed", columns="k", values="d", aggfunc="mean")
    return w[sorted(w.columns, reverse=True)]


def _sequence(wide: pd.DataFrame, margin: float, alpha: float, **kw: Any) -> tuple[int | None, dict]:
    """(k*, or None when k_max does not match; the TOST of every k tested, in order)."""
    tested, chosen = {}, None
    for k in wide.columns:
        r = equivalence_test(wide[k].to_numpy(), margin, alpha=alpha, **kw)
        tested[int(k)] = r
        if not (np.isfinite(r.p_value) and r.p_value < alpha and r.statistic > 0):
            break
        chosen = int(k)
    return chosen, tested


def k_star(gaps: pd.DataFrame, margin: float, alpha: float, *, n_perm: int = N_PERM,
           rng_seed: int = 0) -> KStar:
    """k* at one η from its chains' d (`dense_gap` rows of one lr): fixed-sequence TOSTs
    from the largest k down; the result at k* carries p = the largest TOST p of the
    sequence (at k_max when censored), and every k's TOST is computed for the details."""
    wide = _wide(gaps)
    kw = dict(n_perm=n_perm, rng_seed=rng_seed)
    chosen, tested = _sequence(wide, margin, alpha, **kw)
    by_k = {int(k): tested.get(int(k)) or equivalence_test(wide[k].to_numpy(), margin,
                                                           alpha=alpha, **kw)
            for k in wide.columns}
    at = int(wide.columns[0]) if chosen is None else chosen
    p = max(r.p_value for k, r in tested.items() if k >= at)
    result = dataclasses.replace(by_k[at], p_value=p, rerun=None,
                                 details={**by_k[at].details, "fixed_sequence_p": p,
                                          "tost_p_at_k": by_k[at].p_value})
    return KStar(at, chosen is None, result, by_k)


def k_star_ci(gaps: pd.DataFrame, margin: float, alpha: float, n_boot: int,
              rng_seed: int = 0) -> dict[str, Any]:
    """Percentile interval (1 − alpha) of k* over `n_boot` resamples of the seeds, the same
    fixed-sequence rule in each; a resample where k_max does not match counts as
    "> k_max" (above every k)."""
    wide = _wide(gaps)
    rng = np.random.default_rng(rng_seed)
    kmax, draws = int(wide.columns[0]), []
    for _ in range(n_boot):
        rows = wide.iloc[rng.integers(0, len(wide), len(wide))]
        chosen, _ = _sequence(rows, margin, alpha, n_perm=2000, rng_seed=rng_seed)
        draws.append(math.inf if chosen is None else chosen)
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    show = lambda x: f"> {kmax}" if math.isinf(x) else int(x)          # noqa: E731
    return {"ci_k_star": [show(lo), show(hi)], "ci_level": 1 - alpha, "n_boot": n_boot,
            "share_censored": float(np.mean(np.isinf(draws)))}


def _by_k(ks: KStar, gaps: pd.DataFrame) -> dict[int, dict[str, Any]]:
    means = gaps.groupby("k")["d"].agg(["mean", "std", "count"])
    return {k: {"mean_d": float(means.loc[k, "mean"]), "sd_d": float(means.loc[k, "std"]),
                "n": int(means.loc[k, "count"]), "tost_p": float(r.p_value),
                "ci_90": [float(r.ci_low), float(r.ci_high)],
                "matches": bool(r.p_value < 0.05 and r.statistic > 0)}
            for k, r in ks.by_k.items()}


def _arms(df: pd.DataFrame, plan: AnalysisPlan, ablations: Any = ("none",)) -> list[float]:
    """The η arms judged: every one, or the largest (`lr`: "every" / "largest"), of the
    trials with the given ablations."""
    lrs = sorted(df.loc[df["ablation"].isin(list(ablations)), "lr"].dropna().unique())
    return lrs[-1:] if plan.options["lr"] == "largest" else lrs


# ========================================================= v2 conjectures
@conjecture(PLANS)
def rewound_matches_dense(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                          n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Per η arm: the TOST (±margin) of d at k*, the end of the fixed sequence from the
    largest k down (censored at k_max when it does not match), p = the sequence's largest.
    Details: k*, censored, its CI over seed resamples, every k's mean d and TOST p."""
    return _match(table, plans, n_perm, n_boot, rng_seed, positive=False)


@conjecture(PLANS)
def k_star_positive(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                    n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """At the largest η: k* > 0 — the TOST at k* (as `rewound_matches_dense`) and k = 0
    ending more than the margin below dense (two-sided sign-flip of d_0 + margin,
    predicted < 0),
    joined by an intersection-union test."""
    return _match(table, plans, n_perm, n_boot, rng_seed, positive=True)


def _match(table: SweepTable, plans: Plans, n_perm: int, n_boot: int, rng_seed: int,
           positive: bool) -> list[Verdict]:
    """One verdict per (η arm, IMP level ≥ 1), named `[lr=…,sparsity=…]`."""
    (plan,) = plans.values()
    o = plan.options
    margin = float(o["margin"])
    df, excluded = level_frame(table)
    gaps = level_gaps(df).dropna(subset=["d"])
    out = []
    for lr in _arms(df, plan):
        for level, arm in gaps[gaps["lr"] == lr].groupby("imp_level"):
            ks = k_star(arm, margin, plan.alpha, n_perm=n_perm, rng_seed=rng_seed)
            ci = k_star_ci(arm, margin, plan.alpha, int(n_boot), rng_seed)
            res = ks.result
            if positive:
                d0 = arm.loc[arm["k"] == 0].sort_values("seed")["d"].to_numpy()
                below = sign_flip_test(d0 + margin, n_perm=n_perm, rng_seed=rng_seed,
                                       alpha=plan.alpha)   # two-sided: a k = 0 that matches refutes
                res = intersection_union([ks.result, below], [+1, -1])
            checks = v2_checks(table, df, arm["run_id"], plan)
            out.append(verdict_of(plan, res, checks=checks,
                                  name=f"{plan.conjecture}[lr={lr:g},sparsity={sparsity_label(arm)}]",
                                  lr=float(lr), imp_level=int(level),
                                  sparsity=float(arm["sparsity"].mean()), k_star=ks.k,
                                  censored=ks.censored, **ci, by_k=_by_k(ks, arm), margin=margin,
                                  seeds=sorted(int(s) for s in arm["seed"].unique()), **excluded))
    if not out:
        return [inconclusive(plan.conjecture, plan.statement, "no η arm with finished unablated "
                             "chains past the dense level", **excluded)]
    return out


def _ablations_at_target(table: SweepTable, plans: Plans, n_perm: int, n_boot: int,
                         rng_seed: int) -> list[Verdict]:
    """At the largest η and the plan's k: per part, the ablated accuracy at the target IMP
    level minus the unablated accuracy at the same IMP level of the same trial, paired by
    seed; every part predicted `part_sign`; intersection-union."""
    (plan,) = plans.values()
    o = plan.options
    parts, target, k = tuple(o["parts"]), float(o["target"]), int(o["k"])
    df, excluded = level_frame(table)
    lrs = _arms(df, plan, parts)
    rows = df[df["ablation"].isin(parts) & (df["k"] == k) & df["lr"].isin(lrs)]
    hit = rows[~rows["ablated"] & (rows["sparsity"] >= target - 1e-9)]
    level = hit.groupby("run_id")["imp_level"].min()
    at = rows[rows["imp_level"] == rows["run_id"].map(level)]
    if at.empty:
        return [inconclusive(plan.conjecture, plan.statement,
                             f"no finished trials with pruning.ablation in {list(parts)} at "
                             f"k = {k} reaching sparsity {target:g}", **excluded)]
    results = []
    for part in parts:
        a = at[(at["ablation"] == part) & at["ablated"]]
        b = at[(at["ablation"] == part) & ~at["ablated"]]
        results.append(compare_groups(a["acc"], b["acc"], blocks_a=a["seed"], blocks_b=b["seed"],
                                      n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed,
                                      alpha=plan.alpha))
    res = intersection_union(results, [int(o["part_sign"])] * len(parts))
    lr = float(lrs[-1])
    k_found = None                    # this sweep's k* at the focus level, reported beside k
    gaps = dense_gap(df, target)
    arm = gaps[gaps["lr"] == lr]
    if arm["d"].notna().any():
        k_found = k_star(arm, float(o["margin"]), plan.alpha).k
    return [verdict_of(plan, res, checks=v2_checks(table, df, at["run_id"], plan),
                       name=f"{plan.conjecture}[lr={lr:g},k={k}]", lr=lr, k=k,
                       target=target, imp_level=int(level.min()), ablations=list(parts),
                       k_star_of_this_sweep=k_found, **excluded)]


@conjecture(PLANS)
def signs_and_magnitudes_at_k_star(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                                   n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Random magnitudes (signs kept) and random signs (magnitudes kept) at the rewind
    point each lose accuracy at the target sparsity (largest η, the plan's k)."""
    return _ablations_at_target(table, plans, n_perm, n_boot, rng_seed)


@conjecture(PLANS)
def shuffling_at_k_star(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                        n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Shuffling the rewound survivors within a layer or across the network loses accuracy
    at the target sparsity (largest η, the plan's k)."""
    return _ablations_at_target(table, plans, n_perm, n_boot, rng_seed)


# ------------------------------------------------------------- timeline
def dense_timeline(table: SweepTable, run_ids: Any, key: str) -> dict[str, pd.Series]:
    """Per trial: `key` at the probe steps of the dense level 0 (global steps up to that
    of `level/0/final/val_acc`), indexed by step."""
    ends = table.metric("level/0/final/val_acc").groupby("run_id")["step"].last()
    out = {}
    for rid in run_ids:
        if rid in ends.index:
            s = table.series(rid, key).sort_index()
            out[rid] = s[s.index <= ends[rid]]
    return out


def _timeline_runs(table: SweepTable, plan: AnalysisPlan) -> tuple[pd.DataFrame, float | None,
                                                                    pd.DataFrame, dict]:
    """(the dense chains judged: run_id, seed of the plan's k_chain at the largest η; that
    η; the level rows; exclusions)."""
    df, excluded = level_frame(table)
    plain = df[(df["ablation"] == "none") & (df["level"] == 0)]
    lrs = _arms(df, plan)
    if not lrs:
        return plain.iloc[:0], None, df, excluded
    rows = plain[(plain["lr"] == lrs[-1]) & (plain["k"] == int(plan.options["k_chain"]))]
    return rows.sort_values("seed"), float(lrs[-1]), df, excluded


def _trend(table: SweepTable, plans: Plans, n_perm: int, rng_seed: int) -> list[Verdict]:
    """Per seed Kendall τ_b of (probe step, the plan's metric) over the dense level 0's
    probes in [1, early_end]; the mean τ by the exact sign-flip test (two-sided)."""
    (plan,) = plans.values()
    rows, lr, df, excluded = _timeline_runs(table, plan)
    end = int(plan.options["early_end"])
    taus = []
    for rid, s in dense_timeline(table, rows["run_id"], plan.metric).items():
        s = s[(s.index >= 1) & (s.index <= end)].dropna()
        taus.append(stats.kendalltau(s.index, s.to_numpy()).statistic if len(s) >= 3
                    else np.nan)
    if lr is None or not taus:
        return [inconclusive(plan.conjecture, plan.statement, "no finished dense chains with "
                             f"{plan.metric} at the plan's k_chain", **excluded)]
    res = sign_flip_test(taus, n_perm=n_perm, rng_seed=rng_seed, alpha=plan.alpha,
                         bounds=(-1.0, 1.0))
    return [verdict_of(plan, res, checks=v2_checks(table, df, rows["run_id"], plan),
                       name=f"{plan.conjecture}[lr={lr:g}]", lr=lr, early_end=end,
                       taus=[float(t) for t in taus],
                       seeds=[int(s) for s in rows["seed"]], **excluded)]


@conjecture(PLANS)
def dist_init_rises(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                    n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """The dense run's distance from its initialisation rises over the early phase."""
    return _trend(table, plans, n_perm, rng_seed)


@conjecture(PLANS)
def grad_norm_falls(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                    n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """The dense run's gradient norm falls over the early phase."""
    return _trend(table, plans, n_perm, rng_seed)


@conjecture(PLANS)
def sign_flips_before_k_star(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                             n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Per seed: the share of the dense run's final sign flips reached at k* (this sweep's,
    at the largest η; k_max when censored) minus k*/T, > 0 by the exact sign-flip test."""
    (plan,) = plans.values()
    rows, lr, df, excluded = _timeline_runs(table, plan)
    gaps = dense_gap(df, float(plan.options["focus"]))
    arm = gaps[gaps["lr"] == lr] if lr is not None else gaps.iloc[:0]
    if arm.empty or not arm["d"].notna().any():
        return [inconclusive(plan.conjecture, plan.statement, "no k* (no finished unablated "
                             "chains reaching the target at the largest η)", **excluded)]
    ks = k_star(arm, float(plan.options["margin"]), plan.alpha)
    shares = []
    for rid, s in dense_timeline(table, rows["run_id"], plan.metric).items():
        s = s.dropna()
        total, last = float(s.index.max()), float(s.iloc[-1])
        at = float(np.interp(ks.k, s.index.to_numpy(dtype=float), s.to_numpy()))
        shares.append(at / last - ks.k / total if last > 0 else np.nan)
    res = sign_flip_test(shares, n_perm=n_perm, rng_seed=rng_seed, alpha=plan.alpha,
                         bounds=(-1.0, 1.0))
    return [verdict_of(plan, res, checks=v2_checks(table, df, rows["run_id"], plan),
                       name=f"{plan.conjecture}[lr={lr:g}]", lr=lr, k_star=ks.k,
                       censored=ks.censored, shares=[float(x) for x in shares],
                       seeds=[int(s) for s in rows["seed"]], **excluded)]


def gap_table(table: SweepTable) -> pd.DataFrame | None:
    """v2: per unablated chain and IMP level ≥ 1, its and the dense accuracy and d."""
    df, _ = level_frame(table)
    gaps = level_gaps(df)
    return None if gaps.empty or not gaps["d"].notna().any() else gaps
