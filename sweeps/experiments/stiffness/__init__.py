"""Stiffness (Fort, Nowak, Jastrzebski, Narayanan 2019): conjectures, figures,
tables, and a stopper that needs no validation loss, scored against baselines.

Stiffness of a pair (x₁, x₂) is the sign (or cosine) of g₁·g₂, the product of
their per-example loss gradients: positive when a step on x₁ also lowers the
loss on x₂. The probe logs it each epoch (`probes.schedule.kind: epoch`) for
train–train, train–val and val–val pairs, as a mean over pairs (`sign`,
`cos`) and as class means: within-class (diagonal of the class matrix C(a, b))
and between-class (off-diagonal); and ξ, the input distance at which binned
within-class train–train stiffness falls to `probes.stiffness_xi_level`.

Onset of overfitting: the epoch of minimum validation loss (`val/loss` at
epoch ends). The setting (`stiffness.yaml`: MNIST-1D, 1000 examples, 20 %
label noise) overfits early, so the onset is a real event in every trial.
Conjectures (`plans.py`, where every number that decides a verdict is
registered): stiffness rises during training; within-class train–val and
train–train stiffness lie near 0 a fixed lag after the onset; within >
between class; ξ against η; and the stiffness stopper (`sweeps.stoppers`)
against a fixed epoch chosen on the pilot and against val-loss early
stopping, paired per trial on held-out trials trained to the end.

`stiffness_stop_epoch` stops a trial once within-class train–val sign
stiffness, after having been above a bar, stays below it for `patience`
epochs; a spec's `stopper: {kind: stiffness}` runs it in Tune, and
`evaluate_stopper` scores it offline from logged series or from the stop
epochs the Tune stopper recorded.

The package: `plans.py` (the plans and why their numbers), `analysis.py`
(per-trial summaries, the conjectures, the stopper's scores), `figures.py`.
"""
from __future__ import annotations

from sweeps.experiments.registry import Experiment, register
from sweeps.experiments.stiffness.analysis import (baselines_table, before_after, es_stop_epoch,
                                                   evaluate_stopper, near_zero_after_onset, onset,
                                                   onsets_table, rises_during_training,
                                                   stopper_of, stopper_vs_baselines, trial_summary,
                                                   within_exceeds_between, xi_vs_lr)
from sweeps.experiments.stiffness.figures import (fig_baselines, fig_class_matrices, fig_distance,
                                                  fig_dynamics)
from sweeps.experiments.stiffness.plans import (DISTANCE_ARTIFACT, LR, PAIRS, PLANS, TT_SIGN_WITHIN,
                                                TV_SIGN, TV_SIGN_WITHIN, VAL_ACC, VAL_LOSS, XI,
                                                between_key, within_key)
# the stopper's rule lives with the stoppers; named here as the experiment's
from sweeps.stoppers import StiffnessStopper, stiffness_stop_epoch

__all__ = ["DISTANCE_ARTIFACT", "EXPERIMENT", "LR", "PAIRS", "PLANS", "TT_SIGN_WITHIN", "TV_SIGN",
           "TV_SIGN_WITHIN", "VAL_ACC", "VAL_LOSS", "XI", "StiffnessStopper", "baselines_table",
           "before_after", "between_key", "es_stop_epoch", "evaluate_stopper", "fig_baselines",
           "fig_class_matrices", "fig_distance", "fig_dynamics", "near_zero_after_onset", "onset",
           "onsets_table", "rises_during_training", "stiffness_stop_epoch", "stopper_of",
           "stopper_vs_baselines", "trial_summary", "within_exceeds_between", "within_key",
           "xi_vs_lr"]

EXPERIMENT = register(Experiment(
    name="stiffness",
    title="Stiffness (Fort et al. 2019)",
    conjectures=[rises_during_training, near_zero_after_onset, within_exceeds_between, xi_vs_lr,
                 stopper_vs_baselines],
    figures={"stiffness_fig5_dynamics.png": fig_dynamics,
             "stiffness_class_matrices.png": fig_class_matrices,
             "stiffness_vs_distance.png": fig_distance,
             "stiffness_stopper_vs_baselines.png": fig_baselines},
    tables={"stiffness_onsets.csv": onsets_table},
    specs=("stiffness.yaml", "stiffness-cluster.yaml", "stiffness_heldout.yaml", "stiffness_stopper.yaml"),
))
