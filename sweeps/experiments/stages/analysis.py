"""The stages experiment's units, markers and conjectures (see the package docstring).

A trial of the sweep plays one of three roles, read from its config alone
(`role_of`): the `reference` run (no deficit, no pruning: every probe on),
an `onset` run (a blur window) or a `rewind` run (pruning levels ≥ 1). A
unit is one (η, S, seed) with a finished reference run; its onset and
rewind runs are the ones of the same η, S and seed. `unit_frame` reads
every marker of every unit (`markers.py` holds the rules); the conjectures
below test them under their plans (`plans.py`).
"""
from __future__ import annotations

import math
from itertools import combinations
from typing import Any, Mapping

import numpy as np
import pandas as pd

from sweeps.conjectures.inference import equivalence_test, sign_flip_test
from sweeps.conjectures.plan import AnalysisPlan
from sweeps.conjectures.verdict import N_BOOT, N_PERM, Verdict, verdict_of
from sweeps.experiments.breakeven.analysis import run_stability_step, saturation_step
from sweeps.experiments.frequency.analysis import DELTA, relative_convergence_step
from sweeps.experiments.registry import Plans, conjecture
from sweeps.experiments.stages.markers import (BEFORE, BUDGET, SEEN, crossing, first_reaching,
                                               half_change, interior_peak)
from sweeps.experiments.stages.plans import (BATCH, CONTROL, K, KIND, LEVELS, LR, MARKERS,
                                             NAMES, PLANS, REFERENCE, RULE, START, TRAIN_SIZE)
from sweeps.table import SweepTable, param

ALL = (REFERENCE, *MARKERS, CONTROL)
FIX = ("a marker the runs rarely reach cannot be dated: lengthen the runs, widen the onset or "
       "rewind grid, or change the reader's level (a new plan)")


# ------------------------------------------------------------------ roles
def role_of(row: Mapping[str, Any]) -> str:
    """`reference`, `onset` (a deficit window) or `rewind` (pruning levels ≥ 1)."""
    if _num(row.get(LEVELS), 0) >= 1:
        return "rewind"
    kind = str(row.get(KIND, "none") or "none")
    return "reference" if kind in ("none", "nan") else "onset"


def _num(v: Any, default: float = math.nan) -> float:
    v = pd.to_numeric(pd.Series([v]), errors="coerce").iloc[0]
    return float(v) if pd.notna(v) else default


