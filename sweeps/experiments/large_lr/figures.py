"""The large-learning-rate experiment's figures: the arms' curves and the calibration."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from sweeps.experiments.registry import Sources
from sweeps.experiments.large_lr.analysis import (ARMS, anneal_epoch, calibration_frame,
                                                  calibration_table, choose_lrs, has_patch, lr_arm)
from sweeps.experiments.large_lr.plans import CAL, PLANS
from sweeps.plotting import DPI
from sweeps.table import SweepTable

def fig_large_lr(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Li/Wei/Ma: test accuracy, patch-only accuracy (when logged) and train
    loss over steps per arm, mean over seeds; solid on patch data, dashed on
    the no-patch control; dotted line at the large arm's annealing."""
    runs = table.finished()
    if runs.empty or not table.has("val/acc"):
        return None
    arms = runs.apply(lr_arm, axis=1)
    if not (arms == "large-anneal").any():
        return None
    patch = runs.apply(has_patch, axis=1).astype(bool)
    keys = ["val/acc"] + [k for k in ("patch/acc", "train/loss") if table.has(k)]
    fig = Figure(figsize=(4.2 * len(keys) + 0.5, 3.3), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    e_a = anneal_epoch(runs)
    anneal_step = None
    large = runs[arms == "large-anneal"]
    if e_a is not None and len(large):
        steps = table.series(large["run_id"].iloc[0], "val/acc").sort_index().index
        n_ep = int(large["train.epochs"].iloc[0]) if "train.epochs" in large else len(steps)
        if len(steps):
            off = max(0, len(steps) - n_ep)
            anneal_step = steps[min(len(steps) - 1, off + e_a - 1)]
    titles = {"val/acc": "test accuracy", "patch/acc": "patch-only accuracy",
              "train/loss": "train loss"}
    for ax, key in zip(axes, keys):
        for i, arm in enumerate(ARMS):
            for on, ls in ((True, "-"), (False, "--")):
                ids = runs["run_id"][(arms == arm) & (patch == on)]
                if len(ids):
                    c = table.mean_curve(ids, key)
                    ax.plot(c.index, c.to_numpy(), color=f"C{i}", ls=ls,
                            label=f"{arm}{'' if on else ' no patch'} (n={len(ids)})")
        if anneal_step is not None:
            ax.axvline(anneal_step, color="grey", ls=":", lw=1)
        if key == "train/loss":
            ax.set_yscale("log")
        ax.set(xlabel="step", ylabel=key, title=titles[key])
        ax.legend(fontsize=6)
    return fig


def fig_calibration(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Calibration: train loss over steps per η (mean over seeds), and the
    steps to the train-accuracy target against η (the chosen pair marked)."""
    summary = calibration_table(table)
    if summary is None or summary.empty:
        return None
    frame = calibration_frame(table, PLANS[CAL].options["target_train_acc"])
    pick = choose_lrs(summary, PLANS[CAL].options["min_ratio"])
    fig = Figure(figsize=(9.0, 3.3), dpi=DPI, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for i, lr in enumerate(summary["lr"]):
        ids = frame.loc[frame["lr"] == lr, "run_id"]
        c = table.mean_curve(ids, "train/loss")
        if len(c):
            ax1.plot(c.index, c.to_numpy(), color=f"C{i % 10}", label=f"η = {lr:g}",
                     lw=2.5 if lr in (pick["large"], pick["small"]) else 1)
    ax1.set(xlabel="step", ylabel="train/loss", title="train loss per η", yscale="log")
    ax1.legend(fontsize=6)
    ok = summary[summary["trains"]]
    ax2.plot(ok["lr"], ok["steps_to_target"], "o-", color="C0")
    for key, mark in (("large", "s"), ("small", "^")):
        if pick[key] is not None:
            y = float(ok.loc[ok["lr"] == pick[key], "steps_to_target"].iloc[0])
            ax2.plot([pick[key]], [y], mark, ms=10, mfc="none", color="C3", label=f"η_{key}")
    for lr in summary.loc[~summary["trains"], "lr"]:
        ax2.axvline(lr, color="grey", ls=":", lw=1)
    target = PLANS[CAL].options["target_train_acc"]
    ax2.set(xscale="log", xlabel="η", ylabel=f"steps to train acc ≥ {target:g}",
            title="fitting speed (dotted: did not train)")
    ax2.legend(fontsize=6)
    return fig
