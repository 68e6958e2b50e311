"""The registered plans of the two-regimes experiment.

Regimes come from a registered map, not from a trial's own curve. The
calibration sweep (`two_regimes_calibration.yaml`, its own seeds) runs a grid
of effective steps e = η/(1 − μ) at μ ∈ `MOMENTA`; `regimes.calibration`
labels each (e, μ) cell from its seeds' loss curves (`RULE`) and picks the
two effective steps the main sweep uses (`regime_map.choose_steps`). The
result is written down here (`REGIME_MAP`, `STEP_SMALL`, `STEP_LARGE`) and
is part of every main plan's options, so inside its hash: a main-sweep trial's
regime is a function of its (η, μ), a design variable
(`subgroups_from: calibration:regimes.calibration`).

Main conjectures (`two_regimes.yaml`, fresh seeds; family `regimes`, Holm
over the 7 tests), each a paired sign-flip test over seeds of one contrast
per seed (a seed fixes the initialisation and the data order in every arm):
- `regimes.large_step_optimizes_worse`: at equal steps (the same epochs),
  the large-step arm ends with the higher train loss than the small-step arm
  (per seed, mean over μ of loss(e_L, μ) − loss(e_S, μ), constant η;
  predicted +; paper Fig. 1).
- `regimes.momentum_matched[small-step]` / `[large-step]`: momentum at a
  matched effective step: loss(η = e(1 − μ), μ) − loss(η = e, μ = 0), mean
  over μ ∈ {0.5, 0.9}; predicted − (helps) in the small-step regime, +
  (hurts) in the large-step one. The step size is the same in both arms,
  so the contrast is momentum's alone.
- `regimes.momentum_same_lr[small-step]` / `[large-step]`: the paper's
  comparison, momentum at the same η: loss(η = e, μ = 0.5) − loss(η = e,
  μ = 0); predicted − and +. It also raises the effective step to 2e.
- `regimes.momentum_acc_same_sign`: momentum's effect on final test
  accuracy (the matched contrast) has the same sign in both regimes:
  intersection–union of the two two-sided tests at their common sign
  (paper Fig. 2).
- `regimes.large_step_generalizes`: with an anneal (×0.1 at half training,
  both arms), the large-step arm ends with the higher test accuracy (per
  seed, mean over μ of acc(e_L, μ) − acc(e_S, μ); predicted +).
The two-stage conjecture (`regimes.two_stage`) is its own family and sweep
(`two_stage.yaml`, sized by `two_stage_pilot.yaml`).

Effects of interest: 0.05 of train loss, 0.01 of test accuracy (momentum's
effect on it), 0.02 of test accuracy (large-step + anneal, as in the
other schedule comparisons). Minimum n: 9 seeds, the fewest whose smallest
exact sign-flip p (2/2^9) passes the first Holm step of 7 (0.05/7), 10 for
the intersection–union test (the engine's floor for a statistic that is not
one sign-flip test); the confirmatory sweep is sized from the pilot's spread. The two-stage margin's
seeds come from `seeds_for_margin`.
"""
from __future__ import annotations

from sweeps.conjectures.plan import AnalysisPlan, Check

LR, MOM = "optim.lr", "optim.momentum"
KIND, STAGE1 = "optim.schedule.kind", "optim.schedule.stage1_epochs"
MILESTONES, FACTOR = "optim.schedule.milestones", "optim.schedule.factor"
REGIMES = ("diverged", "non-training", "large-step", "small-step", "unknown")
# classes of the classification datasets dynamics_core.data loads
N_CLASSES = {"mnist1d": 10, "cifar10": 10, "mnist": 10, "fashion_mnist": 10}
# the regime rule of one loss curve (regime_map.classify_loss_curve)
RULE = {"min_decrease_frac": 0.9, "nontrain_frac": 0.9}
MOMENTA = [0.0, 0.5, 0.9]          # the momenta of the matched-step arms (0: the base arm)
SAME_LR_MOMENTUM = 0.5             # the same-η arm's momentum
TOL = 0.02
CAL = "regimes.calibration"
CALIBRATED = Check("arms_in_regime", "every arm's (η/(1 − μ), μ) cell carries its regime's label "
                   "on the registered map")

# ---- written down from the calibration sweep (`two_regimes_calibration.yaml`, seeds 0-2):
# regime of each effective step e = η/(1 − μ) (keys: μ, then e) and the chosen pair.
REGIME_MAP: dict[str, dict[str, str]] = {
    "0": {
        "0.025": "small-step", "0.05": "small-step", "0.1": "small-step", "0.2": "small-step",
        "0.4": "mixed", "0.8": "large-step", "1.6": "large-step", "3.2": "diverged",
        "6.4": "diverged",
    },
    "0.5": {
        "0.025": "small-step", "0.05": "small-step", "0.1": "small-step", "0.2": "small-step",
        "0.4": "small-step", "0.8": "large-step", "1.6": "large-step", "3.2": "large-step",
        "6.4": "non-training",
    },
    "0.9": {
        "0.025": "small-step", "0.05": "small-step", "0.1": "small-step", "0.2": "small-step",
        "0.4": "small-step", "0.8": "large-step", "1.6": "large-step", "3.2": "non-training",
        "6.4": "non-training",
    },
}
STEP_SMALL = 0.2        # the largest e small-step at every μ and at its same-η cell
STEP_LARGE = 1.6        # the largest e large-step at every μ and at its same-η cell

