"""Frequency principle (Xu, Zhang, Xiao 2019; Rahaman et al. 2019): networks
fit the low frequencies of the target first.

The probe projects each probe input on the first principal direction of the
training inputs, takes the nonuniform DFT of the labels and of the network's
outputs along that projection, tracks the first `probes.frequencies` peaks of
|F[y](k)| in increasing frequency, and logs at each probe step
Δ_F(k_i) = ‖F[y](k_i) − F[T](k_i)‖ / ‖F[y](k_i)‖ as `freq/delta_k{i}`
(i = 0 is the lowest tracked frequency).

- `frequency.low_first`: per trial, the convergence step of frequency i is the
  first probe step from which Δ_F(k_i) stays below `threshold` (default 0.1)
  for `hold` consecutive probe steps (default 3; fewer only where the run
  ends). `hold=1` is the first crossing, which a chance dip fakes (a sine1d
  pilot with Adam at η = 1e-3 touched Δ_F(k_0) = 0.02 at step 1);
  `hold=None` asks Δ_F to stay below until the end, which a late loss spike
  undoes (a pilot at η = 3e-4 put k_0 at step 1990 of 3000 that way). Kendall's
  τ_b between the frequency rank i and the convergence step is > 0 when
  lower frequencies converge earlier. A frequency that never converges is
  ranked after every one that did (`unreached="last"`, tied with the other
  unreached ones) or dropped (`unreached="drop"`); either way the unreached
  ones are counted per rank in `details`. A trial whose τ is undefined (fewer
  than two distinct convergence steps, e.g. nothing converged) is excluded and
  counted. The per-trial τ are judged by the one-sample sign-flip test of
  their mean (`paired_sign_flip`, predicted > 0), one verdict per arm (data
  set / model) when the sweep has several: arms differ too much to pool.

Plan (`PLANS`, one plan for every arm's verdict): the arms are the Holm
family `frequency`; alpha 0.05; threshold, `hold` and `unreached` are plan
options. `min_n` 7 per arm: the exact sign-flip p cannot go below 2/2ⁿ, and
Holm's first rejection over the shipped specs' 3 (local) or 2 (cluster) arms
needs p < 0.0167 or 0.025, so n ≥ 7 (2/128 = 0.0156); 6 seeds suffice only
for a single arm. Effect of interest: mean τ 0.5, i.e. three quarters of
the frequency pairs converging in the predicted order.

Filter variant (e_low, e_high of Gaussian-smoothed labels): drawn when the
probe logs `freq/e_low_w{j}` and `freq/e_high_w{j}` (kernel width j).
"""
from __future__ import annotations

import math
import re
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweeps.conjectures.inference import sign_flip_test
from sweeps.conjectures.plan import AnalysisPlan
from sweeps.conjectures.verdict import N_BOOT, N_PERM, Verdict, verdict_of
from sweeps.experiments.registry import Experiment, Plans, Sources, conjecture, register
from sweeps.table import SweepTable
from sweeps.plotting import DPI

DELTA = re.compile(r"^freq/delta_k(\d+)$")
E_LOW, E_HIGH = re.compile(r"^freq/e_low_w(\d+)$"), re.compile(r"^freq/e_high_w(\d+)$")
THRESHOLD = 0.1
PLANS = {
    "frequency.low_first": AnalysisPlan(
        conjecture="frequency.low_first", metric="freq/delta_k", statistic="paired_sign_flip",
        predicted_sign=+1, family="frequency", exclusions=("unfinished", "tau_undefined"),
        min_n=7, min_per_stratum=1, effect_of_interest=0.5,
        options={"threshold": THRESHOLD, "hold": 3, "unreached": "last",
                 "value": "per-trial Kendall tau_b between frequency rank and convergence step",
                 "parts": "one verdict per arm (data.dataset/model.name)",
                 "arm_fields": ["data.dataset", "model.name"]},
        statement="low frequencies converge first (per-trial Kendall τ between frequency rank "
                  "and convergence step is > 0 on average)"),
}


def delta_keys(table: SweepTable, pattern: re.Pattern = DELTA) -> list[str]:
    """The logged keys matching `pattern`, ordered by their index (frequency rank)."""
    keys = [k for k in table.metrics["key"].unique() if pattern.match(str(k))]
    return sorted(keys, key=lambda k: int(pattern.match(k).group(1)))


# ------------------------------------------------------------- per trial
def convergence_step(steps: np.ndarray, values: np.ndarray, threshold: float = THRESHOLD,
                     hold: int | None = 3) -> float:
    """The first step from which values stay below threshold for `hold`
    consecutive measurements (all the remaining ones when fewer are left;
    `hold=None`: until the end); NaN if never. Non-finite values are not below."""
    v = np.asarray(values, dtype=float)
    below = np.isfinite(v) & (v < threshold)
    n = len(below)
    for i in np.flatnonzero(below):
        end = n if hold is None else min(n, i + hold)
        if below[i:end].all():
            return float(np.asarray(steps)[i])
    return math.nan


