"""Do the stages line up? Every early-phase marker on the same trials.

Each paper on the early phase of training dates it with its own marker:
the break-even point (the spectra stall, or SGD turns unstable along the
top Hessian direction), the peak of the Fisher trace, the onset of
stiffness, the convergence of high frequencies, the end of the critical
period (deficits stop hurting), the rewind step from which a pruned network
matches the dense one. Here all of them are measured under one protocol,
on the same (η, S, seed) units, and their alignment is tested.

Protocol (`stages.yaml`): one 1-D CNN on all of MNIST-1D, SGD without
momentum at a constant η, a grid η × S, the same step budget everywhere.
Per unit: a reference run with every probe on a log cadence (t_BE, t_stab,
t_F, t_stiff, t_HF and the control t_fit), an onset sweep of short blur
windows (t_CP) and a rewind sweep of one-shot pruning (t_IMP). The rules,
their numbers and the conjectures are in `plans.py`; the readers in
`markers.py`; units and tests in `analysis.py`; figures in `figures.py`.
The table `stages_markers.csv` holds every unit's times and how each was
read, the input of any independent re-derivation.
"""
from __future__ import annotations

from sweeps.experiments.registry import Experiment, register
from sweeps.experiments.stages.analysis import (aligned, aligned_with_fit, closer_than_fit,
                                                correlation_matrix, marker_table, moves_together,
                                                role_of, spread_contrast, trial_frame,
                                                unit_frame, unit_slopes)
from sweeps.experiments.stages.figures import fig_correlation, fig_markers
from sweeps.experiments.stages.plans import MARKERS, PLANS, RULE

EXPERIMENT = register(Experiment(
    name="stages",
    title="Do the stages line up? Every early-phase marker on the same trials",
    conjectures=[aligned, aligned_with_fit, closer_than_fit, moves_together],
    figures={"stages_markers.png": fig_markers, "stages_correlation.png": fig_correlation},
    tables={"stages_markers.csv": marker_table},
    specs=("stages_pilot.yaml", "stages.yaml", "stages-cluster.yaml"),
))

__all__ = ["EXPERIMENT", "MARKERS", "PLANS", "RULE", "aligned", "aligned_with_fit",
           "closer_than_fit", "correlation_matrix", "fig_correlation", "fig_markers",
           "marker_table", "moves_together", "role_of", "spread_contrast", "trial_frame",
           "unit_frame", "unit_slopes"]
