"""The regime of a loss curve, and the registered regime map of (η, μ).

One curve (`classify_loss_curve`, thresholds in `RULE`):
- `diverged`: status diverged, or a non-finite value;
- `small-step`: at least `min_decrease_frac` (0.9) of the epoch-to-epoch
  changes are decreases, whatever the level of the loss;
- `non-training`: not consistently decreasing and the last loss is still at
  least `nontrain_frac` (0.9) of the chance-level loss ln C (C classes);
- `large-step`: every other finished curve;
- `unknown`: errored or running, or fewer than 2 epochs.

A curve's regime is only ever read in the calibration sweep. There, every
(e, μ) cell (e = η/(1 − μ), the effective step) gets one label over its
seeds (`cell_label`): `diverged` or `non-training` if any seed is, the
common regime if all agree, else `mixed`. Per μ the map's boundaries are the
largest e that trains (small- or large-step) and the largest e that is
small-step (the paper's two thresholds). `choose_steps` then picks the main
sweep's pair at those thresholds, where every arm is in its regime: e_L, the
largest e that is large-step at every μ and at the same-η arm's cell (η = e,
μ = `same_lr_momentum`, so effective step e/(1 − μ)); e_S, the largest e
that is small-step at every μ and at its same-η cell. The main plans carry
the map and the pair (`plans.REGIME_MAP`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sweeps.conjectures.plan import AnalysisPlan
from sweeps.conjectures.verdict import N_BOOT, N_PERM, Verdict, compare_groups, verdict_of
from sweeps.experiments.registry import Plans, conjecture
from sweeps.experiments.regimes.plans import CAL, LR, MOM, N_CLASSES, PLANS, RULE
from sweeps.table import SweepTable, param

TRAINS = ("small-step", "large-step")


def classify_loss_curve(losses: np.ndarray,
                        min_decrease_frac: float = RULE["min_decrease_frac"],
                        chance_loss: float | None = None,
                        nontrain_frac: float | None = RULE["nontrain_frac"]) -> str:
    """Regime of one per-epoch loss curve (see module docstring).

    `chance_loss` is ln C; without it (or with `nontrain_frac=None`) no curve
    is called non-training.
    """
    v = np.asarray(losses, dtype=float)
    if v.size and not np.all(np.isfinite(v)):
        return "diverged"
    if v.size < 2:
        return "unknown"
    if decrease_frac(v) >= min_decrease_frac:
        return "small-step"
    if (nontrain_frac is not None and chance_loss is not None and np.isfinite(chance_loss)
            and v[-1] >= nontrain_frac * chance_loss):
        return "non-training"
    return "large-step"


def decrease_frac(losses: np.ndarray) -> float:
    """Share of a curve's epoch-to-epoch changes that are decreases (NaN under 2 epochs)."""
    v = np.asarray(losses, dtype=float)
    return float(np.mean(np.diff(v) < 0)) if v.size >= 2 else float("nan")


def chance_loss(row: pd.Series | dict, n_classes: int | None = None) -> float | None:
    """ln C for one trial: C from `n_classes`, else from its `data.dataset`; None if unknown."""
    c = n_classes if n_classes is not None else N_CLASSES.get(str(row.get("data.dataset", "")))
    return float(np.log(c)) if c is not None and c >= 2 else None


def classify_regimes(table: SweepTable, min_decrease_frac: float = RULE["min_decrease_frac"],
                     nontrain_frac: float | None = RULE["nontrain_frac"],
                     n_classes: int | None = None) -> pd.Series:
    """Regime per run_id, from status and the per-epoch `train/loss`."""
    out = {}
    for _, r in table.runs.iterrows():
        rid, status = r["run_id"], str(r["status"])
        if status == "diverged":
            out[rid] = "diverged"
        elif status != "finished":
            out[rid] = "unknown"
        else:
            out[rid] = classify_loss_curve(table.per_epoch(rid, "train/loss").to_numpy(),
                                           min_decrease_frac, chance_loss(r, n_classes),
                                           nontrain_frac)
    return pd.Series(out, name="regime", dtype=object)


