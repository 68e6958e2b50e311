"""Two regimes of deep-network training (Leclerc & Madry 2020).

Each trial is classified from its per-epoch training loss (`classify_regimes`):
- `diverged`: status is diverged, or the loss curve has a non-finite value;
- `small-step`: the loss decreases consistently, i.e. at least
  `min_decrease_frac` (a plan option, 0.9) of the epoch-to-epoch changes are negative;
- `non-training`: the loss does not decrease consistently *and* the last
  per-epoch train loss is still at least `nontrain_frac` (a plan option, 0.9) of the
  chance-level loss ln C (C classes): the trial neither diverged nor learned
  (it sits at, or has fallen back to, chance). Like diverged trials these are
  excluded from every comparison and counted in details (`n_non-training`).
  C comes from the `n_classes` option, else from `data.dataset` (`N_CLASSES`);
  where neither gives it, the rule is off for that trial. `nontrain_frac=None`
  turns it off everywhere. A consistently decreasing curve is small-step
  however high its loss (a small η that learns slowly is still small-step);
- `large-step`: otherwise (the loss does not decrease consistently, but the
  trial trains);
- `unknown`: errored/running trials or fewer than 2 epochs logged.
The regime is a post-treatment subgroup: it comes from the curve whose outcome
is then tested, which `AnalysisPlan`'s `subgroups_from` rule refuses for any
plan that declares it. These plans predate a calibrated regime map; their
verdicts are exploratory in that sense (docs/science.md, "A plan is the whole
analysis").

The package: `plans.py` (the conjectures' plans and why their numbers),
`analysis.py` (the regime rule, the conjectures, the power table), `figures.py`.
"""
from __future__ import annotations

from sweeps.experiments.registry import Experiment, register
from sweeps.experiments.regimes.analysis import (
    chance_loss, classify_loss_curve, classify_regimes, is_three_step, large_step_generalizes,
    momentum, paired_by_seed, seeds_for_margin, tab_two_stage_power, three_step_baseline,
    two_stage)
from sweeps.experiments.regimes.figures import (fig_accuracy_heatmap, fig_loss_trajectories,
                                                fig_schedules)
from sweeps.experiments.regimes.plans import PLANS, REGIMES, TOL

__all__ = ["EXPERIMENT", "PLANS", "REGIMES", "TOL", "chance_loss", "classify_loss_curve",
           "classify_regimes", "fig_accuracy_heatmap", "fig_loss_trajectories", "fig_schedules",
           "is_three_step", "large_step_generalizes", "momentum", "paired_by_seed",
           "seeds_for_margin", "tab_two_stage_power", "three_step_baseline", "two_stage"]

EXPERIMENT = register(Experiment(
    name="regimes",
    title="Two regimes of training (Leclerc & Madry 2020)",
    conjectures=[momentum, large_step_generalizes, two_stage],
    figures={"regimes_fig1_loss.png": fig_loss_trajectories,
             "regimes_fig2_heatmap.png": fig_accuracy_heatmap,
             "regimes_fig3_schedules.png": fig_schedules},
    tables={"regimes_two_stage_power.csv": tab_two_stage_power},
    specs=("two_regimes.yaml", "two_stage_pilot.yaml", "two_stage.yaml"),
))