def trial_frame(table: SweepTable, acc_key: str = RULE["acc_key"]
                ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Finished runs with role, η, S, seed, onset step (`onset`), rewind step `k` and the
    final accuracy; plus the exclusion counts."""
    runs, excluded = table.usable()
    rows = runs.to_dict("records")
    acc = table.final(acc_key, fallback="val/acc")
    n_train = param(runs, TRAIN_SIZE, np.nan).to_numpy(float)
    bs = param(runs, BATCH, np.nan).to_numpy(float)
    df = pd.DataFrame({"run_id": runs["run_id"].to_numpy(), "seed": runs["seed"].to_numpy(),
                       "lr": param(runs, LR, np.nan).to_numpy(float), "S": bs,
                       "role": [role_of(r) for r in rows],
                       "start_epoch": param(runs, START, 0).fillna(0).to_numpy(float),
                       "k": param(runs, K, 0).fillna(0).to_numpy(float)})
    df["onset"] = df["start_epoch"] * np.ceil(n_train / bs)     # steps per epoch: ceil(N / S)
    df["acc"] = acc.reindex(df["run_id"]).to_numpy(float)
    return df, excluded


# ---------------------------------------------------------------- markers
def _series(table: SweepTable, rid: str, key: str) -> pd.Series:
    return table.series(rid, key).sort_index().astype(float)


def _budget(table: SweepTable, rid: str) -> float:
    m = table.metrics
    steps = m.loc[m["run_id"] == rid, "step"]
    return float(steps.max()) if len(steps) else math.nan


def reference_markers(table: SweepTable, row: Mapping[str, Any], rule: Mapping[str, Any] = RULE
                      ) -> dict[str, tuple[float, str]]:
    """t_BE, t_stab, t_F, t_stiff, t_HF and t_fit of one reference run: (step, how read)."""
    rid, budget = row["run_id"], _budget(table, row["run_id"])
    out: dict[str, tuple[float, str]] = {}
    lam = _series(table, rid, rule["be_key"])
    be = saturation_step(lam.index.to_numpy(float), lam.to_numpy(), rule["be_eps"], rule["be_window"])
    out["be"] = (be, SEEN) if np.isfinite(be) else (budget, BUDGET)
    stab = run_stability_step(table, row, noise_s2_key=rule["noise_s2_key"])
    out["stab"] = (stab, SEEN) if np.isfinite(stab) else (budget, BUDGET)
    f = _series(table, rid, rule["fisher_key"])
    out["fisher"] = interior_peak(f.index, f.to_numpy(), budget, rule["smooth"])
    w, b = _series(table, rid, rule["stiff_within"]), _series(table, rid, rule["stiff_between"])
    contrast = (w - b).dropna()
    out["stiff"] = half_change(contrast.index, contrast.to_numpy(), budget, rule["stiff_frac"],
                             rule["smooth"])
    out["hf"] = _high_frequency(table, rid, budget, rule)
    acc = _series(table, rid, rule["fit_key"])
    out["fit"] = first_reaching(acc.index, acc.to_numpy(), rule["fit_level"], budget)
    return out


def _high_frequency(table: SweepTable, rid: str, budget: float, rule: Mapping[str, Any]
                    ) -> tuple[float, str]:
    keys = [k for k in table.metrics.loc[table.metrics["run_id"] == rid, "key"].unique()
            if DELTA.match(str(k))]
    if not keys:
        return budget, BUDGET
    top = max(keys, key=lambda k: int(DELTA.match(k).group(1)))
    s = _series(table, rid, top)
    t = relative_convergence_step(s.index.to_numpy(float), s.to_numpy(), rule["hf_fraction"],
                                  rule["hf_hold"])
    return (t, SEEN) if np.isfinite(t) else (budget, BUDGET)


def unit_frame(table: SweepTable, rule: Mapping[str, Any] = RULE) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per unit (η, S, seed with a finished reference run): `t_<m>` and `how_<m>`
    for every marker, the reference accuracy, how many onset and rewind runs it had."""
    df, excluded = trial_frame(table, rule["acc_key"])
    runs = table.runs.set_index("run_id")
    rows = []
    for _, ref in df[df["role"] == "reference"].iterrows():
        same = df[(df["lr"] == ref["lr"]) & (df["S"] == ref["S"]) & (df["seed"] == ref["seed"])]
        row = {**runs.loc[ref["run_id"]].to_dict(), "run_id": ref["run_id"]}
        found = reference_markers(table, row, rule)
        budget = _budget(table, ref["run_id"])
        on = same[same["role"] == "onset"].sort_values("onset")
        found["cp"] = crossing(on["onset"].to_numpy(float), ref["acc"] - on["acc"].to_numpy(float),
                               rule["cp_margin"], budget)
        rw = same[same["role"] == "rewind"]
        gaps = _rewind_gaps(table, rw, rule["acc_key"])
        found["imp"] = crossing(gaps["k"].to_numpy(float), gaps["gap"].to_numpy(float),
                                rule["imp_margin"], budget)
        rec = {"run_id": ref["run_id"], "lr": ref["lr"], "S": ref["S"], "seed": ref["seed"],
               "budget": budget, "acc": ref["acc"], "n_onsets": len(on), "n_rewinds": len(gaps),
               "dense_acc": float(gaps["dense"].mean()) if len(gaps) else math.nan}
        for m in ALL:
            rec[f"t_{m}"], rec[f"how_{m}"] = found[m]
        rows.append(rec)
    cols = ["run_id", "lr", "S", "seed", "budget", "acc", "n_onsets", "n_rewinds", "dense_acc",
            *(f"{p}_{m}" for m in ALL for p in ("t", "how"))]
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["S", "lr", "seed"]).reset_index(drop=True), excluded


