"""The registered plans of the stiffness experiment.

Conjectures, each verdict under its plan (`PLANS`), all in the Holm family
`stiffness` (one sweep asks them together: up to 6 tests):
- `stiffness.train_val_falls_after_onset[<key>]`: per trial, the mean
  train–val sign stiffness over the 3 epochs up to and including the onset
  (before) and over the last 3 epochs of the run, all strictly after the
  onset (after). Predicted: |before| − |after| > 0 (stiffness moves toward 0
  once the model overfits), judged by the one-sample sign-flip test of the
  per-trial differences (`paired_sign_flip`); one verdict for the mean over
  all pairs (`sign`, mostly between-class pairs, negative early in training)
  and one for within-class pairs (`sign_within`, the class-matrix diagonal).
- `stiffness.within_exceeds_between[<pair>]`: per trial and pair set, the
  mean over epoch ends of within-class minus between-class sign stiffness.
  Predicted > 0 (`paired_sign_flip`); one verdict per pair set.
- `stiffness.xi_vs_lr`: the critical length ξ (input distance 1 − cos(x₁, x₂)
  at which within-class stiffness crosses 0) against η. The paper's versions
  disagree on its direction, so none is assumed: a two-sided stratified
  Spearman trend in log η read by `inference.magnitude`, whose tested effect
  is |ρ| (predicted > 0). A significant trend either way is supported ("ξ
  changes with η", the direction in details["direction"]); nothing refutes.
  Of the options (a predicted sign with a note, or a new "two-sided" mode
  of the plan and the verdict rules) this one changes no rule of the engine
  and tests exactly the claim.
Numbers of the plans: alpha 0.05. `min_n` 8 for the sign-flip tests: the
exact p cannot go below 2/2ⁿ, and Holm's first rejection among the family's
6 tests needs p < 0.05/6 = 0.0083, so n ≥ 8 (2/256 = 0.0078). `min_n` 9 for
ξ (3 η × 3 seeds, the shipped design: its exact p floor is 2/1680). Effects
of interest: 0.1 of sign stiffness (a tenth of its [−1, 1] scale; the
pilot's within-class fall after the onset, 0.97 → 0.87), |ρ| 0.5 for ξ.

"""
from __future__ import annotations

from sweeps.conjectures.plan import AnalysisPlan

LR = "optim.lr"
PAIRS = ("train_train", "train_val", "val_val")
TV_SIGN = "stiffness/train_val/sign"
TV_SIGN_WITHIN = "stiffness/train_val/sign_within"
VAL_LOSS, VAL_ACC, TRAIN_LOSS = "val/loss", "val/acc", "train/loss"
# ξ of within-class train–train sign stiffness (logged where it crosses 0), and the
# distance-binned stiffness it is read from (artifact rows: centres, sign, cos).
XI = "stiffness/train_train/xi"
DISTANCE_ARTIFACT = "stiffness_distance"
WINDOW = 3          # epoch ends averaged before and after the onset


def within_key(pair: str, kind: str = "sign") -> str:
    return f"stiffness/{pair}/{kind}_within"


def between_key(pair: str, kind: str = "sign") -> str:
    return f"stiffness/{pair}/{kind}_between"


_ONE_SAMPLE = dict(statistic="paired_sign_flip", predicted_sign=+1, family="stiffness",
                   min_n=8, min_per_stratum=1, effect_of_interest=0.1)
_ONSET = {"epochs": WINDOW, "onset": f"epoch end of the minimum of {VAL_LOSS}",
          "before": f"mean over the {WINDOW} epoch ends up to and including the onset",
          "after": f"mean over the last {WINDOW} epoch ends, all after the onset",
          "contrast": "|before| - |after| per trial"}
PLANS = {
    **{f"stiffness.train_val_falls_after_onset[{key}]": AnalysisPlan(
        conjecture="stiffness.train_val_falls_after_onset", metric=key, **_ONE_SAMPLE,
        exclusions=("unfinished", "no_onset"), options=_ONSET,
        statement=f"train–val sign stiffness ({key}) moves toward 0 after the onset of "
                  f"overfitting (|mean over the {WINDOW} epochs up to the min of val/loss| − "
                  f"|mean over the last {WINDOW} epochs| > 0)")
       for key in (TV_SIGN, TV_SIGN_WITHIN)},
    **{f"stiffness.within_exceeds_between[{pair}]": AnalysisPlan(
        conjecture="stiffness.within_exceeds_between", metric=within_key(pair), **_ONE_SAMPLE,
        exclusions=("unfinished",),
        options={"pair": pair, "between": between_key(pair),
                 "contrast": "per trial, mean over epoch ends of within − between"},
        statement=f"{pair.replace('_', '–')} within-class sign stiffness exceeds between-class "
                  "(mean over epoch ends of within − between > 0)")
       for pair in PAIRS},
    "stiffness.xi_vs_lr": AnalysisPlan(
        conjecture="stiffness.xi_vs_lr", metric=XI, statistic="stratified_spearman",
        predicted_sign=+1, family="stiffness", min_n=9, min_per_stratum=3,
        effect_of_interest=0.5, exclusions=("unfinished", "no_xi"),
        options={"x": LR, "log_x": True, "value": "final ξ per trial",
                 "strata": "the other varied config fields",
                 "direction": "reported, not predicted: a two-sided test read by magnitude(); "
                              "the tested effect is |rho|, predicted > 0; nothing refutes"},
        statement="the critical length ξ changes with η (direction reported, not predicted)"),
}
