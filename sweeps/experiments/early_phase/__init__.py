"""The early phase of neural network training (Frankle, Schwab & Morcos, ICLR 2020).

Iterative magnitude pruning finds sparse subnetworks that train to the dense
accuracy when their surviving weights are rewound to their values at an
early iteration k, but (for deep networks at larger learning rates) not when
rewound to the initialisation (k = 0). The state at k is not just any
draw: randomising the magnitudes or the signs of the survivors, shuffling
them within a layer or across the network, or re-initialising them loses
accuracy at high sparsity. Over the same early iterations the network moves
far from its initialisation, its gradient norm falls and many weights flip
their sign.

Protocol (v1 and v2): one trial is one IMP chain (`dynamics_core.imp`): the dense level
0, then `pruning.levels` levels of global magnitude pruning (`pruning.rate`
of the survivors each, 20 % in the paper), each rewound to step
k = `pruning.rewind_step` and retrained. A trial with
`pruning.ablation` trains each pruning level twice, unablated then ablated at
the rewind point with the same mask, so it carries its own paired control.
Arms are told apart by config: `optim.lr` (the η arm), `pruning.rewind_step`
(k) and `pruning.ablation`. A trial's rows (`level_frame`): per loop level,
the sparsity, the IMP level (times pruned), whether ablated, and the final
test accuracy `level/<l>/final/val_acc`.

v1 (`early_phase.yaml`, kept as run; the referee's objections below are why
v2 exists). Statistic ("high-sparsity accuracy"): per trial and condition, the mean test
accuracy over the IMP levels whose sparsity is at least `high` (default
0.75, where k = 0 starts to fall away in the paper: IMP levels ≥ 7 at rate
0.2, ≥ 3 at rate 0.4), i.e. the area under the accuracy–sparsity
curve over that range divided by its number of levels. It is read at fixed
levels that every arm shares, so it needs no threshold on the dense accuracy.

Conjectures (registered plans `PLANS`, one family per conjecture; one
verdict per η arm (and k), named `<conjecture>[lr=…,k=…]`, Holm over the
family). Paired permutation tests over n seeds have 2^n sign arrangements,
so the smallest two-sided p is 2/2^n: 7 seeds are needed for p < 0.05 after
Holm over two η arms, 6 for one.
- `rewind_beats_init`: per η arm, high-sparsity accuracy of the chain
  rewound to the arm's largest k minus that of the k = 0 chain of the same
  seed, > 0 (difference of means, permutation within seed blocks; option
  `k` picks another k, the means of every k are in details).
- `signs_and_magnitudes_needed`: at each (η, k) with ablation trials, each
  of `random_magnitudes_kept_signs` and `kept_magnitudes_random_signs` ends
  below the unablated rewind of the same trial at high sparsity: two paired
  differences (ablated − unablated, blocks = seed), both predicted negative,
  joined by an intersection-union test.
- `shuffling_fails`: the same for `shuffle_layer` and `shuffle_network`.
`reinit` trials are drawn and tabled, not judged.
Manipulation checks (all three plans): `dense_learns` (mean dense accuracy
of the trials judged ≥ `min_dense_acc`, 0.5; chance is 0.1) and
`high_sparsity_reached` (every trial judged has at least one level at
sparsity ≥ `high`).

What the paper reports (ResNet-20, CIFAR-10): rewinding becomes effective
at about 500–2000 iterations (2–10 epochs), keeping the dense accuracy at
sparsities where k = 0 no longer does; at high sparsity both signs and
magnitudes matter, and shuffled weights fail.

v2 (`early_phase_v2_pilot.yaml` on seeds 100-103, then `early_phase_v2.yaml`
on fresh seeds 200-207, never pooled), answering the referee: v1 never
compared the sparse networks with the dense one (its dense net, at a
constant η 0.2 for 10 epochs, ended below the sparse ones), its largest k
was 25 % of training, and k* and the timeline were figures. v2 trains every
level for 30 epochs (1200 steps) under a step schedule (η ×0.1 at 50 % and
75 %), so the dense level 0 plateaus (the registered check
`dense_plateaus`); prunes 55 % per level for 3 levels (55 / 79.75 / 90.9 %
sparsity); rewinds to k ∈ {0, 10, 20, 40} steps (up to 3.3 % of training;
the pilot also ran η 0.05 and k = 5); runs the four judged ablations at
η 0.2 and k = 40 on two levels (to 79.75 %); probes the timeline at listed
steps that hold every k. Every v2 accuracy claim reads d = (IMP level −
dense) final test accuracy of the same trial (`level_gaps`), and "matches
dense" is a TOST within ±margin over seeds. Conjectures (plans and their
numbers' reasons in `plans.py`):
- `rewound_matches_dense[lr=η,sparsity=s]`: TOST at k*, the end of the
  fixed sequence of TOSTs from the largest k down (`k_star`; censored at
  k_max, never dropped), with k*'s CI over seed resamples (`k_star_ci`).
- `k_star_positive[lr=η_max,sparsity=s]`: k* > 0 — the TOST at k* and
  k = 0 ending more than the margin below dense (intersection-union).
- `signs_and_magnitudes_at_k_star`, `shuffling_at_k_star`: v1's ablation
  tests at the first IMP level with sparsity ≥ 0.75, k = 40.
- `dist_init_rises`, `grad_norm_falls`: per seed Kendall τ over the dense
  run's probes in [1, early_end], mean τ by the exact sign-flip test;
  `sign_flips_before_k_star`: the share of final sign flips reached at k*
  (at the 79.75 % level) exceeds k*/T.

The package: `plans.py` (the registered plans and why their numbers),
`analysis.py` (rows, k*, checks, conjectures), `figures.py`.
"""
from __future__ import annotations

