"""The registered plans of the critical-periods experiment.

Every deficit claim is judged once per learning-rate schedule arm
(`SCHEDULES`: the paper's exponential decay, a constant rate, the decay
restarted where the deficit ends), as the verdict `<conjecture>[<arm>]`
with the arm in its plan's options, so a claim that holds only under the
decaying rate shows as such. Families (Holm within each; alpha 0.05):
`critical_periods.pilot` (the manipulation check alone),
`critical_periods.<arm>` (the removal, onset and noise claims of one arm, and
in the exponential arm the controls), `critical_periods.artefact` (the
referee's question on its own: does the critical period survive a constant
rate?) and `critical_periods.fisher` (Tr F in the clean exponential and
constant arms: another metric, not gated by the deficit). Each arm is its own
replication of the paper's claims, so its family is its own; pooling all
eleven deficit tests would set a bar no paired test of 8 seeds can pass
(11 × its smallest two-sided p, 2/256, is 0.086).

Every comparison is paired by seed: trends are Spearman within seed cells
(`min_per_stratum` 3: the three removal epochs, or the three onsets, of one
seed), differences are means of within-seed differences (`min_per_stratum`
8 seeds), Tr F is one clean run per seed (seeds as the units of a sign
test). Effects of interest: |rho| 0.5, two accuracy points, a share of 3/4.

The Fisher rule's numbers (`FISHER_RULE`) come from the pilot's clean runs
(seeds 100-102): Tr F measured with 2 label samples on 300 probe examples
scatters by about 15-20 % from one log-spaced measurement to the next on a
smooth stretch, so the curve is smoothed over 3 measurements and each side
of the peak may move against its trend by at most `tol` of the running
extreme; the peak must stand `drop` above both ends (a rise and a fall, not
noise on a plateau).
"""
from __future__ import annotations

from sweeps.conjectures.plan import AnalysisPlan, Check

KIND, START, END, EPOCHS = ("data.deficit.kind", "data.deficit.start_epoch",
                            "data.deficit.end_epoch", "train.epochs")
SCHED, RESTART = "optim.schedule.kind", "optim.schedule.restart_epoch"
SCHEDULES = ("exponential", "constant", "restart")
FISHER = "fisher/trace"
CONTROLS = ("vflip", "label_permutation")
MARGIN = 0.02
MIN_DROP = 0.01
# Fisher peak rule: smoothing width (measurements), tolerance against monotony
# on each side of the peak, least rise and fall relative to the peak
FISHER_RULE = {"smooth": 3, "tol": 0.25, "drop": 0.2}
DROP, WINDOW = FISHER_RULE["drop"], FISHER_RULE["smooth"]
FIX = ("make the deficit bite before judging critical periods: a stronger blur, a model and "
       "task whose high frequencies carry the label, longer training, or more seeds")
ACC = "final/val_acc"
BLUR_HURTS = Check("blur_hurts", f"the permanently blurred arm ends more than {MIN_DROP:g} below "
                                 "the clean arm of the same length, p < alpha")
_CHECK = {"min_drop": MIN_DROP}                    # the threshold of blur_hurts
_GATED = dict(metric=ACC, exclusions=("unfinished",), checks=(BLUR_HURTS,))
_TREND = dict(statistic="stratified_spearman", min_n=10, min_per_stratum=3,
              effect_of_interest=0.5)
_PAIRED = dict(min_n=16, min_per_stratum=8, effect_of_interest=0.02)
_WHERE = {"exponential": "under the exponential decay (x0.97 per epoch)",
          "constant": "at a constant learning rate",
          "restart": "when the exponential decay restarts where the deficit ends"}


def _per_arm(name: str, statement: str, **fields) -> dict[str, AnalysisPlan]:
    """One plan per schedule arm, keyed `<name>[<arm>]`, the arm in its options."""
    options = fields.pop("options")
    return {f"critical_periods.{name}[{arm}]": AnalysisPlan(
        conjecture=f"critical_periods.{name}", family=f"critical_periods.{arm}",
        options={**options, "schedule": arm}, statement=f"{statement} {_WHERE[arm]}", **fields)
        for arm in SCHEDULES}


