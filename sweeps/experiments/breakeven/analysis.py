"""Break-even detectors, windows and conjectures 1 and 2 (see the package docstring).

Protocol trap (docs/science.md#break-even-point): a trajectory that has not
yet passed its peak has no "maximum attained" to compare. Where the plan
lists the exclusion `peak_not_reached` (conjecture 2: its window is open at
the end), a trial enters only if its peak within the window was reached: the
argmax is not the last measurement and the last value is below
(1 - peak_eps) x the maximum. Conjecture 1's window ends at a fixed point of
training progress, so its maxima are compared there whether or not the
trajectory kept rising. Excluded trials are counted in `details`. Trials that
are not `finished` (diverged, errored, running) are never compared.

Both break-even detectors are `dynamics_core.probes.stability_breakeven` and
`saturation_breakeven`: one rule, shared by the probes and the service. The
stability detector gets S (`train.batch_size`) and N (`data.train_size`)
from the config and s² from the metric the plan names in
`options["noise_s2_key"]` (`sgd_noise/s2`: the variance of the per-example
curvatures along the top Hessian eigenvector, logged by the `sgd_noise`
probe): SGD is unstable once ηλ_H¹ ≥ 1 and
(1 − ηλ_H¹)² + s²η²(N − S)/(S(N − 1)) ≥ 1. A trial without s² or N falls
back to the full-batch form λ_H¹ ≥ 2/η, and `details["noise_term"]` says
how many trials did.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from sweeps.conjectures.plan import FROM_PLAN, AnalysisPlan
from sweeps.conjectures.verdict import N_BOOT, N_PERM, Verdict, trend_test, verdict_of
from sweeps.experiments.registry import Plans, conjecture
from sweeps.experiments.breakeven.plans import (BATCH, LR, NOISE_S2, OPTIONAL, PLANS,
                                                TRAIN_SIZE)
from sweeps.table import SweepTable, param


# ------------------------------------------------------------ trajectories
def peak_reached(values: np.ndarray, eps: float = 0.05) -> bool:
    """True when the trajectory has passed its maximum (see module docstring)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return False
    i = int(np.argmax(v))
    return i < v.size - 1 and v[-1] < (1 - eps) * v[i]


def saturation_step(steps: np.ndarray, values: np.ndarray, eps: float = 0.05,
                    window: int = 3) -> float:
    """Break-even step by the saturation detector, NaN if none.

    The rule is `dynamics_core.probes.saturation_breakeven` (one definition for
    the probes and the service): the first step, once the value has risen by
    more than eps over its first measurement, after which the running max
    grows by less than eps (relative) over the next `window` measurements.
    It says when the early rise stalled; whether the peak was passed (the
    filter for comparing maxima) is `peak_reached`.
    """
    from dynamics_core.probes.breakeven import saturation_breakeven

    step, reached = saturation_breakeven(list(np.asarray(steps)), np.asarray(values, dtype=float),
                                         window, eps)
    return float(step) if reached and step is not None else float("nan")


def stability_step(steps: np.ndarray, lam_h: np.ndarray, lr: np.ndarray | float,
                   batch_size: float | None = None, n_train: float | None = None,
                   s: np.ndarray | float | None = None) -> float:
    """First step where SGD turns unstable along the top Hessian direction; NaN if never.

    With S, N and s the criterion has its SGD-noise term; without them it is
    λ_H¹ ≥ 2/η (full batch). The rule is
    `dynamics_core.probes.stability_breakeven`, shared with the probes.
    """
    from dynamics_core.probes.breakeven import stability_breakeven

    lam = np.asarray(lam_h, dtype=float)
    known = lambda v: v is not None and np.all(np.isfinite(np.asarray(v, float)))  # noqa: E731
    noise = known(batch_size) and known(n_train) and known(s)
    out = stability_breakeven(list(np.asarray(steps)), lam,
                              np.broadcast_to(np.asarray(lr, float), lam.shape),
                              int(batch_size) if noise else None,
                              int(n_train) if noise else None, s if noise else None)
    return float("nan") if out is None else float(out)


