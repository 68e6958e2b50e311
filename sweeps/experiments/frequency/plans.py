"""The registered plans of the frequency-principle experiment.

- `frequency.low_first` (v1, `frequency.yaml`): per trial, the convergence
  step of frequency i is the first probe step from which Δ_F(k_i) stays
  below `threshold` (absolute, 0.1) for `hold` probe steps; Kendall's τ_b
  between rank i and that step, > 0 on average (`paired_sign_flip`), one
  verdict per arm, Holm family `frequency`. `min_n` 7: the exact sign-flip p
  cannot go below 2/2ⁿ, and Holm's first rejection over the v1 specs' 3
  arms needs p < 0.0167 (2/128 = 0.0156). Effect of interest: mean τ 0.5.
  On MNIST-1D an absolute 0.1 is reached only once the training set is
  fitted, when every tracked peak converges within ~200 steps, so τ ranks
  near-ties; v2 below replaces that test for real data.

- `frequency.high_after_low` (v2, `frequency_v2.yaml`): per trial,
  t_i = the first probe step from which Δ_F(k_i) stays below `fraction` ×
  its value at step 0 for `hold` probe steps (relative: each frequency is
  judged against where it started, not against a level only a fitted
  network reaches). The per-trial contrast is d = ln t_high − ln t_low, the
  lowest tracked peak (rank `low`) against the highest (rank `high`,
  "last"), and the mean d is > 0 by the one-sample sign-flip test
  (`paired_sign_flip`), one verdict per (data set, model) arm, Holm family
  `frequency_v2` over the arms. A frequency that never converges is
  censored at the trial's last probe step (`censor: "budget"`): that pulls
  d toward 0 whichever of the two is censored (t_high > budget makes the
  true d larger, t_low > budget the true d more negative), so censoring can
  only hide an ordering, never make one. Both censored: d = 0, counted.
  Manipulation checks, per arm: `centred` (every trial ran the probe with
  `probes.frequency_centring` = the plan's `centring`, "mean": uncentred,
  the class priors leak into low k and Δ_F(k_0) starts near 0.2 on
  MNIST-1D, so a relative threshold would not compare like with like;
  `dynamics_core/measure/frequency.py`), `peaks_separated` (every trial's tracked
  peaks, from the logged `freq/k{i}` and `freq/bin`, lie at least
  `min_sep_bins` grid bins apart: the probe picks them with
  `probes.frequency_min_sep`, the plan checks that it did) and
  `low_converges` (the low frequency converged within the budget in at
  least `min_low_reached` of the arm's trials: when it does not, every d is
  censored toward 0 and the design cannot show the effect). `min_n` 8: Holm
  over 4 arms asks the first for p < 0.0125 and 2/2⁸ = 0.0078. Effect of
  interest ln 2: the high frequency takes twice as long as the low one.
  The fraction 0.5 and the effect of interest were fixed with the
  conjecture, before either pilot's results were read; the pilot
  (`frequency_v2_pilot.yaml`, seeds 100-103) then sized the confirmatory
  sweep (n, budgets) and its first, uncentred run is why the probe centres
  (the `centred` check). Calibration: the sign-flip design at 8 trials is in
  docs/science.md; 12 only lowers its p floor.
"""
from __future__ import annotations

import math

from sweeps.conjectures.plan import AnalysisPlan, Check

THRESHOLD = 0.1
ARM_FIELDS = ("data.dataset", "model.name")

CENTRED = Check("centred", "every trial's probe centred labels and outputs as the plan's centring "
                           "says (probes.frequency_centring)")
SEPARATED = Check("peaks_separated", "every trial's tracked peaks lie at least min_sep_bins grid "
                                     "bins apart (logged freq/k{i} over freq/bin)")
LOW_CONVERGES = Check("low_converges", "the low frequency converges within the budget in at least "
                                       "min_low_reached of the arm's trials")

PLANS = {
    "frequency.low_first": AnalysisPlan(
        conjecture="frequency.low_first", metric="freq/delta_k", statistic="paired_sign_flip",
        predicted_sign=+1, family="frequency", exclusions=("unfinished", "tau_undefined"),
        min_n=7, min_per_stratum=1, effect_of_interest=0.5,
        options={"threshold": THRESHOLD, "hold": 3, "unreached": "last",
                 "value": "per-trial Kendall tau_b between frequency rank and convergence step",
                 "parts": "one verdict per arm (data.dataset/model.name)",
                 "arm_fields": list(ARM_FIELDS)},
        statement="low frequencies converge first (per-trial Kendall τ between frequency rank "
                  "and convergence step is > 0 on average)"),
    "frequency.high_after_low": AnalysisPlan(
        conjecture="frequency.high_after_low", metric="freq/delta_k", statistic="paired_sign_flip",
        predicted_sign=+1, family="frequency_v2", exclusions=("unfinished",),
        min_n=8, min_per_stratum=1, effect_of_interest=math.log(2.0),
        checks=(CENTRED, SEPARATED, LOW_CONVERGES),
        options={"fraction": 0.5, "hold": 3, "low": 0, "high": "last", "censor": "budget",
                 "centring": "mean", "min_sep_bins": 10,
                 "min_low_reached": 0.5,
                 "value": "per-trial ln t_high - ln t_low, t_i the first probe step from which "
                          "delta_F(k_i) < fraction x delta_F(k_i) at step 0 for hold probes",
                 "parts": "one verdict per arm (data.dataset/model.name)",
                 "arm_fields": list(ARM_FIELDS)},
        statement="the highest tracked frequency converges later than the lowest (mean per-trial "
                  "ln t_high − ln t_low > 0)"),
}