def _rewind_gaps(table: SweepTable, rw: pd.DataFrame, acc_key: str = RULE["acc_key"]
                 ) -> pd.DataFrame:
    """Per rewind run: k, its dense level's accuracy and gap = dense − pruned (last level)."""
    if rw.empty:
        return pd.DataFrame(columns=["k", "dense", "gap"])
    lv = table.levels([acc_key], rw["run_id"])
    if lv.empty:
        return pd.DataFrame(columns=["k", "dense", "gap"])
    lv = lv.assign(level=lv["level"].astype(int))
    dense = lv[lv["level"] == 0].set_index("run_id")[acc_key]
    last = lv.sort_values("level").groupby("run_id")[acc_key].last()
    k = rw.set_index("run_id")["k"]
    out = pd.DataFrame({"k": k, "dense": dense.reindex(k.index), "pruned": last.reindex(k.index)})
    return out.assign(gap=out["dense"] - out["pruned"]).dropna().sort_values("k")


def log_ratio(units: pd.DataFrame, m: str, against: str) -> np.ndarray:
    """log(t_m / t_against) per unit (times floored at step 1: log needs > 0)."""
    a = np.maximum(units[f"t_{m}"].to_numpy(float), 1.0)
    b = np.maximum(units[f"t_{against}"].to_numpy(float), 1.0)
    return np.log(a) - np.log(b)


# ----------------------------------------------------------------- checks
def occurs(units: pd.DataFrame, names: tuple[str, ...], min_seen: float) -> tuple[bool, str]:
    """The manipulation check `occurs`: each of `names` seen in ≥ min_seen of the units."""
    if units.empty:
        return False, "no units"
    shares = {m: float((units[f"how_{m}"] == SEEN).mean()) for m in names}
    low = {m: s for m, s in shares.items() if s < min_seen}
    text = ", ".join(f"{NAMES[m]} {s:.0%}" for m, s in shares.items())
    return (not low), (f"seen inside the run: {text} (need ≥ {min_seen:.0%})"
                       + (f"; {FIX}" if low else ""))


def _how(units: pd.DataFrame, m: str) -> dict[str, int]:
    return {h: int((units[f"how_{m}"] == h).sum()) for h in (SEEN, BUDGET, BEFORE)}


def _guard(plan: AnalysisPlan, units: pd.DataFrame, names: tuple[str, ...], vname: str,
           excluded: dict[str, int]) -> tuple[dict[str, tuple[bool, str]], Verdict | None]:
    checks = {"occurs": occurs(units, names, plan.options["min_seen"])}
    if checks["occurs"][0]:
        return checks, None
    return checks, verdict_of(plan, None, checks=checks, name=vname, n=len(units), fix=FIX,
                              **excluded)


# ------------------------------------------------------------ conjectures
class _Units:
    """`unit_frame` under each plan's own rule (its options), read once per distinct rule:
    a plan is the whole analysis, so an overridden option reads the markers anew."""

    def __init__(self, table: SweepTable) -> None:
        self.table, self._seen = table, {}

    def __call__(self, plan: AnalysisPlan) -> tuple[pd.DataFrame, dict[str, int]]:
        rule = {k: plan.options[k] for k in RULE}
        key = repr(sorted(rule.items()))
        if key not in self._seen:
            self._seen[key] = unit_frame(self.table, rule)
        return self._seen[key]