def _metric_rows(table: SweepTable, key: str) -> pd.DataFrame:
    rows = table.metric(key)
    if len(rows) or key != "gradcov/trace_over_top":
        return rows
    # derive Tr(K)/λ_K¹ from its parts when the probe did not log the ratio
    tr, top = table.metric("gradcov/trace"), table.metric("gradcov/top")
    both = tr.merge(top, on=["run_id", "step"], suffixes=("_tr", "_top"))
    both = both.assign(key=key, value=both["value_tr"] / both["value_top"])
    return both[["run_id", "key", "step", "value"]]


def trial_maxima(table: SweepTable, key: str, peak_eps: float = 0.05,
                 from_step: Mapping[str, float] | None = None,
                 to_step: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Per run: max of `key`, the step of the max, the last step, whether the peak was reached.

    With `from_step` / `to_step` (run_id -> step), only measurements at steps
    >= / <= that step count (max, argmax and `peak_reached` are those of the
    window); runs missing from either, or with a NaN step, are left out.
    """
    out = []
    for run_id, g in _metric_rows(table, key).groupby("run_id", sort=True):
        v, s = g["value"].to_numpy(float), g["step"].to_numpy()
        lo = from_step.get(run_id, np.nan) if from_step is not None else -np.inf
        hi = to_step.get(run_id, np.nan) if to_step is not None else np.inf
        if np.isnan(lo) or np.isnan(hi):
            continue
        inside = (s >= lo) & (s <= hi)
        v, s = v[inside], s[inside]
        fin = np.isfinite(v)
        if not fin.any():
            continue
        i = int(np.argmax(np.where(fin, v, -np.inf)))
        out.append({"run_id": run_id, "max": float(v[i]), "argmax_step": s[i],
                    "last_step": s[fin][-1], "peak_reached": peak_reached(v, peak_eps)})
    cols = ["run_id", "max", "argmax_step", "last_step", "peak_reached"]
    return pd.DataFrame(out, columns=cols).set_index("run_id")


def trial_finals(table: SweepTable, key: str) -> pd.DataFrame:
    """Per run the last finite value of `key` (column `max`, so that a plan with
    `aggregate: final` is judged like a maximum); `peak_reached` is True (unused)."""
    out = []
    for run_id, g in table.metric(key).groupby("run_id", sort=True):
        v, s = g["value"].to_numpy(float), g["step"].to_numpy()
        fin = np.isfinite(v)
        if fin.any():
            out.append({"run_id": run_id, "max": float(v[fin][-1]), "argmax_step": s[fin][-1],
                        "last_step": s[fin][-1], "peak_reached": True})
    cols = ["run_id", "max", "argmax_step", "last_step", "peak_reached"]
    return pd.DataFrame(out, columns=cols).set_index("run_id")


def saturation_steps(table: SweepTable, key: str = "gradcov/top", eps: float = 0.05,
                     window: int = 3) -> pd.Series:
    """Break-even step per run_id by the saturation detector on `key` (NaN: none)."""
    out = {}
    for run_id, g in table.metric(key).groupby("run_id", sort=True):
        out[run_id] = saturation_step(g["step"].to_numpy(), g["value"].to_numpy(float), eps, window)
    return pd.Series(out, dtype=float, name="breakeven_step")


def run_stability_step(table: SweepTable, row: pd.Series | Mapping[str, Any],
                       noise_scale_key: str | None = None, *,
                       noise_s2_key: str | None = None) -> float:
    """Break-even step of one trial by the stability detector on its `hessian/top`.

    η is the logged `lr` interpolated at the probe steps (schedules), else the
    config's; S and N come from the config (`train.batch_size`,
    `data.train_size`), s from the metric `noise_scale_key` or s = √s² from
    `noise_s2_key` (e.g. `sgd_noise/s2`) when the trial logged it; without
    s or N the criterion is the full-batch λ_H¹ ≥ 2/η.
    """
    rid = row["run_id"]
    h = table.series(rid, "hessian/top").sort_index()
    if not len(h):
        return float("nan")
    at = h.index.to_numpy(float)
    lr_log = table.series(rid, "lr").sort_index()
    eta = (np.interp(at, lr_log.index.to_numpy(float), lr_log.to_numpy(float)) if len(lr_log)
           else float(pd.to_numeric(row.get(LR, np.nan), errors="coerce")))
    key, root = (noise_scale_key, False) if noise_scale_key else (noise_s2_key, True)
    log = table.series(rid, key).sort_index() if key else h.iloc[:0]
    s = np.interp(at, log.index.to_numpy(float), log.to_numpy(float)) if len(log) else None
    if s is not None and root:
        s = np.sqrt(np.maximum(s, 0.0))
    num = lambda k: pd.to_numeric(row.get(k, np.nan), errors="coerce")  # noqa: E731
    return stability_step(h.index.to_numpy(), h.to_numpy(), eta, num(BATCH), num(TRAIN_SIZE), s)


def noise_term_status(table: SweepTable, runs: pd.DataFrame, noise_s2_key: str | None) -> str:
    """How many of `runs` the stability detector judged with its SGD-noise term."""
    if not noise_s2_key:
        return "off: the plan names no s² metric"
    have = set(table.metric(noise_s2_key)["run_id"])
    n = pd.to_numeric(runs.get(TRAIN_SIZE, pd.Series(np.nan, index=runs.index)), errors="coerce")
    on = int((runs["run_id"].isin(have) & np.isfinite(n.to_numpy(float))).sum())
    if on == 0:
        return f"off: no trial logged {noise_s2_key} with {TRAIN_SIZE} set; full-batch λ_H¹ ≥ 2/η"
    if on < len(runs):
        return (f"on for {on} of {len(runs)} trials ({noise_s2_key}, S = {BATCH}, "
                f"N = {TRAIN_SIZE}); the rest full-batch λ_H¹ ≥ 2/η")
    return f"on ({noise_s2_key}, S = {BATCH}, N = {TRAIN_SIZE})"


def breakeven_steps(table: SweepTable, peak_eps: float = 0.05, window: int = 3) -> pd.DataFrame:
    """Per trial break-even step by both detectors, and whether each peak was reached.

    Columns: run_id, status, optim.lr, train.batch_size, seed, stability_step
    (`run_stability_step` with the SGD-noise term where the trial logged
    `sgd_noise/s2` and the config gives N, η from the logged `lr` when
    present), stability_step_full_batch (λ_H¹ ≥ 2/η, no noise term),
    saturation_step_gradcov /
    saturation_step_hessian (running max of λ_K¹ / λ_H¹ grows < peak_eps over
    `window` measurements), peak_reached_gradcov / peak_reached_hessian (the
    trajectory passed its maximum: `peak_reached`).
    """
    rows = []
    for _, r in table.runs.iterrows():
        rid = r["run_id"]
        row = {"run_id": rid, "status": r["status"], LR: r.get(LR, np.nan),
               BATCH: r.get(BATCH, np.nan), "seed": r["seed"],
               "stability_step": run_stability_step(table, r, noise_s2_key=NOISE_S2),
               "stability_step_full_batch": run_stability_step(table, r)}
        for short, key in (("gradcov", "gradcov/top"), ("hessian", "hessian/top")):
            s = table.series(rid, key).sort_index()
            row[f"saturation_step_{short}"] = saturation_step(s.index.to_numpy(), s.to_numpy(),
                                                              peak_eps, window)
            row[f"peak_reached_{short}"] = peak_reached(s.to_numpy(), peak_eps)
        rows.append(row)
    return pd.DataFrame(rows)



# ------------------------------------------------------------------ windows
def breakeven_step_of(table: SweepTable, runs: pd.DataFrame, plan: AnalysisPlan) -> pd.Series:
    """Break-even step per run_id by the plan's detector (NaN: none)."""
    o = plan.options
    if plan.detector == "saturation":
        be = saturation_steps(table, o["breakeven_key"], o["peak_eps"], o["breakeven_window"])
        return be.reindex(runs["run_id"])
    if plan.detector == "stability":
        return pd.Series({r["run_id"]: run_stability_step(table, r, noise_s2_key=o["noise_s2_key"])
                          for _, r in runs.iterrows()}, dtype=float).reindex(runs["run_id"])
    raise ValueError(f"plan {plan.conjecture!r}: detector must be saturation or stability, "
                     f"got {plan.detector!r}")


