"""Break-even point (Jastrzebski et al., ICLR 2020): conjectures 1 and 2.

Conjecture 1: the maximum attained λ_H¹ (`hessian/top`) and λ_K¹
(`gradcov/top`) are smaller for a larger learning rate η or a smaller batch
size S. The paper compares the maxima reached early in training, before the
network fits its data; the registered window is therefore "up to the first
probe with train accuracy ≥ 0.65" (`until_probe/acc>=0.65`; `probe/acc` is
the accuracy on the probe set, drawn from the training data, at every probe
step). Trials that never reach it have no such window and are excluded
(`excluded_window_not_reached`).
Conjecture 2: the maximum attained Tr(K)/λ_K¹ (`gradcov/trace_over_top`) is
larger, and the maximum Tr(K) (`gradcov/trace`, and Tr(H) `hessian/trace`
when measured) smaller, for larger η or smaller S. The paper measures
conditioning along the trajectory, with its peaks after the break-even point;
at initialization the gradient covariance is nearly isotropic and Tr(K)/λ_K¹
is at its largest, so a max over the whole run measures the init, not η or S.
Its registered window is `after_breakeven`: measurements at or after each
trial's break-even step by the plan's detector (`saturation` on λ_K¹; trials
without one are excluded, `excluded_no_breakeven`).
Each verdict is one test along one axis: η within each batch size (and any
other varying config field), S within each η; trials sharing a seed share
their initialisation, so the seed is a block (`trend_test(..., blocks=seed)`).

Plans (`PLANS`, one per verdict, `breakeven.c1_lr[hessian/top]`, …): the four
tests of conjecture 1 are one Holm family (`breakeven.c1`), the tests of
conjecture 2 another (`breakeven.c2`); stratified Spearman, alpha 0.05, an
effect of interest of |rho| = 0.5 (a strong monotone trend: the paper's
claim is about the direction across a wide grid, not a subtle slope). At
least 10 trials: a seed cell of 3 η levels has 6 arrangements, so the exact
p can fall below 0.05/4 (Holm's first step over a family of 4) only with 3
or more such cells, 9 trials; 3 per stratum, as the Spearman of fewer is
undefined. Designs above that floor that still could not detect |rho| 0.5
(e.g. cells of 2 along S) are caught by the power rule: `underpowered`.

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

Units of K. `gradcov/*` is K of per-example gradients on the 256-example
probe set (`probes.gradcov_unit: example`); `gradcov_mb/*` is K of
M = 16 mini-batch mean gradients of S_K = 128 examples
(`probes.gradcov_mb`), the paper's unit, about the per-example one / S_K.
Conjecture 1 on `gradcov/top` stays the primary test (in family
`breakeven.c1`, as registered before the mini-batch unit existed); the
mini-batch-unit maxima are a secondary family of their own,
`breakeven.c1_mb` (2 tests, η and S, Holm within it): they test the same
claim about the same matrix in another unit (a check that the verdict does
not hinge on the unit), with a noisier top eigenvalue (16 vectors instead of
256), so adding them to the primary family would cost the primary tests
power without adding a claim. They are judged only where the sweep measured
`gradcov_mb/top`.

Conjecture 2's break-even step is the saturation detector on λ_K¹, not the
stability detector with the noise term, for two reasons given before any
sweep with the noise term ran: the conjecture is about the spectrum after the early rise of λ_K¹
has stalled, which is what saturation detects on the measured trajectory,
while the stability step is a quadratic model's prediction that depends on
λ_H¹ of the probe loss reaching about 2/η (less with noise), which
small-η trials may never do within the step budget, so its exclusions
would fall unevenly along the tested η axis. The stability step with the
noise term is still computed for every trial (`breakeven_steps.csv`).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib import colors
from matplotlib.figure import Figure

from sweeps.conjectures.plan import FROM_PLAN, AnalysisPlan
from sweeps.conjectures.verdict import N_BOOT, N_PERM, trend_test, Verdict, verdict_of

from sweeps.experiments import Experiment, Sources, own_plans, register
from sweeps.table import SweepTable, param
from sweeps.plotting import DPI, lr_colors

LR, BATCH, TRAIN_SIZE = "optim.lr", "train.batch_size", "data.train_size"
NOISE_S2 = "sgd_noise/s2"          # s² of the stability criterion (the sgd_noise probe)
AXES = {"lr": (LR, "η"), "batch": (BATCH, "S")}
SYMBOL = {"hessian/top": "λ_H¹", "gradcov/top": "λ_K¹", "gradcov_mb/top": "λ_K¹ (mini-batch unit)",
          "gradcov/trace": "Tr(K)",
          "gradcov/trace_over_top": "Tr(K)/λ_K¹", "hessian/trace": "Tr(H)"}
# predicted sign of d(max metric)/d(lr); along batch size it is the opposite.
C1_SIGNS = {"hessian/top": -1, "gradcov/top": -1}
C1_MB_SIGNS = {"gradcov_mb/top": -1}   # secondary family breakeven.c1_mb
C2_SIGNS = {"gradcov/trace_over_top": +1, "gradcov/trace": -1, "hessian/trace": -1}
OPTIONAL = ("hessian/trace", "gradcov_mb/top")   # judged only when the sweep measured it


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


# ------------------------------------------------------------------- plans
C1_WINDOW = "until_probe/acc>=0.65"
DETECTOR_OPTIONS = {"peak_eps": 0.05, "breakeven_key": "gradcov/top", "breakeven_window": 3,
                    "noise_s2_key": NOISE_S2}


def _plan(conjecture: str, key: str, sign_lr: int, axis: str, family: str, window: str,
          detector: str | None, exclusions: tuple[str, ...], where: str) -> AnalysisPlan:
    col, sym = AXES[axis]
    sign = sign_lr if axis == "lr" else -sign_lr
    more = "larger" if sign > 0 else "smaller"
    direction = "larger η" if axis == "lr" else "smaller S"
    statement = (f"max {SYMBOL.get(key, key)} ({key}) {where} is "
                 f"{'larger' if sign_lr > 0 else 'smaller'} for {direction} (i.e. {more} for "
                 f"larger {sym}, other config fields held fixed, seeds as blocks)")
    return AnalysisPlan(
        conjecture=conjecture, statement=statement, metric=key,
        statistic="stratified_spearman", predicted_sign=sign, window=window, detector=detector,
        exclusions=exclusions, family=family, alpha=0.05, min_n=10, min_per_stratum=3,
        effect_of_interest=0.5, options={**(DETECTOR_OPTIONS if detector else
                                            {"peak_eps": DETECTOR_OPTIONS["peak_eps"]}),
                                         "axis": col, "strata": None})
# strata: the config fields held fixed; null: every varying dotted field except
# the axis and seeds (`_strata_columns`)


def _plans() -> dict[str, AnalysisPlan]:
    out = {}
    for axis in AXES:
        for key, sign in C1_SIGNS.items():
            p = _plan(f"breakeven.c1_{axis}", key, sign, axis, "breakeven.c1", C1_WINDOW, None,
                      ("unfinished", "window_not_reached"),
                      "up to the first probe with train accuracy ≥ 0.65")
            out[f"{p.conjecture}[{key}]"] = p
        for key, sign in C1_MB_SIGNS.items():
            p = _plan(f"breakeven.c1_{axis}", key, sign, axis, "breakeven.c1_mb", C1_WINDOW, None,
                      ("unfinished", "window_not_reached"),
                      "up to the first probe with train accuracy ≥ 0.65")
            out[f"{p.conjecture}[{key}]"] = p
        for key, sign in C2_SIGNS.items():
            p = _plan(f"breakeven.c2_{axis}", key, sign, axis, "breakeven.c2", "after_breakeven",
                      "saturation", ("unfinished", "no_breakeven", "peak_not_reached"),
                      "at or after the break-even step")
            out[f"{p.conjecture}[{key}]"] = p
    return out


PLANS = _plans()


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
                rng_seed: int, strata: Any = FROM_PLAN) -> Verdict | None:
    """One verdict: the trend of the window maximum of `plan.metric` along the plan's axis."""
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