# options budget, window, epochs pick the arms compared (clean epochs after the
# deficit, deficit length, run length); null: the sweep's most common one
PLANS = {
    "critical_periods.pilot_blur_hurts": AnalysisPlan(
        conjecture="critical_periods.pilot_blur_hurts", metric=ACC,
        statistic="non_inferiority", predicted_sign=-1, exclusions=("unfinished",),
        family="critical_periods.pilot", min_n=10, min_per_stratum=5, effect_of_interest=0.02,
        options={"min_drop": MIN_DROP},
        statement=f"a permanent blur lowers final test accuracy by more than {MIN_DROP:g} "
                  "against clean training of the same length (manipulation check)"),
    **_per_arm("removal_hurts", "final test accuracy decreases with the epoch N at which the "
               "blur deficit is removed (fixed clean budget afterwards, seeds paired)",
               **_GATED, **_TREND, predicted_sign=-1,
               options={**_CHECK, "deficit": "blur", "budget": None}),
    **_per_arm("early_onset_most_sensitive", "sensitivity (clean − final accuracy, paired by "
               "seed) to a blur window decreases with its onset epoch t0",
               **_GATED, **_TREND, predicted_sign=-1,
               options={**_CHECK, "deficit": "blur", "window": None, "epochs": None}),
    **_per_arm("noise_hurts_less_than_blur", "a noise deficit removed at epoch N leaves a higher "
               "final test accuracy than a blur deficit removed at the same N (paired by seed)",
               **_GATED, statistic="difference_of_means", predicted_sign=+1, **_PAIRED,
               options={**_CHECK, "budget": None}),
    "critical_periods.controls_no_lasting_effect": AnalysisPlan(
        conjecture="critical_periods.controls_no_lasting_effect", **_GATED,
        family="critical_periods.exponential", statistic="intersection_union",
        predicted_sign=+1, **_PAIRED,
        options={**_CHECK, "margin": MARGIN, "controls": list(CONTROLS), "budget": None,
                 "schedule": "exponential"},
        statement=f"{' and '.join(CONTROLS)} deficits, once removed, leave final test accuracy "
                  f"within {MARGIN:g} of clean training with the same budget (paired by seed, "
                  "exponential decay)"),
    "critical_periods.not_a_schedule_artefact": AnalysisPlan(
        conjecture="critical_periods.not_a_schedule_artefact", **_GATED,
        family="critical_periods.artefact", statistic="intersection_union", predicted_sign=+1,
        **_PAIRED, options={**_CHECK, "schedule": "constant", "deficit": "blur",
                            "budget": None, "window": None, "epochs": None},
        statement="at a constant learning rate both signatures of a critical period hold, "
                  "paired by seed: blur removed at the latest N ends below clean training of the "
                  "same budget, and a blur window at the first onset ends below one at the last"),
    **{f"critical_periods.fisher_rises_then_falls[{arm}]": AnalysisPlan(
        conjecture="critical_periods.fisher_rises_then_falls", metric=FISHER,
        statistic="sign_test", predicted_sign=+1,
        exclusions=("unfinished", "fewer_than_3_measurements"),
        family="critical_periods.fisher", min_n=8, min_per_stratum=1, effect_of_interest=0.25,
        options={**FISHER_RULE, "p0": 0.5, "schedule": arm,
                 "outcome": "per seed, the clean run's smoothed Tr F peaks strictly inside the "
                            "run, rises to it and falls after it, each within tol of monotone, "
                            "and the peak stands drop above both ends"},
        statement=f"in the clean run {_WHERE[arm]}, the Fisher trace rises then falls: its peak "
                  "is strictly inside the run and both sides are monotone within tolerance, in "
                  "more than half of the seeds")
       for arm in ("exponential", "constant")},
}
