"""The large-learning-rate experiment's arms, calibration rule and conjectures
(see the package docstring)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sweeps.conjectures.inference import sign_flip_test
from sweeps.conjectures.plan import FROM_PLAN, AnalysisPlan
from sweeps.conjectures.verdict import (N_BOOT, N_PERM, Verdict, compare_groups,
                                        intersection_union, verdict_of)
from sweeps.experiments.registry import Plans, conjecture
from sweeps.experiments.large_lr.plans import CAL, FITS, LEARNS, PLANS
from sweeps.table import SweepTable, as_tuple

KIND, MILESTONES = "optim.schedule.kind", "optim.schedule.milestones"
NOISE, EPOCHS, LR, PATCH = "model.preact_noise", "train.epochs", "optim.lr", "data.patch.fraction"
ARMS = ("large-anneal", "small", "small+noise")


def lr_arm(row: pd.Series) -> str:
    """Which arm of the large-LR experiment a run belongs to."""
    noise = _number(row.get(NOISE, 0.0))
    kind = str(row.get(KIND, "constant"))
    if noise > 0:
        return "small+noise"
    if kind == "step" and len(as_tuple(row.get(MILESTONES, (0.5, 0.75)))) == 1:
        return "large-anneal"
    if kind == "constant":
        return "small"
    return "other"


def has_patch(row: pd.Series) -> bool:
    """Whether a run trained on patch data (`data.patch.fraction` > 0)."""
    return _number(row.get(PATCH, 0.0)) > 0


def _number(value: Any) -> float:
    v = pd.to_numeric(pd.Series([value]), errors="coerce").fillna(0.0).iloc[0]
    return float(v)


def anneal_epoch(runs: pd.DataFrame) -> int | None:
    """Epoch after which the large arm's LR drops: first milestone × epochs."""
    large = runs[runs.apply(lr_arm, axis=1) == "large-anneal"] if len(runs) else runs
    if large.empty or EPOCHS not in large.columns:
        return None
    r = large.iloc[0]
    ms = as_tuple(r.get(MILESTONES, (0.5,))) or (0.5,)
    return max(1, int(round(ms[0] * float(r[EPOCHS]))))


def value_at_epoch(series: pd.Series, epoch: int, epochs: int | None) -> float:
    """Value logged at the end of `epoch` (1-based) of a per-epoch series.

    A series with more entries than epochs is taken to start with an
    evaluation at initialization, so it is offset by the surplus.
    """
    n = len(series)
    if n == 0:
        return float("nan")
    offset = n - epochs if epochs is not None and n > epochs else 0
    return float(series.iloc[min(n - 1, offset + epoch - 1)])


def window_mean(series: pd.Series, last: int, width: int, epochs: int | None) -> float:
    """Mean of a per-epoch series over the `width` epochs ending at `last` (1-based)."""
    vals = [value_at_epoch(series, e, epochs) for e in range(max(1, last - width + 1), last + 1)]
    return float(np.mean(vals)) if vals else float("nan")



# -------------------------------------------------------------- calibration
def calibration_frame(table: SweepTable, target: float) -> pd.DataFrame:
    """One row per run of a constant-η sweep: lr, seed, status, the step at
    which train/acc first reached `target` (NaN: never), train loss, train and
    test accuracy at the last epoch, and whether it trained."""
    rows = []
    for _, r in table.runs.iterrows():
        rid = r["run_id"]
        acc = table.per_epoch(rid, "train/acc").astype(float)
        loss = table.per_epoch(rid, "train/loss").astype(float)
        val = table.per_epoch(rid, "val/acc").astype(float)
        hit = acc[acc >= target]
        status = str(r["status"])
        rows.append({"run_id": rid, "lr": _number(r.get(LR)), "seed": r.get("seed"),
                     "status": status, "steps_to_target": float(hit.index[0]) if len(hit) else np.nan,
                     "train_loss_last": float(loss.iloc[-1]) if len(loss) else np.nan,
                     "train_acc_last": float(acc.iloc[-1]) if len(acc) else np.nan,
                     "val_acc_last": float(val.iloc[-1]) if len(val) else np.nan,
                     "trains": status == "finished" and len(hit) > 0})
    return pd.DataFrame(rows, columns=["run_id", "lr", "seed", "status", "steps_to_target",
                                       "train_loss_last", "train_acc_last", "val_acc_last",
                                       "trains"])


