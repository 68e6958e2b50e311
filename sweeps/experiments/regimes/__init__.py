"""Two regimes of deep-network training (Leclerc & Madry 2020).

Three specs, run in this order:

1. `two_regimes_calibration.yaml` (seeds 0-2): a grid of effective steps
   e = η/(1 − μ) at μ ∈ {0, 0.5, 0.9}. Conjecture `regimes.calibration`
   labels each (e, μ) cell from its seeds' loss curves and picks the main
   sweep's pair e_S, e_L (`regime_map.py`). The map and the pair are written
   into the main plans (`plans.REGIME_MAP`), so a main trial's regime is a
   function of its config: no trial is grouped by its own outcome.
2. `two_regimes_pilot.yaml` (its own seeds): the main design at 3 seeds, to
   size the confirmatory run (the engine's minimum detectable effects).
3. `two_regimes.yaml` (fresh seeds): the confirmatory run. Arms at e_S and
   e_L: constant η at a matched effective step for μ ∈ {0, 0.5, 0.9}, the
   same η at μ 0.5, and annealed (×0.1 at half training) at a matched step
   for every μ (`analysis.arm_of`). Conjectures in `plans.py`.

The two-stage schedule (`two_stage.py`; `two_stage_pilot.yaml`, `two_stage.yaml`)
is judged on its own sweeps.

The package: `plans.py` (the registered plans, the map, why their numbers),
`regime_map.py` (the regime of a curve, the calibration rule),
`analysis.py` (arms and the main conjectures), `two_stage.py`, `figures.py`.
"""
from __future__ import annotations

from sweeps.experiments.registry import Experiment, register
from sweeps.experiments.regimes.analysis import (
    arm_frame, arm_of, large_step_generalizes, large_step_optimizes_worse,
    momentum_acc_same_sign, momentum_matched, momentum_same_lr, paired_contrast)
from sweeps.experiments.regimes.figures import (fig_arm_curves, fig_arm_finals,
                                                fig_loss_trajectories, fig_regime_map,
                                                fig_schedules)
from sweeps.experiments.regimes.plans import (CAL, PLANS, REGIME_MAP, REGIMES, STEP_LARGE,
                                              STEP_SMALL, TOL)
from sweeps.experiments.regimes.regime_map import (
    boundaries, calibration, calibration_frame, calibration_table, cell_label, chance_loss,
    choose_steps, classify_loss_curve, classify_regimes, decrease_frac, effective_step, label_at,
    regime_map, step_key)
from sweeps.experiments.regimes.two_stage import (is_three_step, paired_by_seed, seeds_for_margin,
                                                  tab_two_stage_power, three_step_baseline,
                                                  two_stage)

__all__ = ["CAL", "EXPERIMENT", "PLANS", "REGIMES", "REGIME_MAP", "STEP_LARGE", "STEP_SMALL",
           "TOL", "arm_frame", "arm_of", "boundaries", "calibration", "calibration_frame",
           "calibration_table", "cell_label", "chance_loss", "choose_steps",
           "classify_loss_curve", "classify_regimes", "decrease_frac", "effective_step",
           "fig_arm_curves", "fig_arm_finals", "fig_loss_trajectories", "fig_regime_map",
           "fig_schedules", "is_three_step", "label_at", "large_step_generalizes",
           "large_step_optimizes_worse", "momentum_acc_same_sign", "momentum_matched",
           "momentum_same_lr", "paired_by_seed", "paired_contrast", "regime_map",
           "seeds_for_margin", "step_key", "tab_two_stage_power", "three_step_baseline",
           "two_stage"]

EXPERIMENT = register(Experiment(
    name="regimes",
    title="Two regimes of training (Leclerc & Madry 2020)",
    conjectures=[calibration, large_step_optimizes_worse, momentum_matched, momentum_same_lr,
                 momentum_acc_same_sign, large_step_generalizes, two_stage],
    figures={"regimes_calibration_loss.png": fig_loss_trajectories,
             "regimes_calibration_map.png": fig_regime_map,
             "regimes_fig1_arms.png": fig_arm_curves,
             "regimes_fig2_finals.png": fig_arm_finals,
             "regimes_fig3_schedules.png": fig_schedules},
    tables={"regimes_calibration.csv": calibration_table,
            "regimes_two_stage_power.csv": tab_two_stage_power},
    specs=("two_regimes_calibration.yaml", "two_regimes_pilot.yaml", "two_regimes.yaml",
           "two_stage_pilot.yaml", "two_stage.yaml"),
))
