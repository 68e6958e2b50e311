"""The registered plans of the stiffness experiment (v2).

Every number that decides a verdict is here, in a plan's fields or options,
so it is inside the plan hash. The onset of overfitting is the epoch end of
the minimum of `val/loss` (1-based epoch); a trial with fewer than `window`
epoch ends after it never showed the onset and is excluded and counted
(`excluded_no_onset`).

Family `stiffness` (Holm over its 7 registered tests):
- `stiffness.rises_during_training[<key>]`: within-class train–train sign
  stiffness rises during training: per trial, its mean over the `window`
  epoch ends up to and including the onset (late) minus its mean over the
  first `window` epoch ends (early) > 0 (`paired_sign_flip`).
- `stiffness.near_zero_after_onset[<key>]`, for within-class train–val and
  train–train sign stiffness: after the onset it lies near 0. Per trial,
  `band` − |mean over the `window` epoch ends starting `lag` epochs after
  the onset| > 0 (`paired_sign_flip`); a trial whose run ends before that
  window is excluded and counted (`excluded_short`). The fall from the
  `window` epochs up to the onset is reported beside it.
- `stiffness.within_exceeds_between[<pair>]`: per trial and pair set, the
  mean over epoch ends of within − between class sign stiffness > 0.
- `stiffness.xi_vs_lr`: ξ, the input distance 1 − cos(x₁, x₂) at which
  binned within-class train–train sign stiffness first falls to the
  registered level `xi_level` (the probe's `probes.stiffness_xi_level`; the
  paper's level 0 is never reached on MNIST-1D), final value per trial,
  against η: a two-sided stratified Spearman trend in log η read by
  `inference.magnitude` (tested effect |ρ|, direction reported; nothing
  refutes). Trials whose config logs ξ at another level are refused.

Family `stiffness_stopper` (Holm over its 4 tests), on trials that train to
the end, so every rule's stop epoch is read off the same logged series:
- `stiffness.stopper_vs_baselines[<baseline>/<score>]`: the stiffness
  stopper (`stopper`: its rule, chosen on the pilot) against (a) stopping
  every trial at the fixed epoch `fixed_epoch` (chosen on the pilot: the
  epoch nearest its onsets) and (b) ordinary early stopping on `val/loss`
  with patience `es_patience` (stop at the first epoch end `es_patience`
  epochs after the running minimum, without restoring it). A rule that
  never fires trains to the last epoch. Scores per trial: `error`, |stop −
  onset| in epochs, and `acc`, the validation accuracy given up (best over
  the run − at the stop). Contrast: baseline's score − stopper's > 0 (the
  stopper better), `paired_sign_flip`.

Numbers: alpha 0.05; `min_n` 12 for the sign-flip tests (Holm's first
rejection among 7 needs p < 0.0071, the exact floor is 2/2ⁿ); effects of
interest 0.1 of sign stiffness (a tenth of its [−1, 1] scale) for the rise
and within − between, 0.02 inside the band, 2 epochs and 0.01 accuracy for
the stopper; `band` 0.1, `lag` 10 epochs and `window` 3 were fixed before
the pilot; `fixed_epoch` and the stopper's rule come from the pilot
(`stiffness.yaml`, seeds 0–3), `es_patience` 5 is the usual default.
"""
from __future__ import annotations

from sweeps.conjectures.plan import AnalysisPlan

LR = "optim.lr"
PAIRS = ("train_train", "train_val", "val_val")
TV_SIGN = "stiffness/train_val/sign"
TV_SIGN_WITHIN = "stiffness/train_val/sign_within"
TT_SIGN_WITHIN = "stiffness/train_train/sign_within"
VAL_LOSS, VAL_ACC, TRAIN_LOSS = "val/loss", "val/acc", "train/loss"
# ξ of within-class train–train sign stiffness (logged where it crosses the probe's level), and
# the distance-binned stiffness it is read from (artifact rows: centres, sign, cos).
XI = "stiffness/train_train/xi"
XI_LEVEL_FIELD = "probes.stiffness_xi_level"
DISTANCE_ARTIFACT = "stiffness_distance"

WINDOW = 3          # epoch ends averaged (early, late, before, after)
BAND, LAG = 0.1, 10
TV_COS_WITHIN = "stiffness/train_val/cos_within"
# chosen on the pilot (stiffness.yaml, seeds 0–3; docs/results.md §5): ξ at 0.5 was defined in
# 6 of its 12 trials, at 0.8 in 8 (computed from the distance artifacts); the fixed epoch with the
# least mean |epoch − onset| (4.4 epochs); the stopper's rule with the least mean |stop − onset|
# (3.0 epochs) over metric (train–val sign or cos, within class), bar 0.05–0.95, patience 1–5,
# absolute or relative. Sign stiffness stays above 0.7 in every pilot trial, so no sign rule
# located the onset (best 13 epochs); cosine falls steadily after the onset.
XI_LEVEL = 0.8
FIXED_EPOCH = 22
STOPPER_RULE = {"metric": TV_COS_WITHIN, "threshold": 0.45, "patience": 5, "relative": True}
ES_PATIENCE = 5