def window_bounds(table: SweepTable, runs: pd.DataFrame, plan: AnalysisPlan) -> pd.DataFrame:
    """First and last step of each run's window (`plan.window`); NaN where it has none.

    `after_breakeven` starts at the plan detector's break-even step;
    `until_<m><op><v>` ends at the first step where metric m satisfies the
    condition, `from_…` starts there; a run whose metric never does (or was
    not logged) has no window.
    """
    w = plan.parsed_window
    ids = runs["run_id"]
    out = pd.DataFrame({"start": -np.inf, "end": np.inf}, index=pd.Index(ids, name="run_id"))
    if w.kind == "after_breakeven":
        out["start"] = breakeven_step_of(table, runs, plan).to_numpy(float)
    elif w.kind in ("until", "from"):
        rows = table.metric(w.metric)
        hits = rows.loc[np.array([w.holds(v) for v in rows["value"].to_numpy(float)], dtype=bool)]
        first = hits.groupby("run_id")["step"].min().reindex(ids).to_numpy(float)
        out["end" if w.kind == "until" else "start"] = first
    return out


# ------------------------------------------------------------- conjectures
def _strata_columns(runs: pd.DataFrame, axis_col: str, strata: list[str] | None) -> list[str]:
    """Config fields held fixed: every varying dotted field except the axis and seeds."""
    if strata is not None:
        return list(strata)
    cols = []
    for c in runs.columns:
        if c == axis_col or "." not in str(c) or "/" in str(c) or str(c).endswith("seed"):
            continue
        if runs[c].astype(str).nunique() > 1:
            cols.append(c)
    return cols


