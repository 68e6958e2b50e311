"""Break-even point (Jastrzebski et al., ICLR 2020): conjectures 1 and 2.

Conjecture 1: the maximum attained λ_H¹ (`hessian/top`) and λ_K¹
(`gradcov/top`) are smaller for a larger learning rate η or a smaller batch
size S; the maximum is over the whole run (the paper's statement).
Conjecture 2: the maximum attained Tr(K)/λ_K¹ (`gradcov/trace_over_top`) is
larger, and the maximum Tr(K) (`gradcov/trace`, and Tr(H) `hessian/trace`
when measured) smaller, for larger η or smaller S. The paper measures
conditioning along the trajectory, with its peaks after the break-even point;
at initialization the gradient covariance is nearly isotropic and Tr(K)/λ_K¹
is at its largest, so a max over the whole run measures the init, not η or S.
By default (`max_over="after_breakeven"`) the conjecture-2 maxima are
therefore taken over the measurements at or after each trial's break-even
step, found by the saturation detector on λ_K¹ (`breakeven_key`); trials
without a detected break-even step are excluded and counted
(`excluded_no_breakeven`). `max_over="all"` restores the whole-run maximum.
Each is judged separately along the η axis (within each batch size and any
other varying config field) and along the S axis (within each η).

Protocol trap (docs/science.md#break-even-point): a trajectory that has not yet passed its peak has
no "maximum attained" to compare. A trial enters a comparison only if its
peak was reached: the argmax is not the last measurement and the last value is
below (1 - peak_eps) x the maximum (within the window, for conjecture 2).
Excluded trials are counted in `details`; with fewer than `min_trials` left
the verdict is inconclusive. Trials that are not `finished` (diverged,
errored, running) are never compared.

Both break-even detectors are `dynamics_core.probes.stability_breakeven` and
`saturation_breakeven`: one rule, shared by the probes and the service.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

import numpy as np
import pandas as pd
from matplotlib import colors
from matplotlib.figure import Figure

from sweeps.conjectures.verdict import (ALPHA, N_BOOT, N_PERM, Verdict, inconclusive,
                                        metric_frame, param, trend_test, usable_runs)

from sweeps.experiments import Experiment, Sources, register
from sweeps.report import DPI, finished_runs, has_metrics, lr_colors

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


def stability_step(steps: np.ndarray, lam_h: np.ndarray, lr: np.ndarray | float) -> float:
    """First step where λ_H¹ ≥ 2/η (full-batch stability bound); NaN if never.

    The rule is `dynamics_core.probes.stability_breakeven`, shared with the probes.
    """
    from dynamics_core.probes.breakeven import stability_breakeven

    lam = np.asarray(lam_h, dtype=float)
    out = stability_breakeven(list(np.asarray(steps)), lam,
                              np.broadcast_to(np.asarray(lr, float), lam.shape))
    return float("nan") if out is None else float(out)


def _metric_rows(table: Any, key: str) -> pd.DataFrame:
    rows = metric_frame(table, key)
    if len(rows) or key != "gradcov/trace_over_top":
        return rows
    # derive Tr(K)/λ_K¹ from its parts when the probe did not log the ratio
    tr, top = metric_frame(table, "gradcov/trace"), metric_frame(table, "gradcov/top")
    both = tr.merge(top, on=["run_id", "step"], suffixes=("_tr", "_top"))
    both = both.assign(key=key, value=both["value_tr"] / both["value_top"])
    return both[["run_id", "key", "step", "value"]]


def trial_maxima(table: Any, key: str, peak_eps: float = 0.05,
                 from_step: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Per run: max of `key`, the step of the max, the last step, whether the peak was reached.

    With `from_step` (run_id -> step), only measurements at steps >= that step
    count (max, argmax and `peak_reached` are those of the window); runs
    missing from it, or with a NaN step, are left out.
    """
    out = []
    for run_id, g in _metric_rows(table, key).groupby("run_id", sort=True):
        v, s = g["value"].to_numpy(float), g["step"].to_numpy()
        if from_step is not None:
            start = from_step.get(run_id, np.nan)
            if not np.isfinite(start):
                continue
            v, s = v[s >= start], s[s >= start]
        fin = np.isfinite(v)
        if not fin.any():
            continue
        i = int(np.argmax(np.where(fin, v, -np.inf)))
        out.append({"run_id": run_id, "max": float(v[i]), "argmax_step": s[i],
                    "last_step": s[fin][-1], "peak_reached": peak_reached(v, peak_eps)})
    cols = ["run_id", "max", "argmax_step", "last_step", "peak_reached"]
    return pd.DataFrame(out, columns=cols).set_index("run_id")


def saturation_steps(table: Any, key: str = "gradcov/top", eps: float = 0.05,
                     window: int = 3) -> pd.Series:
    """Break-even step per run_id by the saturation detector on `key` (NaN: none)."""
    out = {}
    for run_id, g in metric_frame(table, key).groupby("run_id", sort=True):
        out[run_id] = saturation_step(g["step"].to_numpy(), g["value"].to_numpy(float), eps, window)
    return pd.Series(out, dtype=float, name="breakeven_step")


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


MAX_OVER = ("all", "after_breakeven")


