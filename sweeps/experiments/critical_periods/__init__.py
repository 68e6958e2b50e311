"""Critical learning periods (Achille, Rovere & Soatto, ICLR 2019).

A network trained on a deficit (blurred inputs) for its first N epochs and
then on clean data for a fixed budget ends less accurate the larger N, and a
short deficit hurts most when it comes early; deficits that only re-map the
input (vertical flip) or the labels (a class permutation) leave no lasting
effect, and pure noise hurts less than blur. The trace of the Fisher
information rises early in training, then falls. The paper's numbers
(All-CNN, CIFAR-10, blur removed at epoch N, then 160 clean epochs): final
test accuracy 91.99 / 86.82 / 82.87 % for N = 0 / 40 / 100.

The paper decays the learning rate ×0.97 per epoch from epoch 0, so a
deficit removed at N leaves the network to recover at 0.97^N of the initial
rate: "later removal hurts more" and "early onsets are most sensitive" are
confounded with the schedule. So every claim is judged in three schedule
arms (`Arm.schedule`, from the config alone, `schedule_of`):
- exponential: ×0.97 per epoch from epoch 0 (the paper's);
- constant: the initial rate throughout;
- restart: the exponential decay starts over where the deficit ends
  (`optim.schedule.restart_epoch` = `data.deficit.end_epoch`), so every
  removal and onset trial recovers under the same schedule. Its clean and
  permanent trials are the exponential arm's (no deficit ends in them).

Protocol: SGD η 0.05 with momentum 0.9, weight decay 1e-3, batch 128; a 1-D
CNN on MNIST-1D with blur 40→10→40 (`critical_periods_pilot.yaml`, then
`critical_periods.yaml` on fresh seeds), an All-CNN on CIFAR-10 for clusters
(`critical_periods-cluster.yaml`, exponential arm only). Arms are told apart
by their config (`arm_of`): `data.deficit.kind`, `start_epoch`, `end_epoch`,
`train.epochs`, `optim.schedule.kind`, `optim.schedule.restart_epoch`.
- clean: no deficit; permanent: the deficit spans the whole run;
- removal: deficit on [0, N), then `budget = epochs − N` clean epochs;
- onset: deficit on [t₀, t₀ + w) inside a run of fixed length.
A trial with start 0 and clean epochs after the window is both a removal
trial (N = w) and the onset trial at t₀ = 0; each conjecture picks its
trials by geometry: removal trials share the budget, onset trials the
window length and the run length. N = 0 is the clean arm of `budget` epochs.
Every comparison is paired by seed (trends within seeds; differences over
the within-seed differences), since the arms of one seed share its
initialisation and data order.

Manipulation check `blur_hurts` (also judged alone as
`critical_periods.pilot_blur_hurts`): in the exponential arm, the
permanently blurred run ends significantly (p < alpha) and materially (by
more than `min_drop`) less accurate than the clean run of the same length and
seed: a test of H0: d = −min_drop for d = mean(blur always − clean),
predicted below. Every deficit conjecture's plan lists it; when it fails, the
verdict is `invalid_protocol` with the reason and what would fix it (`fix`
in details). The Fisher conjecture does not depend on the deficit and is not
gated.

Conjectures (final accuracy = `final/val_acc`, else the last `val/acc`),
verdicts `<conjecture>[<schedule arm>]` where judged per arm:
- `removal_hurts[arm]`: final accuracy decreases with N (blur removal trials
  plus the clean N = 0 run; Spearman within seeds, permutation p); details
  carry the shape (per-N means, drops over the halves of the N range, R² of a
  line against a one-step fit).
- `early_onset_most_sensitive[arm]`: sensitivity = the seed's clean accuracy
  (same run length) − final accuracy falls with t₀ (Spearman within seeds).
- `noise_hurts_less_than_blur[arm]`: at the same N, noise-removal trials end
  more accurate than blur-removal trials (paired difference of means).
- `controls_no_lasting_effect` (exponential arm): vflip and label
  permutation, removed at N, each end within `margin` of the clean run of the
  same budget (paired non-inferiority, H0: difference = −margin), one
  intersection–union test over the controls.
- `not_a_schedule_artefact` (the referee's question): in the constant-rate
  arm both signatures hold, paired by seed: blur removed at the latest N ends
  below clean (same budget), and the window at the first onset ends below the
  window at the last (intersection–union, each part predicted negative); the
  same contrasts in every arm are in details (`by_arm`).
- `fisher_rises_then_falls[exponential|constant]`: in the clean run of the
  arm, Tr F measured at log-spaced steps (≥ 24), smoothed over `smooth`
  measurements, peaks strictly inside the run, rises to the peak and falls
  after it, each side monotone within `tol` of its running extreme, the peak
  at least `drop` above both ends (`peak_shape`, `rises_then_falls`); seeds
  are the units of an exact binomial (sign) test of the share against 1/2.

The package: `plans.py` (the registered plans and why their numbers),
`analysis.py` (arms, the manipulation check, the conjectures), `figures.py`.
"""
from __future__ import annotations

from sweeps.experiments.registry import Experiment, register
from sweeps.experiments.critical_periods.analysis import (
    Arm, Peak, arm_frame, arm_of, arm_table, blur_check, blur_test, clean_acc,
    controls_no_lasting_effect, early_onset_most_sensitive, fisher_curves, fisher_rises_then_falls,
    in_schedule, noise_hurts_less_than_blur, not_a_schedule_artefact, onset_frame, peak_shape,
    pilot_blur_hurts, removal_frame, removal_hurts, removal_shape, rises_then_falls,
    schedule_of, signatures, smooth)
from sweeps.experiments.critical_periods.figures import fig_accuracy, fig_fisher
from sweeps.experiments.critical_periods.plans import (CONTROLS, END, EPOCHS, FISHER, FISHER_RULE,
                                                       FIX, KIND, MARGIN, MIN_DROP, PLANS,
                                                       RESTART, SCHED, SCHEDULES, START)

__all__ = ["CONTROLS", "END", "EPOCHS", "EXPERIMENT", "FISHER", "FISHER_RULE", "FIX", "KIND",
           "MARGIN", "MIN_DROP", "PLANS", "RESTART", "SCHED", "SCHEDULES", "START", "Arm", "Peak",
           "arm_frame", "arm_of", "arm_table", "blur_check", "blur_test", "clean_acc",
           "controls_no_lasting_effect", "early_onset_most_sensitive", "fig_accuracy",
           "fig_fisher", "fisher_curves", "fisher_rises_then_falls", "in_schedule",
           "noise_hurts_less_than_blur", "not_a_schedule_artefact", "onset_frame", "peak_shape",
           "pilot_blur_hurts", "removal_frame", "removal_hurts", "removal_shape",
           "rises_then_falls", "schedule_of", "signatures", "smooth"]

EXPERIMENT = register(Experiment(
    name="critical_periods",
    title="Critical learning periods (Achille, Rovere & Soatto 2019)",
    conjectures=[pilot_blur_hurts, removal_hurts, early_onset_most_sensitive,
                 noise_hurts_less_than_blur, controls_no_lasting_effect, not_a_schedule_artefact,
                 fisher_rises_then_falls],
    figures={"critical_periods_fig10_accuracy.png": fig_accuracy,
             "critical_periods_fisher.png": fig_fisher},
    tables={"critical_periods_arms.csv": arm_table},
    specs=("critical_periods.yaml", "critical_periods_pilot.yaml", "critical_periods-cluster.yaml"),
))
