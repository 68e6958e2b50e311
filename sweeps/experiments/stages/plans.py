"""The registered plans of the stages experiment: do the early-phase markers line up?

The unit is a trial of the protocol: one (η, S) cell and one seed, whose
reference run, onset sweep and rewind sweep share that seed. Every marker
is a time in optimizer steps (`MARKERS`; the readers are `markers.py`, the
rules and numbers `RULE`):

- t_BE, the reference: the saturation detector on λ_K¹ (`gradcov/top`,
  eps 0.05 over 3 measurements), the detector the break-even experiment
  registered for its conjecture 2 (it dates where the early rise stalls on
  the measured trajectory, and fires at every η);
- t_stab: the stability detector with the SGD-noise term (λ_H¹, s², S, N):
  the paper's own definition of the break-even point, which a small η may
  never reach (censored);
- t_F: the step of the maximum of Tr F smoothed over 3 measurements;
- t_stiff: the half-change of the class contrast of stiffness, train–train
  cosine within-class minus between-class, smoothed over 3: the step at
  which it has moved half of the way from its first value to its extreme
  (on this protocol it falls, from about 0.8 at initialisation: the first
  pilot);
- t_HF: the highest tracked label frequency's Δ_F below `hf_fraction` of its
  value at step 0, held 3 probes (the frequency experiment's v2 rule);
- t_CP: the onset sweep's crossing: the sensitivity to a blur window
  (reference accuracy − accuracy, the same seed and cell) falls to
  `cp_margin` and stays there, interpolated on the log axis of onsets;
- t_IMP: the rewind sweep's crossing: the one-shot pruned network rewound
  to k falls short of its own dense level by at most `imp_margin` from k
  on, interpolated on the log axis of k;
- t_fit, the control: the first probe with accuracy ≥ `fit_level` on the
  training probe set.
A marker that never occurs is censored at the run's last step ("budget");
one that already holds at the first design point (onset 0, k = 0) sits at
that point's log position ("before"). Both are kept, never dropped.

Conjectures (verdict per marker `<conjecture>[<marker>]`, Holm within each
family, alpha 0.05):
- `stages.aligned` (family `stages.alignment`): the mean of log(t_m/t_BE)
  over the units lies within ±log 2 (`equivalence`, TOST by sign flips):
  the marker dates the same event as the break-even point up to a factor 2.
- `stages.aligned_with_fit` (family `stages.control`): the same for
  log(t_m/t_fit), every marker and t_BE itself: does the marker merely
  track training progress?
- `stages.closer_than_fit` (family `stages.contrast`): per unit, the mean
  distance of the markers' log times to t_fit minus their mean pairwise
  distance, > 0 (`paired_sign_flip`): the markers agree with each other
  more closely than with plain training progress. Effect of interest
  log 2.
- `stages.moves_together` (families `stages.slopes_lr`, `stages.slopes_batch`):
  per marker, the slope of log(t_m/t_BE) against log η (within each seed and
  S) and against log S (within each seed and η) lies within ±`slope_margin`
  (`equivalence` over those strata): when η or S moves, the marker moves
  with t_BE. slope_margin 0.5: a factor-2 drift of the ratio over a factor 4
  in η or S, the primary margin spread over the design's range. Beside
  them each verdict reports the joint test of the issue's model
  log t_m = a_m + b_m log η + c_m log S + seed: the sum over markers of the
  squared pooled slope of log(t_m/t_BE), against its distribution when each
  seed's cell labels are permuted (`analysis.joint_slope_test`): a small p
  says some marker does not move with t_BE.
Manipulation check (every plan): `occurs`: the marker (and t_BE) was seen
inside the run in at least `min_seen` = 1/2 of the units; otherwise its
times are mostly the design's edges and the test would judge the design.

Numbers. The margins log 2 (primary) and 0.5 (slopes) were fixed with the
conjectures, before any pilot. The pilot (`stages_pilot.yaml`, seed 100,
one unit per cell, never used again) set the rest, in two attempts on that
seed. The first (2000 steps, η ∈ {0.04, 0.1, 0.25}, 250-step blur windows,
one-shot pruning at 80 %) showed that at η = 0.04 no marker occurs within
the budget (train-probe accuracy 0.5 at the end), that the stiffness class
contrast falls rather than rises (hence the half-change), that a 250-step
blur costs nothing measurable at any onset, and that at 80 % k = 0 already
matches dense (gap 0.003–0.029); a side run put one-shot pruning at 85 %
between the two regimes (gap 0.07 at k = 0, 0.03–0.04 at k = 50–800, η 0.2)
and 90 % beyond it (0.18 at k = 0, still 0.07 at k = 400). The second
attempt is the shipped pilot: η ∈ {0.1, 0.2, 0.4}, 3000 steps, 500-step
windows, 85 %. There `fit_level` 0.8 was reached in every cell at S = 32
(steps 1075–1990), 0.9 only at 1990–2443, where the log cadence has one
probe per 20 % of the run; the crossing margins 0.03 are the scatter of one
run's accuracy against another's there (onset costs −0.05 to +0.07 with no
trend in the onset): a smaller margin would date noise. `hf_fraction` 0.5
and `hf_hold` 3 are the frequency experiment's registered v2 rule.
n = 18 units at 3 seeds per cell puts the exact sign-flip p floor far
below Holm's 0.05/7 for the primary and control tests; the slope strata (6
along η, 9 along S) are the binding ones: along η the floor 1/2⁶ = 0.016
cannot pass Holm's 0.05/6, so those six verdicts can at best be
underpowered at this size (the joint permutation test is their read-out).
"""
from __future__ import annotations