EXCLUSIONS = ("unfinished", "window_not_reached", "no_breakeven", "peak_not_reached")


def _judge_plan(table: SweepTable, vname: str, plan: AnalysisPlan, *, n_perm: int, n_boot: int,
                rng_seed: int, strata: Any = FROM_PLAN, final: bool = False) -> Verdict | None:
    """One verdict: the trend of the window maximum of `plan.metric` along the plan's axis
    (`final`: of its last value instead, `trial_finals`)."""
    unknown = set(plan.exclusions) - set(EXCLUSIONS)
    if unknown:
        raise ValueError(f"plan {vname!r}: unknown exclusions {sorted(unknown)}")
    plan = plan.with_options(strata=list(strata) if isinstance(strata, tuple) else strata)
    key, col = plan.metric, plan.options["axis"]
    strata = plan.options["strata"]
    if key in OPTIONAL and _metric_rows(table, key).empty:
        return None                          # Tr(H), K_mb: judged only when measured
    runs, excluded = table.usable()
    held = _strata_columns(runs, col, strata)
    bounds = window_bounds(table, runs, plan)
    no_window = bounds.isna().any(axis=1)
    reason_key = "excluded_no_breakeven" if plan.window == "after_breakeven" else \
        "excluded_window_not_reached"
    base = {"metric": key, "axis": col, "strata": held, **excluded, "window": plan.window,
            "detector": plan.detector, "peak_eps": plan.options["peak_eps"],
            "blocks": "seed", reason_key: int(no_window.sum())}
    if plan.detector is not None:
        base.update(breakeven_key=plan.options["breakeven_key"],
                    breakeven_window=plan.options["breakeven_window"])
    if plan.detector == "stability":
        base["noise_term"] = noise_term_status(table, runs, plan.options["noise_s2_key"])
    if _metric_rows(table, key).empty or col not in runs.columns:
        why = f"{key} was not logged" if col in runs.columns else f"no column {col}"
        return verdict_of(plan, None, name=vname, n=0, reason=why, **base)
    if final:
        maxima = trial_finals(table, key)
    else:
        maxima = trial_maxima(table, key, plan.options["peak_eps"], bounds["start"].to_dict(),
                              bounds["end"].to_dict())
    df = runs.set_index("run_id").join(maxima, how="inner")
    n_no_peak = int((~df["peak_reached"].astype(bool)).sum())
    if "peak_not_reached" in plan.exclusions:
        df = df[df["peak_reached"].astype(bool)]
        base["excluded_peak_not_reached"] = n_no_peak
    base["excluded_no_data"] = int(len(runs) - no_window.sum() - len(maxima.index.intersection(
        runs["run_id"])))
    if len(df) < 3:
        return verdict_of(plan, None, name=vname, n=len(df),
                          reason=f"only {len(df)} trials had a window and a maximum in it", **base)
    x = param(df, col).to_numpy(float)
    groups = df[held].astype(str).agg("|".join, axis=1) if held else None
    res = trend_test(x, df["max"].to_numpy(float), groups, blocks=df["seed"].astype(str),
                     n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=plan.alpha)
    means = df.assign(_x=x).groupby("_x")["max"].mean()
    return verdict_of(plan, res, name=vname, **base,
                      mean_max_by_level={float(k): float(v) for k, v in means.items()})