def _equivalence(table: SweepTable, plans: Plans, n_perm: int, rng_seed: int) -> list[Verdict]:
    units_of = _Units(table)
    out = []
    for vname, plan in plans.items():
        units, excluded = units_of(plan)
        m, against = plan.options["marker"], plan.options["against"]
        checks, bad = _guard(plan, units, (m, against), vname, excluded)
        if bad is not None:
            out.append(bad)
            continue
        d = log_ratio(units, m, against)
        res = equivalence_test(d, plan.effect_of_interest, n_perm=n_perm, rng_seed=rng_seed,
                               alpha=plan.alpha)
        out.append(verdict_of(plan, res, checks=checks, name=vname, **excluded,
                              ratio=float(np.exp(np.nanmean(d))), how=_how(units, m),
                              how_against=_how(units, against)))
    return out


@conjecture(PLANS)
def aligned(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM, n_boot: int = N_BOOT,
            rng_seed: int = 0) -> list[Verdict]:
    """Per marker: the mean log(t_m / t_BE) lies within ±log 2 (TOST)."""
    return _equivalence(table, plans, n_perm, rng_seed)


@conjecture(PLANS)
def aligned_with_fit(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                     n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Per marker (t_BE included): the mean log(t_m / t_fit) lies within ±log 2 (TOST)."""
    return _equivalence(table, plans, n_perm, rng_seed)


def spread_contrast(units: pd.DataFrame, markers: tuple[str, ...], against: str) -> np.ndarray:
    """Per unit: mean |log t_m − log t_against| − mean pairwise |log t_m − log t_m'|."""
    logs = np.log(np.maximum(units[[f"t_{m}" for m in markers]].to_numpy(float), 1.0))
    ref = np.log(np.maximum(units[f"t_{against}"].to_numpy(float), 1.0))
    to_ref = np.abs(logs - ref[:, None]).mean(axis=1)
    pairs = np.array([np.abs(logs[:, i] - logs[:, j]) for i, j in combinations(range(len(markers)), 2)])
    return to_ref - pairs.mean(axis=0)


@conjecture(PLANS)
def closer_than_fit(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                    n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """The markers' mean distance to t_fit exceeds their mean pairwise distance (sign flip)."""
    units_of = _Units(table)
    out = []
    for vname, plan in plans.items():
        units, excluded = units_of(plan)
        markers, against = tuple(plan.options["markers"]), plan.options["against"]
        checks, bad = _guard(plan, units, (REFERENCE, against), vname, excluded)
        if bad is not None:
            out.append(bad)
            continue
        d = spread_contrast(units, markers, against)
        res = sign_flip_test(d, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=plan.alpha)
        out.append(verdict_of(plan, res, checks=checks, name=vname, **excluded,
                              markers=list(markers)))
    return out


def unit_slopes(units: pd.DataFrame, m: str, against: str, axis: str) -> pd.DataFrame:
    """Per stratum (seed and the other axis), the least-squares slope of log(t_m/t_against)
    on log(axis value); strata with fewer than 2 distinct values drop out."""
    col, other = ("lr", "S") if axis == LR else ("S", "lr")
    u = units.assign(r=log_ratio(units, m, against), x=np.log(units[col].to_numpy(float)))
    rows = []
    for (seed, o), g in u.groupby(["seed", other]):
        if g["x"].nunique() < 2:
            continue
        rows.append({"seed": seed, other: o, "n": len(g), "slope": float(np.polyfit(g["x"], g["r"], 1)[0])})
    return pd.DataFrame(rows, columns=["seed", other, "n", "slope"])


def _pooled_slopes(r: np.ndarray, x: np.ndarray, strata: np.ndarray) -> np.ndarray:
    """Per column of r, the slope on x pooled over strata (x and r centred within each)."""
    xc, rc = x.astype(float).copy(), r.astype(float).copy()
    for s in np.unique(strata):
        i = strata == s
        xc[i] -= xc[i].mean()
        rc[i] -= rc[i].mean(axis=0)
    den = float((xc ** 2).sum())
    return (xc[:, None] * rc).sum(axis=0) / den if den > 0 else np.full(r.shape[1], np.nan)


def joint_slope_test(units: pd.DataFrame, markers: tuple[str, ...], axis: str, *,
                     n_perm: int = 999, rng_seed: int = 0) -> dict[str, Any]:
    """Do the markers' log ratios to t_BE move with `axis` at all? The sum over markers
    of the squared pooled slope (within seed and the other axis) against its
    distribution when each seed's cell labels are permuted (the markers of a unit move
    together, so their correlation is kept): a small p says some marker does not move
    with t_BE. Reported beside the per-marker equivalence tests."""
    col, other = ("lr", "S") if axis == LR else ("S", "lr")
    r = np.column_stack([log_ratio(units, m, REFERENCE) for m in markers])
    keep = np.all(np.isfinite(r), axis=1)
    u, r = units[keep].reset_index(drop=True), r[keep]
    if len(u) < 3:
        return {"p": math.nan, "statistic": math.nan, "n_perm": 0}
    x, seeds = np.log(u[col].to_numpy(float)), u["seed"].astype(str).to_numpy()
    oth = u[other].to_numpy(float)
    strata = np.array([f"{a}|{b}" for a, b in zip(seeds, oth)])
    stat = float(np.nansum(_pooled_slopes(r, x, strata) ** 2))
    rng, hits = np.random.default_rng(rng_seed), 0
    for _ in range(n_perm):
        idx = np.arange(len(u))
        for sd in np.unique(seeds):
            i = np.flatnonzero(seeds == sd)
            idx[i] = rng.permutation(i)
        xp, op = x[idx], oth[idx]
        sp = np.array([f"{a}|{b}" for a, b in zip(seeds, op)])
        hits += float(np.nansum(_pooled_slopes(r, xp, sp) ** 2)) >= stat
    return {"p": (1 + hits) / (1 + n_perm), "statistic": stat, "n_perm": n_perm,
            "test": "sum of squared pooled slopes, cells permuted within seed"}


@conjecture(PLANS)
def moves_together(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM,
                   n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Per marker and axis: the within-stratum slope of log(t_m/t_BE) on log η (log S)
    lies within ±slope_margin (TOST over the strata)."""
    units_of = _Units(table)
    joint: dict[tuple[str, str], dict[str, Any]] = {}
    out = []
    for vname, plan in plans.items():
        units, excluded = units_of(plan)
        m, against, axis = plan.options["marker"], plan.options["against"], plan.options["axis"]
        checks, bad = _guard(plan, units, (m, against), vname, excluded)
        if bad is not None:
            out.append(bad)
            continue
        key = (repr(sorted((k, plan.options[k]) for k in RULE)), axis)
        if key not in joint:
            joint[key] = joint_slope_test(units, MARKERS, axis, rng_seed=rng_seed)
        s = unit_slopes(units, m, against, axis)
        res = equivalence_test(s["slope"].to_numpy(float), plan.effect_of_interest, n_perm=n_perm,
                               rng_seed=rng_seed, alpha=plan.alpha)
        out.append(verdict_of(plan, res, checks=checks, name=vname, **excluded,
                              n_strata=len(s), slopes=[round(float(x), 4) for x in s["slope"]],
                              joint_slope_test=joint[key]))
    return out


# ----------------------------------------------------------------- tables
def is_stages_sweep(table: SweepTable) -> bool:
    """Whether `table` holds this protocol: reference probes and onset or rewind runs."""
    if table.runs.empty or not table.has(RULE["be_key"], RULE["fisher_key"], RULE["stiff_within"]):
        return False
    roles = {role_of(r) for r in table.runs.to_dict("records")}
    return bool(roles & {"onset", "rewind"})


def marker_table(table: SweepTable) -> pd.DataFrame | None:
    """Every unit's markers (the figure's and the external checks' input)."""
    if not is_stages_sweep(table):
        return None
    units, _ = unit_frame(table)
    return None if units.empty else units


def correlation_matrix(units: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation of the markers' log times over the units (t_fit included)."""
    logs = pd.DataFrame({NAMES[m]: np.log(np.maximum(units[f"t_{m}"].to_numpy(float), 1.0))
                         for m in ALL})
    return logs.corr(method="spearman")
