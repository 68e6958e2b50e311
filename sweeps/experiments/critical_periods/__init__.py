"""Critical learning periods (Achille, Rovere & Soatto, ICLR 2019).

A network trained on a deficit (blurred inputs) for its first N epochs and
then on clean data for a fixed budget ends less accurate the larger N, and a
short deficit hurts most when it comes early; deficits that only re-map the
input (vertical flip) or the labels (a class permutation) leave no lasting
effect, and pure noise hurts less than blur. The trace of the Fisher
information rises early in training, then falls. The paper's numbers
(All-CNN, CIFAR-10, blur removed at epoch N, then 160 clean epochs): final
test accuracy 91.99 / 86.82 / 82.87 % for N = 0 / 40 / 100.

Protocol: SGD η 0.05 with momentum 0.9, ×0.97 per epoch (exponential),
weight decay 1e-3, batch 128 (without momentum the 1-D CNN is at 43 % test
accuracy after 30 epochs); a 1-D CNN on MNIST-1D with blur 40→10→40
(`critical_periods.yaml`), an All-CNN on CIFAR-10 for clusters
(`critical_periods-cluster.yaml`). Arms are told apart by their config
(`arm_of`): `data.deficit.kind`, `start_epoch`, `end_epoch`, `train.epochs`.
- clean: no deficit; permanent: the deficit spans the whole run;
- removal: deficit on [0, N), then `budget = epochs − N` clean epochs;
- onset: deficit on [t₀, t₀ + w) inside a run of fixed length.
A trial with start 0 and clean epochs after the window is both a removal
trial (N = w) and the onset trial at t₀ = 0; each conjecture picks its
trials by geometry: removal trials share the budget, onset trials the
window length and the run length. N = 0 is the clean arm of `budget` epochs.

Manipulation check `blur_hurts` (also judged alone as
`critical_periods.pilot_blur_hurts`): the permanently blurred arm ends
significantly (p < alpha) and materially (by more than `min_drop`) less
accurate than the clean arm of the same length: a test of
H0: d = −min_drop for d = mean(blur always) − mean(clean), predicted below.
Every deficit conjecture's plan lists it; when it fails, the verdict is
`invalid_protocol` with the reason and what would fix it (`fix` in details: a
stronger deficit, a task whose high frequencies matter, more seeds): a
deficit that never hurt cannot show a critical period, and "controls leave
no lasting effect" would pass trivially. The Fisher conjecture does not
depend on the deficit and is not gated.

Conjectures (final accuracy = `final/val_acc`, else the last `val/acc`):
- `removal_hurts`: final accuracy decreases with N (blur removal trials plus
  the clean N = 0 arm; Spearman within seeds, permutation p). details carry the
  shape: per-N means, the drop over the first and the second half of the N
  range, and least-squares R² of a line against a one-step fit.
- `early_onset_most_sensitive`: sensitivity = mean clean accuracy (same run
  length) − final accuracy falls with t₀ (Spearman of sensitivity vs t₀ < 0).
- `controls_no_lasting_effect`: each of vflip and label permutation, removed
  at N, ends within `margin` (default 0.02 = 2 accuracy points) of the clean
  arm of the same budget: non-inferiority per control, a permutation test of
  H0: mean(control) − mean(clean) = −margin, and one intersection–union
  test over the controls: supported only when both are significantly above
  −margin, refuted when either is significantly below. The margin is about three times
  the seed-to-seed spread of the clean arm at the shipped size and a sixth
  of the pilot's drop at N = 40 (0.895 → 0.770).
- `noise_hurts_less_than_blur`: at the same N, noise-removal trials end more
  accurate than blur-removal trials (difference of means, permutation p).
- `fisher_rises_then_falls`: per trial, on the `fisher/trace` curve smoothed
  by a centred moving average of `window` (5) measurements, the maximum is
  interior (after the first and before the last measurement) and the last
  value is at most (1 − `drop`) × the maximum; across trials (every arm by
  default, `deficits` to choose) an exact binomial (sign) test of the share
  of such trials against 1/2 (`inference.sign_test`). Tr F is a Monte-Carlo estimate: on 300 probe
  examples one measurement scattered by about 25 % on MNIST-1D in the pilot
  with one label sample, so about 18 % with the spec's 2 and 8 % smoothed;
  `drop` = 0.2 (≈ 2.5 × that) keeps noise on a plateau from passing for a fall.

The package: `plans.py` (the registered plans and why their numbers),
`analysis.py` (arms, the manipulation check, the conjectures), `figures.py`.
"""
from __future__ import annotations

from sweeps.experiments.registry import Experiment, register
from sweeps.experiments.critical_periods.analysis import (
    Arm, arm_frame, arm_of, arm_table, blur_check, blur_test, clean_acc,
    controls_no_lasting_effect, early_onset_most_sensitive, fisher_rises_then_falls,
    noise_hurts_less_than_blur, onset_frame, pilot_blur_hurts, removal_frame, removal_hurts,
    removal_shape, rises_then_falls, smooth)
from sweeps.experiments.critical_periods.figures import fig_accuracy, fig_fisher
from sweeps.experiments.critical_periods.plans import (CONTROLS, END, EPOCHS, FISHER, FIX, KIND,
                                                       MARGIN, MIN_DROP, PLANS, START)

__all__ = ["CONTROLS", "END", "EPOCHS", "EXPERIMENT", "FISHER", "FIX", "KIND", "MARGIN", "MIN_DROP",
           "PLANS", "START", "Arm", "arm_frame", "arm_of", "arm_table", "blur_check", "blur_test",
           "clean_acc", "controls_no_lasting_effect", "early_onset_most_sensitive", "fig_accuracy",
           "fig_fisher", "fisher_rises_then_falls", "noise_hurts_less_than_blur", "onset_frame",
           "pilot_blur_hurts", "removal_frame", "removal_hurts", "removal_shape",
           "rises_then_falls", "smooth"]

EXPERIMENT = register(Experiment(
    name="critical_periods",
    title="Critical learning periods (Achille, Rovere & Soatto 2019)",
    conjectures=[pilot_blur_hurts, removal_hurts, early_onset_most_sensitive,
                 controls_no_lasting_effect, noise_hurts_less_than_blur, fisher_rises_then_falls],
    figures={"critical_periods_fig10_accuracy.png": fig_accuracy,
             "critical_periods_fisher.png": fig_fisher},
    tables={"critical_periods_arms.csv": arm_table},
    specs=("critical_periods.yaml", "critical_periods_pilot.yaml", "critical_periods-cluster.yaml"),
))
