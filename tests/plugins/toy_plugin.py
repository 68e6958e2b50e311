"""A plugin as a user would write one, outside the project's packages: it
registers a probe (`toy_grad_norm`, switched on by `probes.extra`, with its
end-of-trial summary and its headline column, as a built-in probe declares
them) and an experiment (a conjecture, a figure, a table) through the public
plugin points only: `@conjecture` names the conjecture `toy.loss_falls` from
its function, `register(Experiment(...))` adds it. `tests/test_plugins.py`
runs it in a real sweep."""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from dynamics_core.measure import Peak, ProbeFamily, register_probe
from sweeps.conjectures.verdict import Verdict
from sweeps.experiments import Experiment, Plans, conjecture, register
from sweeps.table import SweepTable


class ToyGradNorm(ProbeFamily):
    """toy/grad_norm: norm of the probe set's mean gradient, from the round's
    shared per-example gradients (computed once per step for every probe)."""

    flag = "toy_grad_norm"

    def __call__(self, ctx) -> dict[str, float]:
        return {"toy/grad_norm": float(self.probes.at(ctx).grads.mean(0).norm())}


register_probe(ToyGradNorm.flag, ToyGradNorm, summaries=[Peak("toy/grad_norm")],   # toy/grad_norm_max, …
               columns={"toy/grad_norm": "|ḡ|"})                                   # in status and progress


@conjecture(experiment="toy")       # no plans: its verdict passes `finalize` unchanged
def loss_falls(table: SweepTable, plans: Plans, **options) -> list[Verdict]:
    """Every finished trial ends with a lower train loss than it started with."""
    falls = []
    for rid in table.finished()["run_id"]:
        loss = table.series(rid, "train/loss").sort_index()
        falls.append(bool(len(loss) >= 2 and loss.iloc[-1] < loss.iloc[0]))
    kind = "supported" if falls and all(falls) else "refuted"
    return [Verdict("toy.loss_falls", "train loss falls", kind, n=len(falls),
                    details={"reason": f"{sum(falls)}/{len(falls)} trials end lower"})]


def loss_figure(table: SweepTable, sources=None) -> Figure | None:
    if table.metrics.empty:
        return None
    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    for rid in table.runs["run_id"]:
        loss = table.series(rid, "train/loss").sort_index()
        ax.plot(loss.index, loss.to_numpy())
    return fig


def first_last(table: SweepTable) -> pd.DataFrame:
    rows = []
    for rid, trial in zip(table.runs["run_id"], table.runs["trial_id"]):
        loss = table.series(rid, "train/loss").sort_index()
        rows.append({"trial_id": trial, "first": loss.iloc[0], "last": loss.iloc[-1]})
    return pd.DataFrame(rows)


register(Experiment(name="toy", title="A toy experiment", conjectures=[loss_falls],
                    figures={"toy_loss.png": loss_figure}, tables={"toy_first_last.csv": first_last}))