def _judge_axis(table: SweepTable, name: str, plans: Mapping[str, AnalysisPlan] | None, *,
                n_perm: int = N_PERM, n_boot: int = N_BOOT, rng_seed: int = 0,
                strata: Any = FROM_PLAN) -> list[Verdict]:
    plans = own_plans(PLANS, name, plans)
    out = [_judge_plan(table, vname, plan, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed,
                       strata=strata) for vname, plan in plans.items()]
    return [v for v in out if v is not None]


def c1_lr(table: SweepTable, plans: Mapping[str, AnalysisPlan] | None = None,
          **options: Any) -> list[Verdict]:
    """Conjecture 1 along η: max λ_H¹ and max λ_K¹ (until train accuracy 0.65) smaller for larger η."""
    return _judge_axis(table, "breakeven.c1_lr", plans, **options)


def c1_batch(table: SweepTable, plans: Mapping[str, AnalysisPlan] | None = None,
             **options: Any) -> list[Verdict]:
    """Conjecture 1 along S: max λ_H¹ and max λ_K¹ (until train accuracy 0.65) smaller for smaller S."""
    return _judge_axis(table, "breakeven.c1_batch", plans, **options)


def c2_lr(table: SweepTable, plans: Mapping[str, AnalysisPlan] | None = None,
          **options: Any) -> list[Verdict]:
    """Conjecture 2 along η: max Tr(K)/λ_K¹ larger, max Tr(K) (Tr(H)) smaller for larger η,
    maxima taken at or after each trial's break-even step."""
    return _judge_axis(table, "breakeven.c2_lr", plans, **options)