def kendall_tau(x: Any, y: Any) -> float:
    """Kendall's τ_b (ties in either variable corrected for); NaN when either
    variable is constant. Pairs with a non-finite value are dropped."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    n1, n2 = np.sum(sx == 0), np.sum(sy == 0)
    den = math.sqrt((n0 - n1) * (n0 - n2))
    return float(np.sum(sx * sy) / den) if den > 0 else math.nan


def trial_convergence(table: SweepTable, threshold: float = THRESHOLD,
                      unreached: Literal["last", "drop"] = "last",
                      hold: int | None = 3) -> pd.DataFrame:
    """One row per trial: convergence step of each tracked frequency
    (`step_k{i}`, NaN: never below threshold, `unreached_k{i}` True, or not
    tracked by this trial), how many tracked ones never converged, and τ between rank and convergence
    step under the `unreached` rule. A trial tracks the frequencies it logged
    (arms of one sweep may track different numbers of peaks)."""
    keys = delta_keys(table)
    rows = []
    for _, r in table.runs.iterrows():
        rid = r["run_id"]
        row: dict[str, Any] = {"run_id": rid, "status": r["status"], "seed": r["seed"]}
        ranks, conv, last = [], [], -math.inf
        for key in keys:
            i = int(DELTA.match(key).group(1))
            s = table.series(rid, key).sort_index()
            row[f"step_k{i}"], row[f"unreached_k{i}"] = math.nan, False
            if s.empty:
                continue
            last = max(last, float(s.index.max()))
            row[f"step_k{i}"] = convergence_step(s.index.to_numpy(), s.to_numpy(float), threshold, hold)
            row[f"unreached_k{i}"] = bool(np.isnan(row[f"step_k{i}"]))
            ranks.append(float(i))
            conv.append(row[f"step_k{i}"])
        conv = np.asarray(conv, dtype=float)
        row["n_tracked"], row["n_unreached"] = len(conv), int(np.isnan(conv).sum())
        if unreached == "last":
            conv = np.where(np.isnan(conv), last + 1, conv)
        row["tau"] = kendall_tau(ranks, conv) if len(conv) >= 2 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------- conjecture
@conjecture(PLANS)
def low_first(table: SweepTable, plans: Plans, *,
              n_perm: int = N_PERM, n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Low frequencies converge first: per-trial Kendall τ between frequency
    rank and its convergence step is positive on average, per arm.

    The threshold, `hold` and the `unreached` rule are the plan's options
    (change them with `plan.with_overrides(options=...)`: exploratory)."""
    (plan,) = plans.values()
    threshold, unreached = float(plan.options["threshold"]), plan.options["unreached"]
    hold = plan.options["hold"]
    held = "until the end" if hold is None else f"for {hold} probe steps"
    statement = (f"low frequencies converge first (Kendall τ between frequency rank and the step "
                 f"from which Δ_F(k) < {threshold:g} {held} is > 0; unreached: {unreached})")
    if unreached not in ("last", "drop"):
        raise ValueError(f"unreached must be 'last' or 'drop', got {unreached!r}")
    runs, excluded = table.usable()
    keys = delta_keys(table)
    if len(keys) < 2:
        return [verdict_of(plan, None, statement=statement, n=0, **excluded,
                           reason=f"fewer than 2 freq/delta_k* metrics were logged "
                                  f"({len(keys)}; switch on probes.frequency)")]
    conv = trial_convergence(table, threshold, unreached, hold).set_index("run_id")
    arms = _arms(runs.set_index("run_id"), plan.options["arm_fields"])
    out = []
    for arm in sorted(arms.unique()):
        c = conv.loc[arms.index[arms == arm]]
        ranks = [k[5:] for k in c.columns if k.startswith("step_k")]
        details = {**excluded, "arm": arm, "threshold": threshold, "unreached": unreached,
                   "hold": hold, "frequencies": int(c["n_tracked"].max()),
                   "unreached_per_rank": {k: int(c[f"unreached_{k}"].sum()) for k in ranks},
                   "excluded_tau_undefined": int(c["tau"].isna().sum()),
                   "fraction_tau_positive": float((c["tau"] > 0).mean())}
        vname = plan.conjecture if arms.nunique() == 1 else f"{plan.conjecture}[{arm}]"
        res = sign_flip_test(c["tau"].to_numpy(float), n_perm=n_perm, n_boot=n_boot,
                             rng_seed=rng_seed, alpha=plan.alpha, bounds=(-1.0, 1.0))   # τ's range
        out.append(verdict_of(plan, res, name=vname, statement=statement, **details))
    return out


# ------------------------------------------------------------------ figures
ARM_FIELDS = tuple(PLANS["frequency.low_first"].options["arm_fields"])