def within_key(pair: str, kind: str = "sign") -> str:
    return f"stiffness/{pair}/{kind}_within"


def between_key(pair: str, kind: str = "sign") -> str:
    return f"stiffness/{pair}/{kind}_between"


def _sign_flip(family: str, effect: float) -> dict:
    return dict(statistic="paired_sign_flip", predicted_sign=+1, family=family, min_n=12,
                min_per_stratum=1, effect_of_interest=effect)


_ONSET = {"window": WINDOW, "onset": f"epoch end of the minimum of {VAL_LOSS} (1-based)"}
_NEAR_ZERO = {**_ONSET, "band": BAND, "lag": LAG,
              "after": f"mean over the {WINDOW} epoch ends from onset + {LAG}",
              "before": f"mean over the {WINDOW} epoch ends up to and including the onset",
              "contrast": "band - |after| per trial"}
_STOPPER = {**_ONSET, "stopper": STOPPER_RULE, "fixed_epoch": FIXED_EPOCH, "es_patience": ES_PATIENCE,
            "es_rule": f"stop at the first epoch end {ES_PATIENCE} epochs after the running minimum "
                       f"of {VAL_LOSS}; no restore",
            "never_fires": "the rule trains to the last epoch",
            "scores": {"error": "|stop - onset| in epochs",
                       "acc": f"max {VAL_ACC} over the run - {VAL_ACC} at the stop"},
            "contrast": "baseline's score - stopper's score per trial"}
_SCORE_EFFECT = {"error": 2.0, "acc": 0.01}

PLANS = {
    f"stiffness.rises_during_training[{TT_SIGN_WITHIN}]": AnalysisPlan(
        conjecture="stiffness.rises_during_training", metric=TT_SIGN_WITHIN,
        **_sign_flip("stiffness", 0.1), exclusions=("unfinished", "no_onset"),
        options={**_ONSET, "early": f"mean over the first {WINDOW} epoch ends",
                 "late": f"mean over the {WINDOW} epoch ends up to and including the onset",
                 "contrast": "late - early per trial"},
        statement="within-class train–train sign stiffness rises during training (mean over the "
                  f"{WINDOW} epochs up to the onset − over the first {WINDOW} epochs > 0)"),
    **{f"stiffness.near_zero_after_onset[{key}]": AnalysisPlan(
        conjecture="stiffness.near_zero_after_onset", metric=key, **_sign_flip("stiffness", 0.02),
        exclusions=("unfinished", "no_onset", "short"), options=_NEAR_ZERO,
        statement=f"{key} lies within ±{BAND} of 0 from {LAG} epochs after the onset of "
                  f"overfitting ({BAND} − |mean over {WINDOW} epochs from onset + {LAG}| > 0)")
       for key in (TV_SIGN_WITHIN, TT_SIGN_WITHIN)},
    **{f"stiffness.within_exceeds_between[{pair}]": AnalysisPlan(
        conjecture="stiffness.within_exceeds_between", metric=within_key(pair),
        **_sign_flip("stiffness", 0.1), exclusions=("unfinished",),
        options={"pair": pair, "between": between_key(pair),
                 "contrast": "per trial, mean over epoch ends of within − between"},
        statement=f"{pair.replace('_', '–')} within-class sign stiffness exceeds between-class "
                  "(mean over epoch ends of within − between > 0)")
       for pair in PAIRS},
    "stiffness.xi_vs_lr": AnalysisPlan(
        conjecture="stiffness.xi_vs_lr", metric=XI, statistic="stratified_spearman",
        predicted_sign=+1, family="stiffness", min_n=12, min_per_stratum=3,
        effect_of_interest=0.5, exclusions=("unfinished", "no_xi"),
        options={"x": LR, "log_x": True, "value": "final ξ per trial", "xi_level": XI_LEVEL,
                 "xi_level_field": XI_LEVEL_FIELD, "strata": "the other varied config fields",
                 "direction": "reported, not predicted: a two-sided test read by magnitude(); "
                              "the tested effect is |rho|, predicted > 0; nothing refutes"},
        statement=f"ξ (where within-class stiffness falls to {XI_LEVEL} with input distance) "
                  "changes with η (direction reported, not predicted)"),
    **{f"stiffness.stopper_vs_baselines[{base}/{score}]": AnalysisPlan(
        conjecture="stiffness.stopper_vs_baselines", metric=VAL_LOSS,
        **_sign_flip("stiffness_stopper", _SCORE_EFFECT[score]), exclusions=("unfinished", "no_onset"),
        options={**_STOPPER, "baseline": base, "score": score},
        statement=f"the stiffness stopper beats {'a fixed epoch' if base == 'fixed_epoch' else 'val-loss early stopping'}"
                  f" in {'|stop − onset|' if score == 'error' else 'validation accuracy given up'}")
       for base in ("fixed_epoch", "patience") for score in ("error", "acc")},
}
