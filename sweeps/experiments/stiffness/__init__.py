"""Stiffness (Fort, Nowak, Jastrzebski, Narayanan 2019): conjectures, figures,
tables, and a stopper that needs no validation loss.

Stiffness of a pair (x₁, x₂) is the sign (or cosine) of g₁·g₂, the product of
their per-example loss gradients: positive when a step on x₁ also lowers the
loss on x₂. The probe logs it each epoch (`probes.schedule.kind: epoch`) for
train–train, train–val and val–val pairs, as a mean over pairs (`sign`,
`cos`) and as class means: within-class (diagonal of the class matrix C(a, b))
and between-class (off-diagonal).

Onset of overfitting: the epoch of minimum validation loss (`val/loss` at
epoch ends). A trial whose validation loss is still at its minimum fewer than
`window` epochs before the end never showed the onset and is excluded and
counted (`excluded_no_onset`).

`stiffness_stop_epoch`) stops a trial once train–val within-class sign
stiffness, after having been above a threshold (absolute, or a fraction of
its running maximum), stays below it for `patience` consecutive epochs; a
spec's `stopper: {kind: stiffness}` runs it in Tune, and `evaluate_stopper`
scores it on held-out trials against the true onset, from the logged series
(offline) or from the stop epochs the Tune stopper recorded (online). In a
pilot (MNIST-1D, 1-D CNN, 500 examples, η ∈ {0.1, 0.2} × 3 seeds, 60
epochs) within-class train–val sign stiffness fell from 0.97 to 0.87 after
the onset but never near 0: a bar of 0.5 never fired, an absolute 0.95
stopped all six trials 12.5 epochs from the onset on average, giving up
0.076 validation accuracy. The stopper's defaults (absolute 0.97, patience
3) were chosen on seeds 0–2 of `stiffness.yaml`.

The package: `plans.py` (the conjectures' plans and why their numbers),
`analysis.py` (per-trial summaries, the conjectures, scoring the stopper),
`figures.py`.
"""
from __future__ import annotations

from sweeps.experiments.registry import Experiment, register
from sweeps.experiments.stiffness.analysis import (before_after, evaluate_stopper, onset,
                                                   onsets_table, train_val_falls_after_onset,
                                                   trial_summary, within_exceeds_between, xi_vs_lr)
from sweeps.experiments.stiffness.figures import fig_class_matrices, fig_distance, fig_dynamics
from sweeps.experiments.stiffness.plans import (DISTANCE_ARTIFACT, LR, PAIRS, PLANS, TV_SIGN,
                                                TV_SIGN_WITHIN, VAL_ACC, VAL_LOSS, XI,
                                                between_key, within_key)
# the stopper's rule lives with the stoppers; named here as the experiment's
from sweeps.stoppers import StiffnessStopper, stiffness_stop_epoch

__all__ = ["DISTANCE_ARTIFACT", "EXPERIMENT", "LR", "PAIRS", "PLANS", "TV_SIGN", "TV_SIGN_WITHIN",
           "VAL_ACC", "VAL_LOSS", "XI", "StiffnessStopper", "before_after", "between_key",
           "evaluate_stopper", "fig_class_matrices", "fig_distance", "fig_dynamics", "onset",
           "onsets_table", "stiffness_stop_epoch", "train_val_falls_after_onset", "trial_summary",
           "within_exceeds_between", "within_key", "xi_vs_lr"]

EXPERIMENT = register(Experiment(
    name="stiffness",
    title="Stiffness (Fort et al. 2019)",
    conjectures=[train_val_falls_after_onset, within_exceeds_between, xi_vs_lr],
    figures={"stiffness_fig5_dynamics.png": fig_dynamics,
             "stiffness_class_matrices.png": fig_class_matrices,
             "stiffness_vs_distance.png": fig_distance},
    tables={"stiffness_onsets.csv": onsets_table},
    specs=("stiffness.yaml", "stiffness-cluster.yaml", "stiffness_heldout.yaml", "stiffness_stopper.yaml"),
))
