"""The registered plans of the critical-periods experiment.

Plans (`PLANS`): the four deficit conjectures are the Holm family
`critical_periods`, the pilot check its own (`critical_periods.pilot`);
alpha 0.05; trends need 10 trials (seeds as blocks: trials of one seed share
their initialisation), comparisons 5 per arm (3 against 3 cannot reach
p < 0.05 in a permutation test); effects of interest |rho| 0.5 and 0.02 of
accuracy (two points). The Fisher conjecture is its own family
(`critical_periods.fisher`): it is not gated by `blur_hurts`, reads another
metric (Tr F, not final accuracy) over every arm, and adjusting it with the
deficit tests would couple a claim about training dynamics to whether the
deficit bit. Its statistic is `sign_test` (exact binomial, share against
1/2); min n 10: the exact two-sided p cannot go below 2/2ⁿ (6 trials at the
least, 6/6: p = 0.031), and at 10 one trial may miss (9/10: p = 0.021), as
a Monte-Carlo Tr F on a flat run sometimes does; effect of interest a share
of 3/4 (0.25 above 1/2).
"""
from __future__ import annotations

from sweeps.conjectures.plan import AnalysisPlan, Check

KIND, START, END, EPOCHS = ("data.deficit.kind", "data.deficit.start_epoch",
                            "data.deficit.end_epoch", "train.epochs")
FISHER = "fisher/trace"
CONTROLS = ("vflip", "label_permutation")
MARGIN = 0.02
MIN_DROP = 0.01
DROP, WINDOW = 0.2, 5          # Fisher: fall from the smoothed peak, smoothing width
FIX = ("make the deficit bite before judging critical periods: a stronger blur, a model and "
       "task whose high frequencies carry the label, longer training, or more seeds")
ACC = "final/val_acc"
BLUR_HURTS = Check("blur_hurts", f"the permanently blurred arm ends more than {MIN_DROP:g} below "
                                 "the clean arm of the same length, p < alpha")
_GATED = dict(metric=ACC, exclusions=("unfinished",), family="critical_periods",
              checks=(BLUR_HURTS,))
_CHECK = {"min_drop": MIN_DROP}                    # the threshold of blur_hurts
_TREND = dict(statistic="stratified_spearman", min_n=10, min_per_stratum=3,
              effect_of_interest=0.5)
_GROUPS = dict(min_n=10, min_per_stratum=5, effect_of_interest=0.02)
# options budget, window, epochs pick the arms compared (clean epochs after the
# deficit, deficit length, run length); null: the sweep's most common one
PLANS = {
    "critical_periods.pilot_blur_hurts": AnalysisPlan(
        conjecture="critical_periods.pilot_blur_hurts", metric=ACC,
        statistic="non_inferiority", predicted_sign=-1, exclusions=("unfinished",),
        family="critical_periods.pilot", **_GROUPS, options={"min_drop": MIN_DROP},
        statement=f"a permanent blur lowers final test accuracy by more than {MIN_DROP:g} "
                  "against clean training of the same length (manipulation check)"),
    "critical_periods.removal_hurts": AnalysisPlan(
        conjecture="critical_periods.removal_hurts", **_GATED, **_TREND, predicted_sign=-1,
        options={**_CHECK, "deficit": "blur", "budget": None},
        statement="final test accuracy decreases with the epoch N at which the blur deficit "
                  "is removed (fixed clean budget afterwards)"),
    "critical_periods.early_onset_most_sensitive": AnalysisPlan(
        conjecture="critical_periods.early_onset_most_sensitive", **_GATED, **_TREND,
        predicted_sign=-1, options={**_CHECK, "deficit": "blur", "window": None, "epochs": None},
        statement="sensitivity (clean − final accuracy) to a short blur window decreases with "
                  "its onset epoch t0"),
    "critical_periods.controls_no_lasting_effect": AnalysisPlan(
        conjecture="critical_periods.controls_no_lasting_effect", **_GATED,
        statistic="intersection_union", predicted_sign=+1, **_GROUPS,
        options={**_CHECK, "margin": MARGIN, "controls": list(CONTROLS), "budget": None},
        statement=f"{' and '.join(CONTROLS)} deficits, once removed, leave final test accuracy "
                  f"within {MARGIN:g} of clean training with the same budget"),
    "critical_periods.noise_hurts_less_than_blur": AnalysisPlan(
        conjecture="critical_periods.noise_hurts_less_than_blur", **_GATED,
        statistic="difference_of_means", predicted_sign=+1, **_GROUPS,
        options={**_CHECK, "budget": None},
        statement="a noise deficit removed at epoch N leaves a higher final test accuracy than "
                  "a blur deficit removed at the same N"),
    "critical_periods.fisher_rises_then_falls": AnalysisPlan(
        conjecture="critical_periods.fisher_rises_then_falls", metric=FISHER,
        statistic="sign_test", predicted_sign=+1,
        exclusions=("unfinished", "fewer_than_3_measurements"),
        family="critical_periods.fisher", min_n=10, min_per_stratum=1, effect_of_interest=0.25,
        options={"drop": DROP, "smooth": WINDOW, "p0": 0.5, "deficits": None,
                 "outcome": "per trial: the smoothed Tr F peaks at an interior measurement and "
                            "ends at most (1 - drop) x the peak"},
        statement=f"the Fisher trace peaks after its first and before its last measurement, "
                  f"then falls by at least {DROP:g} of the peak, in more than half of the trials"),
}