_CAL_OPTIONS = {**RULE, "momenta": MOMENTA, "same_lr_momentum": SAME_LR_MOMENTUM}
_DESIGN = {"regime_map": REGIME_MAP, "step_small": STEP_SMALL, "step_large": STEP_LARGE,
           "momenta": MOMENTA, "same_lr_momentum": SAME_LR_MOMENTUM,
           "subgroups_from": f"calibration:{CAL}", "pairing": "seed"}
_PAIRED = dict(statistic="paired_sign_flip", exclusions=("unfinished", "incomplete_seed"),
               family="regimes", min_n=9, min_per_stratum=1, checks=(CALIBRATED,))
_LOSS = dict(_PAIRED, metric="final/train_loss", effect_of_interest=0.05)


def _momentum(kind: str, regime: str, sign: int, what: str) -> AnalysisPlan:
    return AnalysisPlan(
        conjecture=f"regimes.momentum_{kind}", **_LOSS, predicted_sign=sign,
        statement=f"momentum {'lowers' if sign < 0 else 'raises'} the final train loss in the "
                  f"{regime} regime ({what})",
        options={**_DESIGN, "regime": regime, "arm": kind})


PLANS = {
    CAL: AnalysisPlan(
        conjecture=CAL, metric="decrease_frac", statistic="difference_of_means", predicted_sign=-1,
        statement="at the chosen large step the loss decreases less consistently than at the "
                  "chosen small step (paired by seed and μ)",
        exclusions=("unfinished",), family=CAL, min_n=12, min_per_stratum=3,
        effect_of_interest=0.2,
        checks=(Check("edge_bracketed", "at every μ the grid holds an effective step that trains "
                      "and a larger one that does not"),
                Check("pair_found", "an effective step is large-step at every μ and at the "
                      "same-η arm's cell, and one is small-step at all of them")),
        options=_CAL_OPTIONS),
    "regimes.large_step_optimizes_worse": AnalysisPlan(
        conjecture="regimes.large_step_optimizes_worse", **_LOSS, predicted_sign=+1,
        statement="at equal steps the large-step arm ends with a higher train loss than the "
                  "small-step arm (constant η, stratified by μ, paired by seed)",
        options={**_DESIGN, "schedule": "constant"}),
    "regimes.momentum_matched[small-step]": _momentum(
        "matched", "small-step", -1, "at a matched effective step η/(1 − μ)"),
    "regimes.momentum_matched[large-step]": _momentum(
        "matched", "large-step", +1, "at a matched effective step η/(1 − μ)"),
    "regimes.momentum_same_lr[small-step]": _momentum(
        "same_lr", "small-step", -1, "at the same η, so a larger effective step"),
    "regimes.momentum_same_lr[large-step]": _momentum(
        "same_lr", "large-step", +1, "at the same η, so a larger effective step"),
    "regimes.momentum_acc_same_sign": AnalysisPlan(
        conjecture="regimes.momentum_acc_same_sign",
        **{**_PAIRED, "statistic": "intersection_union", "min_n": 10},
        metric="final/val_acc", predicted_sign=+1, effect_of_interest=0.01,
        statement="momentum (at a matched effective step) moves the final test accuracy the "
                  "same way in both regimes",
        options={**_DESIGN, "parts": "matched-step momentum contrast of test accuracy, "
                 "small-step then large-step, at their common sign"}),
    "regimes.large_step_generalizes": AnalysisPlan(
        conjecture="regimes.large_step_generalizes", **_PAIRED, metric="final/val_acc",
        predicted_sign=+1, effect_of_interest=0.02,
        statement="with an anneal, the large-step arm reaches a higher final test accuracy than "
                  "the small-step arm (stratified by μ, paired by seed)",
        options={**_DESIGN, "schedule": "step"}),
    "regimes.two_stage": AnalysisPlan(
        conjecture="regimes.two_stage", metric="final/val_acc", statistic="non_inferiority",
        predicted_sign=+1, exclusions=("unfinished",), family="regimes.two_stage", min_n=10,
        min_per_stratum=5, effect_of_interest=TOL,
        options={"tol": TOL, "baseline": "3-step at the best initial η of the sweep",
                 "pairing": "seed"},
        statement=f"the two-stage schedule matches (within {TOL}) or beats the tuned 3-step "
                  "schedule"),
}