def c2_batch(table: SweepTable, plans: Mapping[str, AnalysisPlan] | None = None,
             **options: Any) -> list[Verdict]:
    """Conjecture 2 along S: max Tr(K)/λ_K¹ larger, max Tr(K) (Tr(H)) smaller for smaller S,
    maxima taken at or after each trial's break-even step."""
    return _judge_axis(table, "breakeven.c2_batch", plans, **options)


# ------------------------------------------------------------------ figures
Trajectories = Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


def fig_spectra(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Paper Fig. 6: λ_H¹ and ΔL (change of train loss between measurements) against λ_K¹."""
    if not table.has("gradcov/top"):
        return None
    runs = table.finished()
    color, sm = lr_colors(runs[LR] if LR in runs else [])
    fig = Figure(figsize=(9, 3.6), dpi=DPI, layout="constrained")
    ax_h, ax_l = fig.subplots(1, 2)
    for _, r in runs.iterrows():
        k = table.series(r["run_id"], "gradcov/top").sort_index()
        if k.empty:
            continue
        c = color(r[LR]) if LR in r else None
        h = table.series(r["run_id"], "hessian/top").sort_index()
        if len(h):
            common = k.index.intersection(h.index)
            ax_h.plot(k.loc[common], h.loc[common], "-o", ms=2, lw=1, color=c, alpha=0.8)
        loss = table.series(r["run_id"], "train/loss").sort_index()
        if len(loss) >= 2 and len(k) >= 2:
            at = np.interp(k.index.to_numpy(float), loss.index.to_numpy(float), loss.to_numpy(float))
            ax_l.plot(k.to_numpy()[1:], np.diff(at), "-o", ms=2, lw=1, color=c, alpha=0.8)
    ax_h.set(xlabel="λ_K¹", ylabel="λ_H¹", title="λ_H¹ vs λ_K¹")
    ax_l.set(xlabel="λ_K¹", ylabel="ΔL", title="ΔL vs λ_K¹")
    ax_l.axhline(0, color="grey", lw=0.5)
    fig.colorbar(sm, ax=[ax_h, ax_l], label="η")
    return fig


def fig_pca_trajectories(trajectories: Trajectories | None, max_runs: int = 4) -> Figure | None:
    """Paper Fig. 7/8: each run's early trajectory projected on its top-2 PCA
    directions, coloured by λ_K¹. `trajectories[run_id] = (steps (T,),
    flattened weight snapshots (T, p), λ_K¹ per snapshot (T,))`."""
    if not trajectories:
        return None
    items = list(trajectories.items())[:max_runs]
    lam_all = np.concatenate([np.asarray(t[2], float) for _, t in items])
    norm = colors.Normalize(np.nanmin(lam_all), np.nanmax(lam_all))
    fig = Figure(figsize=(3.4 * len(items) + 1, 3.2), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(items)))
    for ax, (rid, (steps, w, lam)) in zip(axes, items):
        w = np.asarray(w, dtype=float)
        x = w - w.mean(0)
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        proj = u[:, :2] * s[:2]
        if proj.shape[1] < 2:
            proj = np.c_[proj, np.zeros(len(proj))]
        ax.plot(proj[:, 0], proj[:, 1], color="grey", lw=0.5)
        sc = ax.scatter(proj[:, 0], proj[:, 1], c=lam, cmap="plasma", norm=norm, s=14)
        ax.set(title=str(rid), xlabel="PC1", ylabel="PC2")
    fig.colorbar(sc, ax=list(axes), label="λ_K¹")
    return fig


def fig_max_vs_hparams(table: SweepTable, sources: Sources | None = None, peak_eps: float = 0.05) -> Figure | None:
    """Max λ_H¹ and max λ_K¹ (per example, and in the mini-batch unit when
    logged) over the whole run against η (one line per S) and against S (one
    line per η). Filled markers: peak reached; hollow: not reached (not comparable)."""
    keys = [k for k in ("hessian/top", "gradcov/top", "gradcov_mb/top") if table.has(k)]
    runs = table.finished()
    if not keys or LR not in runs or BATCH not in runs:
        return None
    fig = Figure(figsize=(8, 3.2 * len(keys)), dpi=DPI, layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(keys), 2))
    for row, key in zip(axes, keys):
        recs = []
        for _, r in runs.iterrows():
            s = table.series(r["run_id"], key)
            if len(s):
                recs.append({LR: r[LR], BATCH: r[BATCH], "max": float(np.nanmax(s.to_numpy())),
                             "peak": peak_reached(s.sort_index().to_numpy(), peak_eps)})
        df = pd.DataFrame(recs)
        if df.empty:
            continue
        for ax, (x, line) in zip(row, ((LR, BATCH), (BATCH, LR))):
            color, _ = lr_colors(df[LR]) if line == LR else (None, None)
            for i, (lv, g) in enumerate(df.groupby(line)):
                c = color(lv) if color else f"C{i}"
                mean = g[g["peak"]].groupby(x)["max"].mean()
                ax.plot(mean.index, mean.to_numpy(), "-", color=c,
                        label=f"{'S' if line == BATCH else 'η'}={lv:g}")
                ax.scatter(g.loc[g["peak"], x], g.loc[g["peak"], "max"], color=c, s=14)
                ax.scatter(g.loc[~g["peak"], x], g.loc[~g["peak"], "max"], facecolors="none",
                           edgecolors=c, s=14)
            ax.set(xscale="log", yscale="log", xlabel="η" if x == LR else "S",
                   ylabel=f"max {SYMBOL[key]} ({key})")
            ax.legend(fontsize=6)
    return fig


def fig_stability(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """How close each trial comes to the stability limit along e_H¹: ηλ_H¹ over
    its limit 1 + √(1 − c), c = `sgd_noise/noise_term` (1 when c ≥ 1), against
    the step, one panel per S, coloured by η; at or above 1 the stability
    detector fires. Dotted: the full-batch ratio ηλ_H¹ / 2."""
    if not table.has("hessian/lr_x_top", "sgd_noise/noise_term"):
        return None
    runs = table.finished()
    if runs.empty or BATCH not in runs:
        return None
    sizes = sorted(runs[BATCH].dropna().unique())
    color, sm = lr_colors(runs[LR] if LR in runs else [])
    fig = Figure(figsize=(4.2 * len(sizes) + 1, 3.4), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(sizes), sharey=True))
    for ax, size in zip(axes, sizes):
        for _, r in runs[runs[BATCH] == size].iterrows():
            x = table.series(r["run_id"], "hessian/lr_x_top").sort_index()
            c = table.series(r["run_id"], "sgd_noise/noise_term").reindex(x.index)
            limit = 1 + np.sqrt(np.clip(1 - c.to_numpy(float), 0, None))
            steps = x.index.to_numpy(float) + 1
            col = color(r[LR]) if LR in r else None
            ax.plot(steps, x.to_numpy(float) / limit, "-", lw=1, color=col, alpha=0.8)
            ax.plot(steps, x.to_numpy(float) / 2, ":", lw=0.8, color=col, alpha=0.6)
        ax.axhline(1, color="grey", lw=0.8)
        ax.set(xscale="log", xlabel="step + 1", title=f"S = {size:g}")
    axes[0].set_ylabel("ηλ_H¹ / stability limit")
    fig.colorbar(sm, ax=list(axes), label="η")
    return fig


def fig_pca(table: SweepTable, sources: Sources | None = None, max_runs: int = 4) -> Figure | None:
    """Fig. 7/8 from the sweep: the weight snapshots (`probes.snapshots: true`)
    of up to `max_runs` finished trials of the first seed, ordered by batch size
    then learning rate, with λ_K¹ at the same steps. None without snapshots."""
    runs = table.finished()
    if sources is None or runs.empty or "probes.snapshots" not in runs or not runs["probes.snapshots"].any():
        return None
    runs = runs[runs["seed"] == runs["seed"].min()]
    runs = runs.sort_values([BATCH, LR]).head(max_runs)
    trajectories = {}
    for _, row in runs.iterrows():
        snaps = sources.probe_arrays(row["run_id"], "weights")
        lam = table.series(row["run_id"], "gradcov/top")
        steps = [s for s in snaps if s in lam.index]
        if len(steps) >= 3:
            label = f"η={row[LR]:g}, S={row[BATCH]}"
            trajectories[label] = (np.array(steps), np.stack([snaps[s] for s in steps]),
                                   lam.loc[steps].to_numpy())
    return fig_pca_trajectories(trajectories, max_runs)


# --------------------------------------------------------------- registry
BREAKEVEN_STEPS_CSV = "breakeven_steps.csv"
EXPERIMENT = register(Experiment(
    name="breakeven",
    title="The break-even point (Jastrzebski et al. 2020)",
    conjectures={"breakeven.c1_lr": c1_lr, "breakeven.c1_batch": c1_batch,
                 "breakeven.c2_lr": c2_lr, "breakeven.c2_batch": c2_batch},
    figures={"breakeven_fig6_spectra.png": fig_spectra,
             "breakeven_max_vs_hparams.png": fig_max_vs_hparams,
             "breakeven_fig7_pca.png": fig_pca,
             "breakeven_stability.png": fig_stability},
    tables={BREAKEVEN_STEPS_CSV: breakeven_steps},
    specs=("breakeven.yaml", "breakeven-cifar.yaml"),
    plans=PLANS,
))