def step_key(value: float) -> str:
    """A map key for an effective step or a momentum: 6 significant digits, `%g`."""
    return f"{float(f'{float(value):.6g}'):g}"


def effective_step(lr: Any, mu: Any) -> float:
    """η/(1 − μ)."""
    return float(lr) / (1.0 - float(mu))


# ------------------------------------------------------------- the map
def calibration_frame(table: SweepTable, plan: AnalysisPlan,
                      n_classes: int | None = None) -> pd.DataFrame:
    """One row per run: e, μ, seed, status, regime, decrease_frac, final train loss and test
    accuracy."""
    opts = plan.options
    runs = table.runs
    if runs.empty or LR not in runs:
        return pd.DataFrame(columns=["run_id", "step", "momentum", "seed", "status", "regime",
                                     "decrease_frac", "train_loss", "val_acc"])
    reg = classify_regimes(table, float(opts["min_decrease_frac"]), opts["nontrain_frac"],
                           n_classes)
    loss = table.final("final/train_loss", fallback="train/loss")
    acc = table.final("final/val_acc", fallback="val/acc")
    mus = param(runs, MOM, 0.0).astype(float)
    rows = []
    for (_, r), mu in zip(runs.iterrows(), mus):
        rid = r["run_id"]
        curve = table.per_epoch(rid, "train/loss").to_numpy(float)
        rows.append({"run_id": rid, "step": float(step_key(effective_step(r[LR], mu))),
                     "momentum": mu, "seed": r["seed"], "status": str(r["status"]),
                     "regime": reg.get(rid, "unknown"),
                     "decrease_frac": decrease_frac(curve) if str(r["status"]) == "finished"
                     else np.nan,
                     "train_loss": float(loss.get(rid, np.nan)), "val_acc": float(acc.get(rid, np.nan))})
    return pd.DataFrame(rows)


def cell_label(regimes: pd.Series) -> str:
    """One label for a cell's seeds (see module docstring)."""
    got = set(regimes)
    for bad in ("diverged", "non-training", "unknown"):
        if bad in got:
            return bad
    return got.pop() if len(got) == 1 else "mixed"


def regime_map(frame: pd.DataFrame) -> dict[str, dict[str, str]]:
    """{μ: {e: label}} of a calibration frame (keys by `step_key`)."""
    out: dict[str, dict[str, str]] = {}
    for (mu, e), g in frame.groupby(["momentum", "step"]):
        out.setdefault(step_key(mu), {})[step_key(e)] = cell_label(g["regime"])
    return out


def boundaries(rmap: dict[str, dict[str, str]]) -> dict[str, dict[str, float | None]]:
    """Per μ: the largest e that trains and the largest that is small-step (None: none)."""
    out = {}
    for mu, cells in rmap.items():
        steps = {float(e): lab for e, lab in cells.items()}
        trains = [e for e, lab in steps.items() if lab in TRAINS]
        small = [e for e, lab in steps.items() if lab == "small-step"]
        out[mu] = {"largest_trains": max(trains, default=None),
                   "largest_small_step": max(small, default=None)}
    return out


def label_at(rmap: dict[str, dict[str, str]], lr: float, mu: float) -> str:
    """The map's label of the cell (η, μ); `off-map` where the calibration did not run it."""
    return rmap.get(step_key(mu), {}).get(step_key(effective_step(lr, mu)), "off-map")