def _arms(runs: pd.DataFrame, fields: Any = ARM_FIELDS) -> pd.Series:
    """An arm label per trial, `<data set>/<model>` from the columns present ("all" if none)."""
    cols = [c for c in fields if c in runs.columns]
    if not cols:
        return pd.Series("all", index=runs.index)
    return runs[cols].astype(str).agg("/".join, axis=1)


def _first_per_arm(table: SweepTable, max_panels: int) -> list[tuple[str, str]]:
    runs = table.finished()
    if runs.empty:
        return []
    runs = runs.assign(_arm=_arms(runs)).sort_values("seed")
    first = runs.groupby("_arm", sort=True).head(1)
    return list(zip(first["_arm"], first["run_id"]))[:max_panels]


def fig_heatmap(table: SweepTable, sources: Sources | None = None, max_panels: int = 4) -> Figure | None:
    """Paper Fig. 9: Δ_F over (probe step, frequency rank), first seed of each arm."""
    keys = delta_keys(table)
    panels = _first_per_arm(table, max_panels)
    if not keys or not panels:
        return None
    fig = Figure(figsize=(3.6 * len(panels) + 0.8, 3.0), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    for ax, (arm, rid) in zip(axes, panels):
        frame = pd.concat([table.series(rid, k).rename(i) for i, k in enumerate(keys)], axis=1)
        frame = frame.sort_index()
        x = np.maximum(frame.index.to_numpy(float), 1.0)
        mesh = ax.pcolormesh(x, np.arange(len(keys)), frame.to_numpy(float).T, shading="nearest",
                             cmap="viridis", vmin=0, vmax=1)
        ax.set(xscale="log", xlabel="step", ylabel="frequency rank i", title=arm,
               yticks=range(len(keys)))
    fig.colorbar(mesh, ax=list(axes), label="Δ_F(k_i)")
    return fig


def fig_curves(table: SweepTable, sources: Sources | None = None, threshold: float = THRESHOLD) -> Figure | None:
    """Δ_F(k_i) against step, mean over seeds, one panel per arm; dotted: threshold."""
    keys = delta_keys(table)
    runs = table.finished()
    if not keys or runs.empty:
        return None
    runs = runs.assign(_arm=_arms(runs))
    arms = sorted(runs["_arm"].unique())
    fig = Figure(figsize=(3.6 * len(arms), 3.0), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(arms), squeeze=False)[0])
    m = table.metrics
    for ax, arm in zip(axes, arms):
        ids = runs.loc[runs["_arm"] == arm, "run_id"]
        for i, key in enumerate(keys):
            mean = m[(m["key"] == key) & m["run_id"].isin(ids)].groupby("step")["value"].mean()
            ax.plot(np.maximum(mean.index.to_numpy(float), 1.0), mean.to_numpy(), lw=1,
                    color=f"C{i}", label=f"k{i}")
        ax.axhline(threshold, color="grey", ls=":", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="step", ylabel="Δ_F", title=arm)
    axes[0].legend(fontsize=6)
    return fig


def fig_low_high(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Filter variant: e_low (solid) and e_high (dashed) over steps per kernel
    width, first finished trial; None unless `freq/e_low_w*` were logged."""
    low, high = delta_keys(table, E_LOW), delta_keys(table, E_HIGH)
    runs = table.finished()
    if not low or runs.empty:
        return None
    rid = runs.sort_values("seed").iloc[0]["run_id"]
    fig = Figure(figsize=(5, 3.4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for i, key in enumerate(low):
        s = table.series(rid, key).sort_index()
        ax.plot(np.maximum(s.index.to_numpy(float), 1), s.to_numpy(float), color=f"C{i}",
                label=f"e_low w{i}")
    for i, key in enumerate(high):
        s = table.series(rid, key).sort_index()
        ax.plot(np.maximum(s.index.to_numpy(float), 1), s.to_numpy(float), "--", color=f"C{i}",
                label=f"e_high w{i}")
    ax.set(xscale="log", yscale="log", xlabel="step", ylabel="relative error")
    ax.legend(fontsize=6)
    return fig


# ------------------------------------------------------------------- tables
def convergence_table(table: SweepTable) -> pd.DataFrame | None:
    """Per trial: convergence step of each tracked frequency, unreached count, τ."""
    return trial_convergence(table) if delta_keys(table) else None


# ----------------------------------------------------------------- registry
EXPERIMENT = register(Experiment(
    name="frequency",
    title="Frequency principle (Xu, Zhang, Xiao 2019; Rahaman et al. 2019)",
    conjectures=[low_first],
    figures={"frequency_fig9_heatmap.png": fig_heatmap,
             "frequency_delta_curves.png": fig_curves,
             "frequency_low_high.png": fig_low_high},
    tables={"frequency_convergence.csv": convergence_table},
    specs=("frequency.yaml", "frequency-cluster.yaml"),
))