def _judge_axis(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM, n_boot: int = N_BOOT,
                rng_seed: int = 0, strata: Any = FROM_PLAN) -> list[Verdict]:
    out = [_judge_plan(table, vname, plan, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed,
                       strata=strata) for vname, plan in plans.items()]
    return [v for v in out if v is not None]


@conjecture(PLANS)
def c1_lr(table: SweepTable, plans: Plans, **options: Any) -> list[Verdict]:
    """Conjecture 1 along η: max λ_H¹ and max λ_K¹ (until train accuracy 0.65) smaller for larger η."""
    return _judge_axis(table, plans, **options)


@conjecture(PLANS)
def c1_batch(table: SweepTable, plans: Plans, **options: Any) -> list[Verdict]:
    """Conjecture 1 along S: max λ_H¹ and max λ_K¹ (until train accuracy 0.65) smaller for smaller S."""
    return _judge_axis(table, plans, **options)


@conjecture(PLANS)
def c2_lr(table: SweepTable, plans: Plans, **options: Any) -> list[Verdict]:
    """Conjecture 2 along η: max Tr(K)/λ_K¹ larger, max Tr(K) (Tr(H)) smaller for larger η,
    maxima taken at or after each trial's break-even step."""
    return _judge_axis(table, plans, **options)


@conjecture(PLANS)
def c2_batch(table: SweepTable, plans: Plans, **options: Any) -> list[Verdict]:
    """Conjecture 2 along S: max Tr(K)/λ_K¹ larger, max Tr(K) (Tr(H)) smaller for smaller S,
    maxima taken at or after each trial's break-even step."""
    return _judge_axis(table, plans, **options)


@conjecture(PLANS)
def lr_generalizes(table: SweepTable, plans: Plans, **options: Any) -> list[Verdict]:
    """Along η within each S: the whole-run max λ_K¹ is smaller and the final test
    accuracy higher for larger η (both links of the paper's claim, one Holm family).
    Each plan's `aggregate` says which value of a trial is compared: `max` or `final`."""
    out = [_judge_plan(table, vname, plan, **{"n_perm": N_PERM, "n_boot": N_BOOT, "rng_seed": 0,
                                               **options},
                       final=plan.options["aggregate"] == "final")
           for vname, plan in plans.items()]
    return [v for v in out if v is not None]