import math

from sweeps.conjectures.plan import AnalysisPlan, Check

LR, BATCH, TRAIN_SIZE = "optim.lr", "train.batch_size", "data.train_size"
KIND, START = "data.deficit.kind", "data.deficit.start_epoch"
LEVELS, K = "pruning.levels", "pruning.rewind_step"
REFERENCE, CONTROL = "be", "fit"
MARKERS = ("stab", "fisher", "stiff", "hf", "cp", "imp")
NAMES = {"be": "t_BE", "stab": "t_stab", "fisher": "t_F", "stiff": "t_stiff", "hf": "t_HF",
         "cp": "t_CP", "imp": "t_IMP", "fit": "t_fit"}
WHAT = {"be": "break-even (saturation of λ_K¹)", "stab": "break-even (stability with noise)",
        "fisher": "peak of Tr F", "stiff": "half-change of the stiffness class contrast",
        "hf": "convergence of the highest frequency", "cp": "end of the critical period",
        "imp": "earliest rewind that matches dense", "fit": "train accuracy reached"}
RULE = {"be_key": "gradcov/top", "be_eps": 0.05, "be_window": 3,
        "stab_key": "hessian/top", "noise_s2_key": "sgd_noise/s2",
        "fisher_key": "fisher/trace", "smooth": 3,
        "stiff_within": "stiffness/train_train/cos_within",
        "stiff_between": "stiffness/train_train/cos_between", "stiff_frac": 0.5,
        "hf_fraction": 0.5, "hf_hold": 3,
        "fit_key": "probe/acc", "fit_level": 0.8,
        "cp_margin": 0.03, "imp_margin": 0.03,
        "acc_key": "final/val_acc", "min_seen": 0.5}
LOG2 = math.log(2.0)
SLOPE_MARGIN = 0.5
OCCURS = Check("occurs", "the marker and its reference were seen inside the run (not censored at "
                         "either edge) in at least min_seen of the units")


def _plan(conjecture: str, marker: str, statement: str, **fields) -> AnalysisPlan:
    options = {**RULE, "marker": marker, **fields.pop("options", {})}
    return AnalysisPlan(conjecture=f"stages.{conjecture}", metric="marker/log_ratio",
                        exclusions=("unfinished",), checks=(OCCURS,), options=options,
                        statement=statement, **fields)


PLANS: dict[str, AnalysisPlan] = {}
for m in MARKERS:
    PLANS[f"stages.aligned[{m}]"] = _plan(
        "aligned", m, f"{NAMES[m]} ({WHAT[m]}) lies within a factor 2 of t_BE: the mean of "
                      "log(t_m/t_BE) over the trials is within ±log 2 (TOST)",
        statistic="equivalence", predicted_sign=+1, family="stages.alignment", min_n=12,
        min_per_stratum=1, effect_of_interest=LOG2, options={"against": REFERENCE})
for m in (REFERENCE, *MARKERS):
    PLANS[f"stages.aligned_with_fit[{m}]"] = _plan(
        "aligned_with_fit", m, f"{NAMES[m]} ({WHAT[m]}) lies within a factor 2 of t_fit (train "
                               "accuracy reached): the mean of log(t_m/t_fit) is within ±log 2",
        statistic="equivalence", predicted_sign=+1, family="stages.control", min_n=12,
        min_per_stratum=1, effect_of_interest=LOG2, options={"against": CONTROL})
PLANS["stages.closer_than_fit"] = _plan(
    "closer_than_fit", "all", "the markers agree with each other more closely than with training "
                              "progress: per trial, their mean distance to t_fit (log) exceeds "
                              "their mean pairwise distance",
    statistic="paired_sign_flip", predicted_sign=+1, family="stages.contrast", min_n=12,
    min_per_stratum=1, effect_of_interest=LOG2,
    options={"markers": [REFERENCE, *MARKERS], "against": CONTROL})
for axis, field, within in (("lr", LR, "seed and S"), ("batch", BATCH, "seed and η")):
    for m in MARKERS:
        PLANS[f"stages.moves_together[{m}/{axis}]"] = _plan(
            "moves_together", m, f"{NAMES[m]} moves with t_BE along {'η' if axis == 'lr' else 'S'}: "
                                 f"the slope of log(t_m/t_BE) on log {'η' if axis == 'lr' else 'S'} "
                                 f"(within {within}) lies within ±{SLOPE_MARGIN:g}",
            statistic="equivalence", predicted_sign=+1, family=f"stages.slopes_{axis}", min_n=6,
            min_per_stratum=1, effect_of_interest=SLOPE_MARGIN,
            options={"against": REFERENCE, "axis": field})