def _judge_axis(table: Any, name: str, signs: dict[str, int], axis: str, *,
                optional: tuple[str, ...] = (), peak_eps: float = 0.05, min_trials: int = 4,
                alpha: float = ALPHA, n_perm: int = N_PERM, n_boot: int = N_BOOT,
                rng_seed: int = 0, strata: list[str] | None = None,
                max_over: Literal["all", "after_breakeven"] = "all",
                breakeven_key: str = "gradcov/top", breakeven_window: int = 3) -> list[Verdict]:
    if max_over not in MAX_OVER:
        raise ValueError(f"max_over must be one of {MAX_OVER}, got {max_over!r}")
    col, sym = AXES[axis]
    runs, excluded = usable_runs(table.runs)
    held = _strata_columns(runs, col, strata)
    held_txt = ", ".join(held) if held else "nothing else varies"
    from_step = None
    window_base: dict[str, Any] = {"max_over": max_over}
    where = ""
    if max_over == "after_breakeven":
        be = saturation_steps(table, breakeven_key, peak_eps, breakeven_window)
        be = be.reindex(runs["run_id"])
        from_step = be.to_dict()
        window_base.update(breakeven_key=breakeven_key, breakeven_window=breakeven_window,
                           excluded_no_breakeven=int(be.isna().sum()))
        where = (f" over steps at or after each trial's break-even step (saturation of "
                 f"{SYMBOL.get(breakeven_key, breakeven_key)})")
    verdicts = []
    for key, sign_lr in signs.items():
        sign = sign_lr if axis == "lr" else -sign_lr
        more = "larger" if sign > 0 else "smaller"
        direction = "larger η" if axis == "lr" else "smaller S"
        sym_k = SYMBOL.get(key, key)
        statement = (f"max {sym_k} ({key}){where} is {'larger' if sign_lr > 0 else 'smaller'} for "
                     f"{direction} (i.e. {more} for larger {sym}; held fixed: {held_txt})")
        vname = f"{name}[{key}]"
        if optional and key in optional and _metric_rows(table, key).empty:
            continue
        maxima = trial_maxima(table, key, peak_eps, from_step)
        base = {"metric": key, "axis": col, "strata": held, **excluded, "peak_eps": peak_eps,
                **window_base}
        if maxima.empty and _metric_rows(table, key).empty:
            verdicts.append(inconclusive(vname, statement, f"{key} was not logged", **base))
            continue
        if col not in runs.columns:
            verdicts.append(inconclusive(vname, statement, f"no column {col}", **base))
            continue
        df = runs.set_index("run_id").join(maxima, how="inner")
        n_no_peak = int((~df["peak_reached"].astype(bool)).sum())
        df = df[df["peak_reached"].astype(bool)]
        n_no_be = int(window_base.get("excluded_no_breakeven", 0))
        base.update(excluded_peak_not_reached=n_no_peak,
                    excluded_no_data=int(len(runs) - len(df) - n_no_peak - n_no_be))
        if len(df) < min_trials:
            verdicts.append(inconclusive(
                vname, statement,
                f"only {len(df)} trials {'had a break-even step and ' if from_step else ''}"
                f"passed their peak (< {min_trials})",
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
    """Conjecture 1 along η: max λ_H¹ and max λ_K¹ smaller for larger η (max over the whole run)."""
    return _judge_axis(table, "breakeven.c1_lr", C1_SIGNS, "lr", **options)


def c1_batch(table: Any, **options: Any) -> list[Verdict]:
    """Conjecture 1 along S: max λ_H¹ and max λ_K¹ smaller for smaller S (max over the whole run)."""
    return _judge_axis(table, "breakeven.c1_batch", C1_SIGNS, "batch", **options)


def c2_lr(table: Any, max_over: str = "after_breakeven", **options: Any) -> list[Verdict]:
    """Conjecture 2 along η: max Tr(K)/λ_K¹ larger, max Tr(K) (Tr(H)) smaller for larger η.

    The max is taken at or after each trial's break-even step by default
    (`max_over="after_breakeven"`; `"all"` takes it over the whole run).
    """
    return _judge_axis(table, "breakeven.c2_lr", C2_SIGNS, "lr", optional=C2_OPTIONAL,
                       max_over=max_over, **options)


def c2_batch(table: Any, max_over: str = "after_breakeven", **options: Any) -> list[Verdict]:
    """Conjecture 2 along S: max Tr(K)/λ_K¹ larger, max Tr(K) (Tr(H)) smaller for smaller S.

    The max is taken at or after each trial's break-even step by default
    (`max_over="after_breakeven"`; `"all"` takes it over the whole run).
    """
    return _judge_axis(table, "breakeven.c2_batch", C2_SIGNS, "batch", optional=C2_OPTIONAL,
                       max_over=max_over, **options)


# ------------------------------------------------------------------ figures
Trajectories = Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


def fig_spectra(table: Any, sources: Sources | None = None) -> Figure | None:
    """Paper Fig. 6: λ_H¹ and ΔL (change of train loss between measurements) against λ_K¹."""
    if not has_metrics(table, "gradcov/top"):
        return None
    runs = finished_runs(table)
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


def fig_max_vs_hparams(table: Any, sources: Sources | None = None, peak_eps: float = 0.05) -> Figure | None:
    """Max λ_H¹ and max λ_K¹ against η (one line per S) and against S (one line per η).
    Filled markers: peak reached; hollow: not reached (not comparable)."""
    keys = [k for k in ("hessian/top", "gradcov/top") if has_metrics(table, k)]
    runs = finished_runs(table)
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


def fig_pca(table: Any, sources: Sources | None = None, max_runs: int = 4) -> Figure | None:
    """Fig. 7/8 from the sweep: the weight snapshots (`probes.snapshots: true`)
    of up to `max_runs` finished trials of the first seed, ordered by batch size
    then learning rate, with λ_K¹ at the same steps. None without snapshots."""
    runs = finished_runs(table)
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
             "breakeven_fig7_pca.png": fig_pca},
    tables={BREAKEVEN_STEPS_CSV: breakeven_steps},
    specs=("breakeven.yaml", "breakeven-cifar.yaml"),
))
