"""Frequency principle (Xu, Zhang, Xiao 2019; Rahaman et al. 2019): networks
fit the low frequencies of the target first.

The probe projects each probe input on the first principal direction of the
training inputs, takes the nonuniform DFT of the labels and of the network's
outputs along that projection, tracks `probes.frequencies` peaks of
‖F[y](k)‖ in increasing frequency (the first local maxima, or with
`probes.frequency_min_sep` peaks at least that many grid bins apart), and
logs at each probe step Δ_F(k_i) = ‖F[y](k_i) − F[T](k_i)‖ / ‖F[y](k_i)‖ as
`freq/delta_k{i}` (i = 0 the lowest tracked frequency), the peaks as
`freq/k{i}` and the grid's bin as `freq/bin`.

Conjectures: `frequency.low_first` (v1: Kendall τ of absolute-threshold
convergence steps against rank; `frequency.yaml`, the 1-D regression check)
and `frequency.high_after_low` (v2: per-trial ln t_high − ln t_low under a
relative threshold, censored at the budget; `frequency_v2.yaml` on MNIST-1D
and 8×8 digits). The package: `plans.py` (the plans and the reasons for
their numbers), `analysis.py` (per-trial readers and the conjectures),
`figures.py`.
"""
from __future__ import annotations

from sweeps.experiments.frequency.analysis import (BIN, DELTA, E_HIGH, E_LOW, arms_of,
                                                   contrast_table, convergence_step,
                                                   convergence_table, delta_keys, high_after_low,
                                                   kendall_tau, low_first,
                                                   relative_convergence_step, trial_contrast,
                                                   trial_convergence)
from sweeps.experiments.frequency.figures import (fig_contrast, fig_curves, fig_heatmap,
                                                  fig_low_high, fig_relative_curves)
from sweeps.experiments.frequency.plans import ARM_FIELDS, PLANS, THRESHOLD
from sweeps.experiments.registry import Experiment, register

EXPERIMENT = register(Experiment(
    name="frequency",
    title="Frequency principle (Xu, Zhang, Xiao 2019; Rahaman et al. 2019)",
    conjectures=[low_first, high_after_low],
    figures={"frequency_fig9_heatmap.png": fig_heatmap,
             "frequency_delta_curves.png": fig_curves,
             "frequency_relative_curves.png": fig_relative_curves,
             "frequency_contrast.png": fig_contrast,
             "frequency_low_high.png": fig_low_high},
    tables={"frequency_convergence.csv": convergence_table,
            "frequency_contrast.csv": contrast_table},
    specs=("frequency.yaml", "frequency_v2_pilot.yaml", "frequency_v2.yaml", "frequency-cluster.yaml"),
))

__all__ = ["ARM_FIELDS", "BIN", "DELTA", "E_HIGH", "E_LOW", "EXPERIMENT", "PLANS", "THRESHOLD",
           "arms_of", "contrast_table", "convergence_step", "convergence_table", "delta_keys",
           "fig_contrast", "fig_curves", "fig_heatmap", "fig_low_high", "fig_relative_curves",
           "high_after_low", "kendall_tau", "low_first", "relative_convergence_step",
           "trial_contrast", "trial_convergence"]
