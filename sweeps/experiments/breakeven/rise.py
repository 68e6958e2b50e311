"""Rise and saturation of the spectra (the paper's Fig. 6), and whether the cadence saw it.

`breakeven.rise_saturate` (plans in `plans.py`, `RISE_OPTIONS`): per trial,
λ (λ_K¹ or λ_H¹) reaches its peak early and then stays up. Its parts, each a
pure function of one logged series so that they can be checked by hand:

- `smoothed`: the running median over `smooth` consecutive measurements
  (centred, shorter at the ends). Single probes of λ_K¹ jump by factors 2–5
  between neighbours once SGD oscillates (the design pilot), so a raw
  maximum is a spike, not the level the rise reached.
- `peak_step`: the first probe step at which the smoothed series reaches
  (1 − peak_tol) × its maximum. On a noisy plateau the argmax is wherever
  the noise put it; the first step near the maximum is where the rise ended.
- `rise_saturates`: success when that step is at most early_frac × the
  trial's last probe step and the median of the later raw measurements (at
  least min_after of them) lies within band × the smoothed maximum.
- `cadence`: measurements strictly before the break-even step (saturation
  detector on raw λ_K¹, the plan's detector settings) and strictly after the
  peak step of λ_K¹ — what the manipulation check `cadence_resolves_rise`
  counts: the claim is only tested when the probes resolved the rise. The
  count after the raw argmax is kept beside it (`n_after_argmax`).

The share of successes is tested against p0 by the exact binomial test.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from sweeps.conjectures.inference import sign_test
from sweeps.conjectures.verdict import Verdict, verdict_of
from sweeps.experiments.registry import Plans, conjecture
from sweeps.experiments.breakeven.analysis import saturation_step
from sweeps.experiments.breakeven.plans import BATCH, LR, PLANS, RISE_KEYS, RISE_OPTIONS
from sweeps.table import SweepTable


def _finite(steps: Any, values: Any) -> tuple[np.ndarray, np.ndarray]:
    s, v = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    order = np.argsort(s, kind="stable")
    s, v = s[order], v[order]
    keep = np.isfinite(v)
    return s[keep], v[keep]


def smoothed(values: Any, smooth: int) -> np.ndarray:
    """Running median over `smooth` measurements, centred (shorter at the ends)."""
    v, h = np.asarray(values, dtype=float), int(smooth) // 2
    return np.array([np.median(v[max(0, i - h):i + h + 1]) for i in range(v.size)])


def peak_step(steps: Any, values: Any, tol: float, smooth: int = 1) -> float:
    """First step where the smoothed series reaches (1 − tol) × its maximum; NaN if empty."""
    s, v = _finite(steps, values)
    if not v.size:
        return float("nan")
    sm = smoothed(v, smooth)
    return float(s[np.argmax(sm >= (1 - tol) * sm.max())])


def rise_saturates(steps: Any, values: Any, *, peak_tol: float, smooth: int, early_frac: float,
                   band: tuple[float, float] | list[float], min_after: int) -> dict[str, Any]:
    """The rise-and-saturation outcome of one series (see the module docstring).

    Returns peak_step, last_step, n_after (measurements after the peak step),
    level (median after the peak step / smoothed maximum; NaN with none), early,
    in_band and success (early and in_band, with at least min_after later
    measurements).
    """
    s, v = _finite(steps, values)
    if not v.size:
        return {"peak_step": np.nan, "last_step": np.nan, "n_after": 0, "level": np.nan,
                "early": False, "in_band": False, "success": False}
    top, at = float(smoothed(v, smooth).max()), peak_step(s, v, peak_tol, smooth)
    after = v[s > at]
    level = float(np.median(after) / top) if after.size and top > 0 else float("nan")
    early = bool(at <= early_frac * s[-1])
    in_band = bool(after.size >= min_after and band[0] <= level <= band[1])
    return {"peak_step": at, "last_step": float(s[-1]), "n_after": int(after.size),
            "level": level, "early": early, "in_band": in_band, "success": early and in_band}


def cadence(steps: Any, values: Any, breakeven_step: float, peak: float) -> tuple[int, int, int]:
    """(measurements before the break-even step, after the peak step, after the raw argmax)."""
    s, v = _finite(steps, values)
    if not v.size:
        return 0, 0, 0
    before = int((s < breakeven_step).sum()) if np.isfinite(breakeven_step) else 0
    after = int((s > peak).sum()) if np.isfinite(peak) else 0
    return before, after, int(v.size - 1 - int(np.argmax(v)))


def rise_table(table: SweepTable, key: str, options: Mapping[str, Any]) -> pd.DataFrame:
    """Per finished trial: its rise-and-saturation outcome on `key` and the cadence on λ_K¹."""
    o = options
    runs, _ = table.usable()
    rows = []
    for rid in runs["run_id"]:
        h = table.series(rid, key).sort_index()
        k = table.series(rid, o["breakeven_key"]).sort_index()
        be = saturation_step(k.index.to_numpy(), k.to_numpy(float), o["peak_eps"],
                             o["breakeven_window"]) if len(k) else float("nan")
        k_peak = peak_step(k.index.to_numpy(), k.to_numpy(float), o["peak_tol"], o["smooth"])
        before, after, after_max = cadence(k.index.to_numpy(), k.to_numpy(float), be, k_peak)
        out = rise_saturates(h.index.to_numpy(), h.to_numpy(float), peak_tol=o["peak_tol"],
                             smooth=o["smooth"], early_frac=o["early_frac"], band=o["band"],
                             min_after=o["min_after"])
        rows.append({"run_id": rid, "logged": bool(len(h)), **out, "breakeven_step": be,
                     "n_before_breakeven": before, "n_after_peak": after,
                     "n_after_argmax": after_max,
                     "cadence_ok": before >= o["min_before"] and after >= o["min_after"]})
    cols = ["run_id", "logged", "peak_step", "last_step", "n_after", "level", "early", "in_band",
            "success", "breakeven_step", "n_before_breakeven", "n_after_peak", "n_after_argmax",
            "cadence_ok"]
    return pd.DataFrame(rows, columns=cols)


def cadence_check(df: pd.DataFrame, options: Mapping[str, Any]) -> tuple[bool, str]:
    """The manipulation check `cadence_resolves_rise` on a `rise_table`."""
    n, ok = len(df), int(df["cadence_ok"].sum()) if len(df) else 0
    share = ok / n if n else 0.0
    return share >= options["min_share"], (
        f"{ok} of {n} trials had ≥ {options['min_before']} measurements before the break-even "
        f"step and ≥ {options['min_after']} after the peak of λ_K¹ ({share:.0%}; "
        f"needed {options['min_share']:.0%})")


@conjecture(PLANS)
def rise_saturate(table: SweepTable, plans: Plans, *, n_perm: int = 0, n_boot: int = 0,
                  rng_seed: int = 0) -> list[Verdict]:
    """λ_K¹ and λ_H¹ peak early and stay within a band of the peak, in most trials.

    The sign test is exact: the resampling options every conjecture takes
    (n_perm, n_boot, rng_seed) are accepted and unused.
    """
    out = []
    for vname, plan in plans.items():
        o = plan.options
        df = rise_table(table, plan.metric, o)
        _, excluded = table.usable()
        checks = {"cadence_resolves_rise": cadence_check(df, o)}
        seen = df[df["logged"]]
        base = {**excluded, "metric": plan.metric, "peak_tol": o["peak_tol"],
                "early_frac": o["early_frac"], "band": list(o["band"]),
                "n_early": int(seen["early"].sum()), "n_in_band": int(seen["in_band"].sum()),
                "median_peak_step": float(seen["peak_step"].median()) if len(seen) else None,
                "median_level": float(seen["level"].median()) if len(seen) else None,
                "n_cadence_ok": int(df["cadence_ok"].sum()),
                "n_3_after_raw_argmax": int((df["n_after_argmax"] >= o["min_after"]).sum())}
        if seen.empty:
            out.append(verdict_of(plan, None, checks=checks, name=vname, n=0, **base,
                                  reason=f"{plan.metric} was not logged"))
            continue
        res = sign_test(seen["success"].tolist(), p0=float(o["p0"]), alpha=plan.alpha)
        out.append(verdict_of(plan, res, checks=checks, name=vname, **base))
    return out


def rise_steps(table: SweepTable) -> pd.DataFrame | None:
    """Table `breakeven_rise.csv`: `rise_table` of λ_K¹ and λ_H¹ under the registered
    options, one row per trial and key, with η, S and seed."""
    frames = []
    for key in RISE_KEYS:
        df = rise_table(table, key, RISE_OPTIONS)
        frames.append(df.assign(key=key))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if out.empty:
        return None
    runs = table.runs.set_index("run_id")
    cols = [c for c in (LR, BATCH, "seed") if c in runs.columns]
    return out.join(runs[cols], on="run_id")
