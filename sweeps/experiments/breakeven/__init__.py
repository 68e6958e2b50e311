"""Break-even point (Jastrzebski et al., ICLR 2020): conjectures 1 and 2, the
rise and saturation of the spectra, and the link of η to generalization.

Conjecture 1: the maximum attained λ_H¹ (`hessian/top`) and λ_K¹
(`gradcov/top`) are smaller for a larger learning rate η or a smaller batch
size S. The paper compares the maxima reached early in training, before the
network fits its data; the registered window is therefore "up to the first
probe with train accuracy ≥ 0.65" (`until_probe/acc>=0.65`; `probe/acc` is
the accuracy on the probe set, drawn from the training data, at every probe
step). Trials that never reach it have no such window and are excluded
(`excluded_window_not_reached`).
Conjecture 2: the maximum attained Tr(K)/λ_K¹ (`gradcov/trace_over_top`) is
larger, and the maximum Tr(K) (`gradcov/trace`, and Tr(H) `hessian/trace`
when measured) smaller, for larger η or smaller S. The paper measures
conditioning along the trajectory, with its peaks after the break-even point;
at initialization the gradient covariance is nearly isotropic and Tr(K)/λ_K¹
is at its largest, so a max over the whole run measures the init, not η or S.
Its registered window is `after_breakeven`: measurements at or after each
trial's break-even step by the plan's detector (`saturation` on λ_K¹; trials
without one are excluded, `excluded_no_breakeven`).
Each verdict is one test along one axis: η within each batch size (and any
other varying config field), S within each η; trials sharing a seed share
their initialisation, so the seed is a block (`trend_test(..., blocks=seed)`).

Conjecture 2 in the mini-batch unit (`gradcov_mb/trace_over_top`) is a
secondary family, `breakeven.c2_mb`.
Rise and saturation (`breakeven.rise_saturate`, the paper's Fig. 6): λ_K¹
and λ_H¹ peak in the first part of training and stay within a registered
band of the peak afterwards, in most trials (exact binomial test), judged
only when the probe cadence resolved the rise (manipulation check
`cadence_resolves_rise`); `rise.py`.
Generalization (`breakeven.lr_generalizes`): a larger η reaches a smaller
max λ_K¹ and a higher final test accuracy, within each S.

The package: `plans.py` (the registered plans and why their numbers),
`analysis.py` (detectors, windows, conjectures 1, 2 and the η links),
`rise.py` (rise and saturation, the cadence), `figures.py`, `figures_rise.py`
(the spectra over the steps and the maxima beside the paper's numbers).
"""
from __future__ import annotations

from sweeps.experiments.registry import Experiment, register
from sweeps.experiments.breakeven.analysis import (
    EXCLUSIONS, breakeven_step_of, breakeven_steps, c1_batch, c1_lr, c2_batch, c2_lr,
    lr_generalizes, noise_term_status, peak_reached, run_stability_step, saturation_step, saturation_steps,
    stability_step, trial_maxima, window_bounds)
from sweeps.experiments.breakeven.figures import (fig_max_vs_hparams, fig_pca,
                                                  fig_pca_trajectories, fig_spectra,
                                                  fig_stability)
from sweeps.experiments.breakeven.figures_rise import fig_rise
from sweeps.experiments.breakeven.plans import PLANS
from sweeps.experiments.breakeven.rise import (cadence, peak_step, rise_saturate, rise_saturates,
                                              rise_steps, rise_table, smoothed)

__all__ = ["BREAKEVEN_STEPS_CSV", "RISE_CSV", "EXCLUSIONS", "EXPERIMENT", "PLANS", "breakeven_step_of",
           "breakeven_steps", "c1_batch", "c1_lr", "c2_batch", "c2_lr", "fig_max_vs_hparams",
           "fig_pca", "fig_pca_trajectories", "fig_spectra", "fig_stability", "noise_term_status",
           "cadence", "fig_rise", "lr_generalizes", "peak_step", "rise_saturate", "rise_saturates", "rise_steps",
           "rise_table", "smoothed", "peak_reached", "run_stability_step", "saturation_step", "saturation_steps",
           "stability_step", "trial_maxima", "window_bounds"]

BREAKEVEN_STEPS_CSV = "breakeven_steps.csv"
RISE_CSV = "breakeven_rise.csv"
EXPERIMENT = register(Experiment(
    name="breakeven",
    title="The break-even point (Jastrzebski et al. 2020)",
    conjectures=[c1_lr, c1_batch, c2_lr, c2_batch, rise_saturate, lr_generalizes],
    figures={"breakeven_fig6_spectra.png": fig_spectra,
             "breakeven_rise.png": fig_rise,
             "breakeven_max_vs_hparams.png": fig_max_vs_hparams,
             "breakeven_fig7_pca.png": fig_pca,
             "breakeven_stability.png": fig_stability},
    tables={BREAKEVEN_STEPS_CSV: breakeven_steps, RISE_CSV: rise_steps},
    specs=("breakeven_pilot.yaml", "breakeven.yaml", "breakeven-cifar.yaml"),
))