def choose_steps(rmap: dict[str, dict[str, str]], momenta: list[float],
                 same_lr_momentum: float) -> dict[str, Any]:
    """The calibration rule: (e_S, e_L) and the checks `edge_bracketed`, `pair_found`."""
    bounds = boundaries(rmap)
    open_edge = [mu for mu, cells in rmap.items()
                 if bounds[mu]["largest_trains"] is None
                 or not any(float(e) > bounds[mu]["largest_trains"] for e in cells)]
    edge = (not open_edge and bool(rmap),
            "every μ holds an e that does not train above its largest that does" if not open_edge
            and rmap else f"no e above the largest that trains at μ = {open_edge or 'any'}: "
            "extend the grid upwards")

    def holds(e: float, regime: str) -> bool:
        at_momenta = all(label_at(rmap, e * (1 - mu), mu) == regime for mu in momenta)
        return at_momenta and label_at(rmap, e, same_lr_momentum) == regime

    steps = sorted({float(e) for cells in rmap.values() for e in cells})
    large = max((e for e in steps if holds(e, "large-step")), default=None)
    small = max((e for e in steps if holds(e, "small-step")), default=None)
    found = (large is not None and small is not None,
             f"e_L {large:g}, e_S {small:g}" if large is not None and small is not None else
             "no e is large-step at every μ" if large is None else "no e is small-step at every μ")
    return {"step_large": large, "step_small": small, "edge_bracketed": edge, "pair_found": found,
            "boundaries": bounds}


@conjecture(PLANS)
def calibration(table: SweepTable, plans: Plans, *, n_classes: int | None = None,
                n_perm: int = N_PERM, n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """The calibration's map and pair; at the pair, the loss decreases less consistently at e_L.

    Per (seed, μ) the difference decrease_frac(e_L) − decrease_frac(e_S),
    permuted within those blocks (predicted −). Diverged trials are counted.
    """
    (plan,) = [p for k, p in plans.items() if k == CAL]
    frame = calibration_frame(table, plan, n_classes)
    counts = table.left_out()
    opts = plan.options
    rmap = regime_map(frame)
    pick = choose_steps(rmap, list(opts["momenta"]), float(opts["same_lr_momentum"]))
    checks = {c: pick[c] for c in ("edge_bracketed", "pair_found")}
    found = {"regime_map": rmap, "boundaries": pick["boundaries"],
             "step_large": pick["step_large"], "step_small": pick["step_small"]}
    if not pick["pair_found"][0]:
        return [verdict_of(plan, None, checks=checks, n=0, reason=pick["pair_found"][1],
                           **counts, **found)]
    ok = frame[(frame["status"] == "finished") & frame["momentum"].isin(opts["momenta"])]
    a = ok[np.isclose(ok["step"], pick["step_large"])]
    b = ok[np.isclose(ok["step"], pick["step_small"])]
    blocks = lambda g: (g["seed"].astype(str) + "|" + g["momentum"].astype(str)).to_numpy()  # noqa: E731
    res = compare_groups(a["decrease_frac"], b["decrease_frac"], blocks_a=blocks(a),
                         blocks_b=blocks(b), n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed,
                         alpha=plan.alpha)
    return [verdict_of(plan, res, checks=checks, **counts, **found,
                       train_loss={"large": float(a["train_loss"].mean()),
                                   "small": float(b["train_loss"].mean())})]


def calibration_table(table: SweepTable) -> pd.DataFrame | None:
    """Per (μ, e) cell of a calibration sweep: η, runs, diverged, each regime's count, the
    cell's label, mean decrease_frac, final train loss and test accuracy; None for a sweep
    that is not one (a step schedule, two-stage trials)."""
    runs = table.runs
    if runs.empty or LR not in runs or ("optim.schedule.kind" in runs
                                        and (runs["optim.schedule.kind"].astype(str)
                                             != "constant").any()):
        return None
    frame = calibration_frame(table, PLANS[CAL])
    rows = []
    for (mu, e), g in frame.groupby(["momentum", "step"]):
        rows.append({"momentum": mu, "step": e, "lr": float(step_key(e * (1 - mu))),
                     "n": len(g), "label": cell_label(g["regime"]),
                     **{f"n_{k}": int((g["regime"] == k).sum()) for k in
                        ("small-step", "large-step", "non-training", "diverged")},
                     "decrease_frac": g["decrease_frac"].mean(),
                     "train_loss": g["train_loss"].mean(), "val_acc": g["val_acc"].mean()})
    return pd.DataFrame(rows)
