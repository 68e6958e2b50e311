"""Break-even point (Jastrzebski et al., ICLR 2020): conjectures 1 and 2.

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

The package: `plans.py` (the registered plans and why their numbers),
`analysis.py` (detectors, windows, the conjectures), `figures.py`.
"""
from __future__ import annotations

from sweeps.experiments.registry import Experiment, register
from sweeps.experiments.breakeven.analysis import (
    EXCLUSIONS, breakeven_step_of, breakeven_steps, c1_batch, c1_lr, c2_batch, c2_lr,
    noise_term_status, peak_reached, run_stability_step, saturation_step, saturation_steps,
    stability_step, trial_maxima, window_bounds)
from sweeps.experiments.breakeven.figures import (fig_max_vs_hparams, fig_pca,
                                                  fig_pca_trajectories, fig_spectra,
                                                  fig_stability)
from sweeps.experiments.breakeven.plans import PLANS

__all__ = ["BREAKEVEN_STEPS_CSV", "EXCLUSIONS", "EXPERIMENT", "PLANS", "breakeven_step_of",
           "breakeven_steps", "c1_batch", "c1_lr", "c2_batch", "c2_lr", "fig_max_vs_hparams",
           "fig_pca", "fig_pca_trajectories", "fig_spectra", "fig_stability", "noise_term_status",
           "peak_reached", "run_stability_step", "saturation_step", "saturation_steps",
           "stability_step", "trial_maxima", "window_bounds"]

BREAKEVEN_STEPS_CSV = "breakeven_steps.csv"
EXPERIMENT = register(Experiment(
    name="breakeven",
    title="The break-even point (Jastrzebski et al. 2020)",
    conjectures=[c1_lr, c1_batch, c2_lr, c2_batch],
    figures={"breakeven_fig6_spectra.png": fig_spectra,
             "breakeven_max_vs_hparams.png": fig_max_vs_hparams,
             "breakeven_fig7_pca.png": fig_pca,
             "breakeven_stability.png": fig_stability},
    tables={BREAKEVEN_STEPS_CSV: breakeven_steps},
    specs=("breakeven.yaml", "breakeven-cifar.yaml"),
))
