"""Break-even point (Jastrzebski et al., ICLR 2020): conjectures 1 and 2.

Conjecture 1: the maximum attained λ_H¹ (`hessian/top`) and λ_K¹
(`gradcov/top`) are smaller for a larger learning rate η or a smaller batch
size S. Conjecture 2: the maximum attained Tr(K)/λ_K¹
(`gradcov/trace_over_top`) is larger, and the maximum Tr(K) (`gradcov/trace`,
and Tr(H) `hessian/trace` when measured) smaller, for larger η or smaller S.
Each is judged separately along the η axis (within each batch size and any
other varying config field) and along the S axis (within each η).

Protocol trap (SCIENCE §1): a trajectory that has not yet passed its peak has
no "maximum attained" to compare. A trial enters a comparison only if its
peak was reached: the argmax is not the last measurement and the last value is
below (1 - peak_eps) x the maximum. Excluded trials are counted in `details`;
with fewer than `min_trials` left the verdict is inconclusive. Trials that are
not `finished` (diverged, errored, running) are never compared.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sweeps.conjectures.verdict import (ALPHA, N_BOOT, N_PERM, Verdict, inconclusive,
                                        metric_frame, param, trend_test, usable_runs)

LR, BATCH = "optim.lr", "train.batch_size"
AXES = {"lr": (LR, "η"), "batch": (BATCH, "S")}
SYMBOL = {"hessian/top": "λ_H¹", "gradcov/top": "λ_K¹", "gradcov/trace": "Tr(K)",
          "gradcov/trace_over_top": "Tr(K)/λ_K¹", "hessian/trace": "Tr(H)"}
# predicted sign of d(max metric)/d(lr); along batch size it is the opposite.
C1_SIGNS = {"hessian/top": -1, "gradcov/top": -1}
C2_SIGNS = {"gradcov/trace_over_top": +1, "gradcov/trace": -1, "hessian/trace": -1}
C2_OPTIONAL = ("hessian/trace",)   # judged only when the sweep measured it


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
    """Saturation detector: first step after which the running max grows by less
    than eps (relative) over the next `window` measurements; NaN if none.

    Same rule as `dynamics_core.probes.saturation_breakeven` (used when
    available). It says when the growth stalled; whether the peak was passed
    (the filter for comparing maxima) is `peak_reached`.
    """
    core = _core("saturation_breakeven")
    if core is not None:
        step, reached = core(list(np.asarray(steps)), np.asarray(values, dtype=float), window, eps)
        return float(step) if reached and step is not None else float("nan")
    v = np.asarray(values, dtype=float)
    run = np.maximum.accumulate(np.where(np.isnan(v), -np.inf, v)) if v.size else v
    for t in range(v.size - window):
        if np.isfinite(run[t]) and run[t + window] - run[t] <= eps * abs(run[t]):
            return float(np.asarray(steps)[t])
    return float("nan")


def _core(name: str):
    """A break-even detector from `dynamics_core.probes`, or None when unavailable."""
    try:
        from dynamics_core import probes
    except Exception:  # noqa: BLE001 - core not importable here (e.g. no torch)
        return None
    return getattr(probes, name, None)


def stability_step(steps: np.ndarray, lam_h: np.ndarray, lr: np.ndarray | float) -> float:
    """First step where λ_H¹ ≥ 2/η (full-batch stability bound); NaN if never.

    Uses `dynamics_core.probes.stability_breakeven` when the core is
    importable, so the service and the probes share one definition.
    """
    core = _core("stability_breakeven")
    if core is not None:
        lam = np.asarray(lam_h, dtype=float)
        out = core(list(np.asarray(steps)), lam, np.broadcast_to(np.asarray(lr, float), lam.shape))
        return float("nan") if out is None else float(out)
    lam = np.asarray(lam_h, dtype=float)
    eta = np.broadcast_to(np.asarray(lr, dtype=float), lam.shape)
    hit = np.flatnonzero(np.isfinite(lam) & (lam * eta >= 2.0))
    return float(np.asarray(steps)[hit[0]]) if hit.size else float("nan")


def _metric_rows(table: Any, key: str) -> pd.DataFrame:
    rows = metric_frame(table, key)
    if len(rows) or key != "gradcov/trace_over_top":
        return rows
    # derive Tr(K)/λ_K¹ from its parts when the probe did not log the ratio
    tr, top = metric_frame(table, "gradcov/trace"), metric_frame(table, "gradcov/top")
    both = tr.merge(top, on=["run_id", "step"], suffixes=("_tr", "_top"))
    both = both.assign(key=key, value=both["value_tr"] / both["value_top"])
    return both[["run_id", "key", "step", "value"]]


def trial_maxima(table: Any, key: str, peak_eps: float = 0.05) -> pd.DataFrame:
    """Per run: max of `key`, the step of the max, the last step, whether the peak was reached."""
    out = []
    for run_id, g in _metric_rows(table, key).groupby("run_id", sort=True):
        v, s = g["value"].to_numpy(float), g["step"].to_numpy()
        fin = np.isfinite(v)
        if not fin.any():
            continue
        i = int(np.argmax(np.where(fin, v, -np.inf)))
        out.append({"run_id": run_id, "max": float(v[i]), "argmax_step": s[i],
                    "last_step": s[fin][-1], "peak_reached": peak_reached(v, peak_eps)})
    cols = ["run_id", "max", "argmax_step", "last_step", "peak_reached"]
    return pd.DataFrame(out, columns=cols).set_index("run_id")


def breakeven_steps(table: Any, peak_eps: float = 0.05, window: int = 3) -> pd.DataFrame:
    """Per trial break-even step by both detectors, and whether each peak was reached.

    Columns: run_id, status, optim.lr, train.batch_size, seed, stability_step
    (first λ_H¹ ≥ 2/η, with η from the logged `lr` when present),
    saturation_step_gradcov / saturation_step_hessian (running max of λ_K¹ /
    λ_H¹ grows < peak_eps over `window` measurements), peak_reached_gradcov /
    peak_reached_hessian (the trajectory passed its maximum: `peak_reached`).
    """
    runs = table.runs
    rows = []
    for _, r in runs.iterrows():
        rid = r["run_id"]
        row = {"run_id": rid, "status": r["status"], LR: r.get(LR, np.nan),
               BATCH: r.get(BATCH, np.nan), "seed": r["seed"]}
        h = table.series(rid, "hessian/top").sort_index()
        lr_log = table.series(rid, "lr").sort_index()
        if len(h) and len(lr_log):
            eta = np.interp(h.index.to_numpy(float), lr_log.index.to_numpy(float),
                            lr_log.to_numpy(float))
        else:
            eta = float(r.get(LR, np.nan))
        row["stability_step"] = stability_step(h.index.to_numpy(), h.to_numpy(), eta) if len(h) else np.nan
        for short, key in (("gradcov", "gradcov/top"), ("hessian", "hessian/top")):
            s = table.series(rid, key).sort_index()
            row[f"saturation_step_{short}"] = saturation_step(s.index.to_numpy(), s.to_numpy(),
                                                              peak_eps, window)
            row[f"peak_reached_{short}"] = peak_reached(s.to_numpy(), peak_eps)
        rows.append(row)
    return pd.DataFrame(rows)


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


def _judge_axis(table: Any, name: str, signs: dict[str, int], axis: str, *,
                optional: tuple[str, ...] = (), peak_eps: float = 0.05, min_trials: int = 4,
                alpha: float = ALPHA, n_perm: int = N_PERM, n_boot: int = N_BOOT,
                rng_seed: int = 0, strata: list[str] | None = None) -> list[Verdict]:
    col, sym = AXES[axis]
    runs, excluded = usable_runs(table.runs)
    held = _strata_columns(runs, col, strata)
    held_txt = ", ".join(held) if held else "nothing else varies"
    verdicts = []
    for key, sign_lr in signs.items():
        sign = sign_lr if axis == "lr" else -sign_lr
        more = "larger" if sign > 0 else "smaller"
        direction = "larger η" if axis == "lr" else "smaller S"
        sym_k = SYMBOL.get(key, key)
        statement = (f"max {sym_k} ({key}) is {'larger' if sign_lr > 0 else 'smaller'} for "
                     f"{direction} (i.e. {more} for larger {sym}; held fixed: {held_txt})")
        vname = f"{name}[{key}]"
        maxima = trial_maxima(table, key, peak_eps)
        if maxima.empty and key in optional:
            continue
        base = {"metric": key, "axis": col, "strata": held, **excluded, "peak_eps": peak_eps}
        if maxima.empty:
            verdicts.append(inconclusive(vname, statement, f"{key} was not logged", **base))
            continue
        if col not in runs.columns:
            verdicts.append(inconclusive(vname, statement, f"no column {col}", **base))
            continue
        df = runs.set_index("run_id").join(maxima, how="inner")
        n_no_peak = int((~df["peak_reached"].astype(bool)).sum())
        df = df[df["peak_reached"].astype(bool)]
        base.update(excluded_peak_not_reached=n_no_peak,
                    excluded_no_data=int(len(runs) - len(df) - n_no_peak))
        if len(df) < min_trials:
            verdicts.append(inconclusive(
                vname, statement, f"only {len(df)} trials passed their peak (< {min_trials})",
                n=len(df), **base))
            continue
        x = param(df, col).to_numpy(float)
        groups = df[held].astype(str).agg("|".join, axis=1) if held else None
        res = trend_test(x, df["max"].to_numpy(float), groups, n_perm=n_perm, n_boot=n_boot,
                         rng_seed=rng_seed, alpha=alpha)
        means = df.assign(_x=x).groupby("_x")["max"].mean()
        verdicts.append(res.verdict(vname, statement, sign, alpha, **base,
                                    mean_max_by_level={float(k): float(v) for k, v in means.items()}))
    return verdicts


def c1_lr(table: Any, **options: Any) -> list[Verdict]:
    """Conjecture 1 along η: max λ_H¹ and max λ_K¹ smaller for larger η."""
    return _judge_axis(table, "breakeven.c1_lr", C1_SIGNS, "lr", **options)


def c1_batch(table: Any, **options: Any) -> list[Verdict]:
    """Conjecture 1 along S: max λ_H¹ and max λ_K¹ smaller for smaller S."""
    return _judge_axis(table, "breakeven.c1_batch", C1_SIGNS, "batch", **options)


def c2_lr(table: Any, **options: Any) -> list[Verdict]:
    """Conjecture 2 along η: max Tr(K)/λ_K¹ larger, max Tr(K) (Tr(H)) smaller for larger η."""
    return _judge_axis(table, "breakeven.c2_lr", C2_SIGNS, "lr", optional=C2_OPTIONAL, **options)


def c2_batch(table: Any, **options: Any) -> list[Verdict]:
    """Conjecture 2 along S: max Tr(K)/λ_K¹ larger, max Tr(K) (Tr(H)) smaller for smaller S."""
    return _judge_axis(table, "breakeven.c2_batch", C2_SIGNS, "batch", optional=C2_OPTIONAL, **options)


CONJECTURES = {"breakeven.c1_lr": c1_lr, "breakeven.c1_batch": c1_batch,
               "breakeven.c2_lr": c2_lr, "breakeven.c2_batch": c2_batch}
