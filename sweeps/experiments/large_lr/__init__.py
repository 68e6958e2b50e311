"""Large initial learning rate (Li, Wei & Ma 2019).

Two specs, run in this order:

1. `large_lr_calibration.yaml`: a constant-η grid on the patch data, every η
   trained for the main spec's pre-annealing epochs. Per η: did it train
   (every seed reached the train-accuracy target `target_train_acc`, none
   diverged), the steps to that target, the train loss at the last epoch
   (`large_lr_calibration.csv`). The rule (plan options): the large η is the
   largest η that trains, and the grid must hold a larger one that does not
   (check `edge_bracketed`: the large η sits at the edge); the small η is the
   largest η at most η_large / `min_ratio` that reaches the target in at most
   as many steps as the large η (check `small_lr_found`). Conjecture
   `large_lr.calibration`: the chosen small η ends the calibration with the
   lower train loss (small − large, paired by seed, predicted −), so it fits
   the training set at least as fast. The main spec writes down the η pair
   this run chose.
2. `large_lr.yaml`: the chosen η pair on the patch data and on clean data
   (the no-patch control), seeds shared by all arms (paired: a seed fixes the
   initialisation and the data order).

Arms, told apart by their config (`lr_arm`); `has_patch` tells patch data
from the control:
- `large-anneal`: step schedule with a single milestone (×factor at a
  fraction of training), no pre-activation noise (a 3-step schedule is `other`);
- `small`: constant schedule, no noise;
- `small+noise`: `model.preact_noise` > 0 (switched off at
  `optim.schedule.noise_off_epoch`); not in the shipped spec, judged nowhere,
  drawn when present;
- `other`: anything else (ignored).

Conjecture `large_lr.anneal_crossover` (patch arms): the small η is better
before annealing (test accuracy averaged over the `before_epochs` epochs up
to the large arm's LR drop) and worse after (final test accuracy). One
intersection–union test of the two paired differences (small − large,
before: +, after: −): supported when both are significant with the
predicted sign, refuted by a significant reversal of either; statistic =
effect = the smaller signed difference, the parts with their CIs in details.

Manipulation checks, over the same window before annealing (the mechanism
the paper explains the crossover by; a sweep without it did not test the
claim): `small_fits_as_fast`, the small arm's mean train loss is at most the
large arm's; `small_learns_patch`, its patch-only accuracy (`patch/acc`) is
higher. Either failing gives `invalid_protocol` with the numbers.

Conjecture `large_lr.patch_hurts_small` (the control): the patch costs the
small η more final test accuracy than it costs the large η. Per seed the
contrast (small_patch − small_clean) − (large_patch − large_clean), a
sign-flip test of its mean, predicted −; judged only when
`small_learns_patch` passes.

The package: `plans.py` (the registered plans and why their numbers),
`analysis.py` (arms, the calibration rule, the conjectures), `figures.py`.
"""
from __future__ import annotations

from sweeps.experiments.registry import Experiment, register
from sweeps.experiments.large_lr.analysis import (
    ARMS, anneal_crossover, anneal_epoch, calibration, calibration_frame, calibration_summary,
    calibration_table, choose_lrs, has_patch, lr_arm, patch_hurts_small, value_at_epoch,
    window_mean)
from sweeps.experiments.large_lr.figures import fig_calibration, fig_large_lr
from sweeps.experiments.large_lr.plans import CAL, CONTROL, FITS, LEARNS, NAME, PLANS

__all__ = ["ARMS", "CAL", "CONTROL", "EXPERIMENT", "FITS", "LEARNS", "NAME", "PLANS",
           "anneal_crossover", "anneal_epoch", "calibration", "calibration_frame",
           "calibration_summary", "calibration_table", "choose_lrs", "fig_calibration",
           "fig_large_lr", "has_patch", "lr_arm", "patch_hurts_small", "value_at_epoch",
           "window_mean"]

EXPERIMENT = register(Experiment(
    name="large_lr",
    title="A large initial learning rate (Li, Wei & Ma 2019)",
    conjectures=[calibration, anneal_crossover, patch_hurts_small],
    figures={"large_lr_accuracy.png": fig_large_lr, "large_lr_calibration.png": fig_calibration},
    tables={"large_lr_calibration.csv": calibration_table},
    specs=("large_lr_calibration.yaml", "large_lr.yaml"),
))