from sweeps.experiments.early_phase.analysis import (
    KStar, dense_gap, dense_timeline, level_gaps, sparsity_label, dist_init_rises, gap_table, grad_norm_falls,
    high_sparsity_acc, k_star, k_star_ci, k_star_positive, level_frame, level_table,
    plateau_gains, rewind_beats_init, rewound_matches_dense, shuffling_at_k_star,
    shuffling_fails, sign_flips_before_k_star, signs_and_magnitudes_at_k_star,
    signs_and_magnitudes_needed, v2_checks)
from sweeps.experiments.early_phase.figures import (fig_ablations, fig_match, fig_sparsity,
                                                    fig_timeline, fig_timeline_k_star)
from sweeps.experiments.early_phase.plans import (
    ABLATION, ABLATION_K, ABLATIONS_RUN, ABLATIONS_V2, CHECKS, EARLY_END, FOCUS, HIGH, K, LEVEL_KEYS, LR,
    MARGIN, MIN_DENSE_ACC, PLANS, PLATEAU_GAIN, SHUFFLES, SIGNS, TARGET, TIMELINE,
    V1_CONJECTURES, V2_CHECKS, V2_CONJECTURES)
from sweeps.experiments.registry import Experiment, register

__all__ = ["ABLATION", "ABLATION_K", "ABLATIONS_RUN", "ABLATIONS_V2", "CHECKS", "EARLY_END",
           "EXPERIMENT", "FOCUS", "HIGH", "K", "KStar", "LEVEL_KEYS", "LR", "MARGIN", "MIN_DENSE_ACC",
           "PLANS", "PLATEAU_GAIN", "SHUFFLES", "SIGNS", "TARGET", "TIMELINE", "V1_CONJECTURES",
           "V2_CHECKS", "V2_CONJECTURES", "dense_gap", "dense_timeline", "dist_init_rises",
           "fig_ablations", "fig_match", "fig_sparsity", "fig_timeline", "fig_timeline_k_star",
           "gap_table", "grad_norm_falls", "level_gaps", "sparsity_label", "high_sparsity_acc", "k_star", "k_star_ci",
           "k_star_positive", "level_frame", "level_table", "plateau_gains", "rewind_beats_init",
           "rewound_matches_dense", "shuffling_at_k_star", "shuffling_fails",
           "sign_flips_before_k_star", "signs_and_magnitudes_at_k_star",
           "signs_and_magnitudes_needed", "v2_checks"]

EXPERIMENT = register(Experiment(
    name="early_phase",
    title="The early phase of neural network training (Frankle, Schwab & Morcos 2020)",
    conjectures=[rewind_beats_init, signs_and_magnitudes_needed, shuffling_fails,
                 rewound_matches_dense, k_star_positive, signs_and_magnitudes_at_k_star,
                 shuffling_at_k_star, dist_init_rises, grad_norm_falls, sign_flips_before_k_star],
    figures={"early_phase_fig13_sparsity.png": fig_sparsity,
             "early_phase_ablations.png": fig_ablations,
             "early_phase_timeline.png": fig_timeline,
             "early_phase_v2_match.png": fig_match,
             "early_phase_v2_timeline.png": fig_timeline_k_star},
    tables={"early_phase_levels.csv": level_table, "early_phase_v2_gaps.csv": gap_table},
    specs=("early_phase.yaml", "early_phase-cluster.yaml", "early_phase_v2_pilot.yaml",
           "early_phase_v2.yaml"),
))
