"""The registered plans of the two-regimes experiment.

Conjectures, each verdict under its plan (`PLANS`):
- `regimes.momentum[small-step]`: in small-step trials momentum lowers the
  final train loss (stratified Spearman of μ vs final loss within each η,
  seeds as blocks, predicted −); an η stratum whose informative cells hold
  fewer than 3 trials (at a regime boundary: one seed with two μ in the
  regime) is excluded and counted (`thin_strata`);
  `regimes.momentum[large-step]`: in large-step trials it does not: the same
  test, predicted +, so a significant decrease refutes; a null result is
  inconclusive (no test shows an absence).
- `regimes.large_step_generalizes`: final test accuracy of large-step trials
  is higher than that of small-step trials (difference of means).
These three are the Holm family `regimes` (one sweep, `two_regimes.yaml`).
- `regimes.two_stage[T=<T>]`: for each stage-1 length T of the ablation, the
  two-stage schedule's final test accuracy is not worse than the tuned 3-step
  schedule's (its best initial η in the sweep) by more than `tol` (0.02):
  non-inferiority, paired by seed (trials that share a seed share their
  initialisation), a permutation test of H0: d = −tol for d = mean over
  seeds of acc(two-stage) − acc(3-step), two-sided so that a significant
  d < −tol refutes. The Ts are the Holm family `regimes.two_stage` (its own
  sweep, `two_stage.yaml`, sized by `two_stage_pilot.yaml`).
Minimum n: 10 trials for a trend (3 per η stratum), 5 per arm for a
comparison (3 against 3 cannot reach p < 0.05 in a permutation test).
Effects of interest: |rho| 0.5; 0.02 of accuracy (two points), which for
the two-stage schedule is its margin: the seeds it needs at 80 % power are
`seeds_for_margin` of the pilot's spread of the paired difference (a margin
of 0.01 would need about four times as many, beyond a 2-core budget).
"""
from __future__ import annotations

from sweeps.conjectures.plan import AnalysisPlan

LR, MOM = "optim.lr", "optim.momentum"
KIND, STAGE1 = "optim.schedule.kind", "optim.schedule.stage1_epochs"
MILESTONES, FACTOR = "optim.schedule.milestones", "optim.schedule.factor"
REGIMES = ("diverged", "non-training", "large-step", "small-step", "unknown")
# classes of the classification datasets dynamics_core.data loads
N_CLASSES = {"mnist1d": 10, "cifar10": 10, "mnist": 10, "fashion_mnist": 10}
# the regime rule: part of every plan that reads regimes (see the module docstring)
RULE = {"min_decrease_frac": 0.9, "nontrain_frac": 0.9}
TOL = 0.02
_TREND = dict(statistic="stratified_spearman",
              exclusions=("unfinished", "diverged", "non_training", "thin_strata"),
              family="regimes", min_n=10, min_per_stratum=3, effect_of_interest=0.5)
PLANS = {
    "regimes.momentum[small-step]": AnalysisPlan(
        conjecture="regimes.momentum", **_TREND, metric="final/train_loss", predicted_sign=-1,
        statement="momentum lowers the final train loss in the small-step regime",
        options={"regime": "small-step", **RULE}),
    "regimes.momentum[large-step]": AnalysisPlan(
        conjecture="regimes.momentum", **_TREND, metric="final/train_loss", predicted_sign=+1,
        statement="momentum does not lower the final train loss in the large-step regime "
                  "(a significant decrease refutes)",
        options={"regime": "large-step", **RULE}),
    "regimes.large_step_generalizes": AnalysisPlan(
        conjecture="regimes.large_step_generalizes", metric="final/val_acc",
        statistic="difference_of_means", predicted_sign=+1,
        exclusions=("unfinished", "diverged", "non_training"), family="regimes", min_n=10,
        min_per_stratum=5, effect_of_interest=0.02, options=dict(RULE),
        statement="large-step trials reach a higher final test accuracy than small-step trials "
                  "(diverged and non-training trials excluded)"),
    "regimes.two_stage": AnalysisPlan(
        conjecture="regimes.two_stage", metric="final/val_acc", statistic="non_inferiority",
        predicted_sign=+1, exclusions=("unfinished",), family="regimes.two_stage", min_n=10,
        min_per_stratum=5, effect_of_interest=TOL,
        options={"tol": TOL, "baseline": "3-step at the best initial η of the sweep",
                 "pairing": "seed"},
        statement=f"the two-stage schedule matches (within {TOL}) or beats the tuned 3-step "
                  "schedule"),
}