def calibration_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per η: runs, diverged, trained, and the means of the per-run columns."""
    g = frame.groupby("lr")
    out = pd.DataFrame({
        "n": g.size(), "n_diverged": g["status"].apply(lambda s: int((s == "diverged").sum())),
        "n_trained": g["trains"].sum().astype(int),
        "steps_to_target": g["steps_to_target"].mean(),
        "train_loss_last": g["train_loss_last"].mean(),
        "train_acc_last": g["train_acc_last"].mean(), "val_acc_last": g["val_acc_last"].mean()})
    out["trains"] = out["n_trained"] == out["n"]
    return out.reset_index().sort_values("lr").reset_index(drop=True)


def choose_lrs(summary: pd.DataFrame, min_ratio: float) -> dict[str, Any]:
    """The calibration rule on `calibration_summary`: the η pair and the two checks."""
    trains = summary[summary["trains"]]
    if trains.empty:
        why = "no η trained (every one diverged or missed the target)"
        return {"large": None, "small": None, "edge_bracketed": (False, why),
                "small_lr_found": (False, why)}
    large = float(trains["lr"].max())
    above = summary[summary["lr"] > large]
    edge = (bool(len(above)), f"η_large {large:g}; next η {above['lr'].min():g} does not train"
            if len(above) else f"η_large {large:g} is the largest η of the grid: the edge "
            "was not reached, extend the grid upwards")
    steps_large = float(trains.loc[trains["lr"] == large, "steps_to_target"].iloc[0])
    cand = trains[(trains["lr"] <= large / min_ratio) & (trains["steps_to_target"] <= steps_large)]
    if cand.empty:
        return {"large": large, "small": None, "edge_bracketed": edge, "small_lr_found": (
            False, f"no η <= {large / min_ratio:g} reached the target within {steps_large:g} "
                   "steps (η_large's)")}
    row = cand.loc[cand["lr"].idxmax()]
    small = float(row["lr"])
    return {"large": large, "small": small, "edge_bracketed": edge, "small_lr_found": (
        True, f"η_small {small:g} reached the target at step {row['steps_to_target']:.0f} vs "
              f"{steps_large:.0f} for η_large {large:g}")}


@conjecture(PLANS)
def calibration(table: SweepTable, plans: Plans, *, n_perm: int = N_PERM, n_boot: int = N_BOOT,
                rng_seed: int = 0) -> list[Verdict]:
    """The small η the calibration picks fits the training set faster than the large one."""
    (plan,) = plans.values()
    frame = calibration_frame(table, plan.options["target_train_acc"])
    counts = {"excluded_diverged": int((frame["status"] == "diverged").sum())}
    if frame.empty:
        why = "no runs"
        return [verdict_of(plan, None, checks={c.name: (False, why) for c in plan.checks}, n=0,
                           reason=why, **counts)]
    summary = calibration_summary(frame)
    pick = choose_lrs(summary, plan.options["min_ratio"])
    checks = {c: pick[c] for c in ("edge_bracketed", "small_lr_found")}
    chosen = {"lr_large": pick["large"], "lr_small": pick["small"]}
    if pick["small"] is None:
        return [verdict_of(plan, None, checks=checks, n=0, reason=checks["small_lr_found"][1],
                           **counts, **chosen)]
    ok = frame[frame["status"] == "finished"]
    a, b = ok[ok["lr"] == pick["small"]], ok[ok["lr"] == pick["large"]]
    common = sorted(set(a["seed"]) & set(b["seed"]))
    a, b = a[a["seed"].isin(common)], b[b["seed"].isin(common)]
    res = compare_groups(a["train_loss_last"], b["train_loss_last"], blocks_a=a["seed"].to_numpy(),
                         blocks_b=b["seed"].to_numpy(), n_perm=n_perm, n_boot=n_boot,
                         rng_seed=rng_seed, alpha=plan.alpha)
    return [verdict_of(plan, res, checks=checks, **counts, **chosen,
                       steps_to_target={"small": float(a["steps_to_target"].mean()),
                                        "large": float(b["steps_to_target"].mean())})]


def calibration_table(table: SweepTable) -> pd.DataFrame | None:
    """`calibration_summary` of a calibration sweep (constant η only; None otherwise)."""
    runs = table.runs
    if runs.empty or (runs.apply(lr_arm, axis=1) != "small").any():
        return None
    return calibration_summary(calibration_frame(
        table, PLANS[CAL].options["target_train_acc"]))


# ------------------------------------------------------- crossover, control
def _per_run(table: SweepTable, runs: pd.DataFrame, key: str, epoch: int, width: int) -> pd.Series:
    """`key` of every run averaged over the `width` epochs ending at `epoch` (NaN where not logged)."""
    out = {}
    for rid, r in runs.iterrows():
        epochs = int(r[EPOCHS]) if EPOCHS in r and pd.notna(r[EPOCHS]) else None
        out[rid] = window_mean(table.per_epoch(rid, key), epoch, width, epochs)
    return pd.Series(out, dtype=float)


def _checks(train_loss: tuple[float, float], patch: tuple[float, float]) -> dict[str, tuple]:
    """Manipulation-check outcomes from (small, large) means before annealing."""
    (ls, ll), (ps, pl) = train_loss, patch
    fits = (bool(np.isfinite(ls) and np.isfinite(ll) and ls <= ll),
            f"train/loss small {ls:.4g} vs large {ll:.4g}" if np.isfinite(ls + ll)
            else "train/loss not logged in both arms")
    learns = (bool(np.isfinite(ps) and np.isfinite(pl) and ps > pl),
              f"patch/acc small {ps:.4g} vs large {pl:.4g}" if np.isfinite(ps + pl)
              else "patch/acc not logged in both arms")
    return {FITS.name: fits, LEARNS.name: learns}


def _arms(table: SweepTable) -> tuple[pd.DataFrame, pd.Series, pd.Series, dict[str, int]]:
    """Finished runs (by run_id), their arm, whether they carry the patch, and counts."""
    runs = table.finished().set_index("run_id", drop=False)
    counts = table.left_out()
    arm = runs.apply(lr_arm, axis=1) if len(runs) else pd.Series(dtype=object)
    patch = runs.apply(has_patch, axis=1).astype(bool) if len(runs) else pd.Series(dtype=bool)
    counts.update({f"n_{a}": int(((arm == a) & patch).sum()) for a in ARMS})
    counts.update({f"n_{a}_no_patch": int(((arm == a) & ~patch).sum()) for a in ARMS})
    return runs, arm, patch, counts


def _by_seed(values: pd.Series, runs: pd.DataFrame, mask: pd.Series) -> pd.Series:
    """Values of the runs in `mask`, indexed by seed (the first run of a seed kept)."""
    ids = mask.index[mask]
    s = pd.Series(values.reindex(ids).to_numpy(), index=runs.loc[ids, "seed"].to_numpy())
    return s[~s.index.duplicated()]


def _paired(a: pd.Series, b: pd.Series, **kw: Any):
    """Difference of means a − b over the seeds both hold, permuted within seeds."""
    common = sorted(set(a.index) & set(b.index), key=str)
    a, b = a.reindex(common), b.reindex(common)
    return compare_groups(a.to_numpy(), b.to_numpy(), blocks_a=np.asarray(common, dtype=object),
                          blocks_b=np.asarray(common, dtype=object), **kw)


def _annealed_arms(table: SweepTable, plan: AnalysisPlan
                   ) -> tuple[pd.DataFrame, pd.Series, pd.Series, dict[str, int], int | None]:
    """`_arms` and the annealing epoch: the plan's `anneal_epoch`, else dated from
    the large-anneal arm on patch data (None where there is none)."""
    runs, arm, patch, counts = _arms(table)
    epoch = plan.options["anneal_epoch"]
    return runs, arm, patch, counts, (epoch if epoch is not None else
                                      anneal_epoch(runs[patch] if len(runs) else runs))


def _undated(plan: AnalysisPlan, why: str, counts: dict[str, int]) -> list[Verdict]:
    """The verdict where no annealing epoch is known: no test, every check failed with `why`."""
    return [verdict_of(plan, None, checks={c.name: (False, why) for c in plan.checks}, n=0,
                       reason=why, **counts)]


@conjecture(PLANS)
def anneal_crossover(table: SweepTable, plans: Plans, *, epoch: Any = FROM_PLAN,
                     n_perm: int = N_PERM, n_boot: int = N_BOOT,
                     rng_seed: int = 0) -> list[Verdict]:
    """Small LR is better than large-then-anneal before annealing and worse after (patch data)."""
    (plan,) = plans.values()
    plan = plan.with_options(anneal_epoch=epoch)
    runs, arm, patch, counts, e_a = _annealed_arms(table, plan)
    counts["excluded_no_patch"] = int((~patch).sum()) if len(patch) else 0
    width = int(plan.options["before_epochs"])
    if e_a is None:
        return _undated(plan, "no large-anneal arm on patch data to date the annealing", counts)
    small, large = patch & (arm == "small"), patch & (arm == "large-anneal")
    at = lambda key: _per_run(table, runs, key, e_a, width)  # noqa: E731
    means = lambda s: (float(s[small].mean()), float(s[large].mean()))  # noqa: E731
    before, after = at(plan.metric), table.final("final/val_acc", fallback="val/acc")
    checks = _checks(means(at("train/loss")), means(at("patch/acc")))
    kw = dict(n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=plan.alpha)
    pre = _paired(_by_seed(before, runs, small), _by_seed(before, runs, large), **kw)
    post = _paired(_by_seed(after, runs, small), _by_seed(after, runs, large), **kw)
    res = intersection_union([pre, post], [int(x) for x in plan.options["part_signs"]])
    control = {}
    c_small, c_large = ~patch & (arm == "small"), ~patch & (arm == "large-anneal")
    if c_small.any() and c_large.any():
        control = {"no_patch_before_minus": float(before[c_small].mean() - before[c_large].mean()),
                   "no_patch_after_minus": float(after.reindex(runs.index)[c_small].mean()
                                                 - after.reindex(runs.index)[c_large].mean())}
    return [verdict_of(plan, res, checks=checks, **counts, anneal_epoch=e_a, before_epochs=width,
                       before_minus=pre.statistic, after_minus=post.statistic, **control)]


@conjecture(PLANS)
def patch_hurts_small(table: SweepTable, plans: Plans, *, epoch: Any = FROM_PLAN,
                      n_perm: int = N_PERM, n_boot: int = N_BOOT,
                      rng_seed: int = 0) -> list[Verdict]:
    """The patch costs the small LR more final test accuracy than the large LR (per-seed contrast)."""
    (plan,) = plans.values()
    plan = plan.with_options(anneal_epoch=epoch)
    runs, arm, patch, counts, e_a = _annealed_arms(table, plan)
    if e_a is None:
        return _undated(plan, "no large-anneal arm on patch data", counts)
    width = int(plan.options["before_epochs"])
    small, large = patch & (arm == "small"), patch & (arm == "large-anneal")
    at = lambda key: _per_run(table, runs, key, e_a, width)  # noqa: E731
    checks = {LEARNS.name: _checks((np.nan, np.nan), (float(at("patch/acc")[small].mean()),
                                                      float(at("patch/acc")[large].mean())))[LEARNS.name]}
    final = table.final(plan.metric, fallback="val/acc").reindex(runs.index)
    cells = {(a, p): _by_seed(final, runs, (arm == a) & (patch == p))
             for a in ("small", "large-anneal") for p in (True, False)}
    frame = pd.DataFrame({f"{a}|{p}": s for (a, p), s in cells.items()})
    complete = frame.dropna()
    counts["excluded_incomplete_seed"] = int(len(frame) - len(complete))
    if complete.empty:
        return [verdict_of(plan, None, checks=checks, n=0, reason="no seed holds all four arms "
                           "(small and large-anneal, with and without the patch)", **counts)]
    d = ((complete["small|True"] - complete["small|False"])
         - (complete["large-anneal|True"] - complete["large-anneal|False"]))
    res = sign_flip_test(d.to_numpy(), n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed,
                         alpha=plan.alpha)
    cost = {f"patch_cost_{'small' if a == 'small' else 'large'}":
            float((complete[f"{a}|True"] - complete[f"{a}|False"]).mean())
            for a in ("small", "large-anneal")}
    return [verdict_of(plan, res, checks=checks, **counts, **cost)]

