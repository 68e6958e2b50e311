"""The registered plans of the break-even experiment.

Plans (`PLANS`, one per verdict, `breakeven.c1_lr[hessian/top]`, …): the four
tests of conjecture 1 are one Holm family (`breakeven.c1`), the tests of
conjecture 2 another (`breakeven.c2`); stratified Spearman, alpha 0.05, an
effect of interest of |rho| = 0.5 (a strong monotone trend: the paper's
claim is about the direction across a wide grid, not a subtle slope). At
least 10 trials: a seed cell of 3 η levels has 6 arrangements, so the exact
p can fall below 0.05/4 (Holm's first step over a family of 4) only with 3
or more such cells, 9 trials; 3 per stratum, as the Spearman of fewer is
undefined. Designs above that floor that still could not detect |rho| 0.5
(e.g. cells of 2 along S) are caught by the power rule: `underpowered`.

Units of K. `gradcov/*` is K of per-example gradients on the 256-example
probe set (`probes.gradcov_unit: example`); `gradcov_mb/*` is K of
M = 16 mini-batch mean gradients of S_K = 128 examples
(`probes.gradcov_mb`), the paper's unit, about the per-example one / S_K.
Conjecture 1 on `gradcov/top` stays the primary test (in family
`breakeven.c1`, as registered before the mini-batch unit existed); the
mini-batch-unit maxima are a secondary family of their own,
`breakeven.c1_mb` (2 tests, η and S, Holm within it): they test the same
claim about the same matrix in another unit (a check that the verdict does
not hinge on the unit), with a noisier top eigenvalue (16 vectors instead of
256), so adding them to the primary family would cost the primary tests
power without adding a claim. They are judged only where the sweep measured
`gradcov_mb/top`.

Conjecture 2's break-even step is the saturation detector on λ_K¹, not the
stability detector with the noise term, for two reasons given before any
sweep with the noise term ran: the conjecture is about the spectrum after the early rise of λ_K¹
has stalled, which is what saturation detects on the measured trajectory,
while the stability step is a quadratic model's prediction that depends on
λ_H¹ of the probe loss reaching about 2/η (less with noise), which
small-η trials may never do within the step budget, so its exclusions
would fall unevenly along the tested η axis. The stability step with the
noise term is still computed for every trial (`breakeven_steps.csv`).

Conjecture 2 in the mini-batch unit (`gradcov_mb/trace_over_top`, K of M
mean gradients, at most M − 1) is a secondary family of its own,
`breakeven.c2_mb` (η and S, Holm within it), for the reason `breakeven.c1_mb`
is; the spec's M must exceed the paper's values (max Tr(K)/λ_K¹ 14.29) by a
margin for the cap not to decide it.

Rise and saturation (`breakeven.rise_saturate`, family `breakeven.rise`,
λ_K¹ and λ_H¹, Holm over 2): per trial the outcome is a success when the
spectrum reaches its peak early and then stays up. The peak step is the
first probe step at which the running median of `smooth` = 5 measurements
reaches (1 − `peak_tol`) of its whole-run maximum; "early" is at most
`early_frac` = 1/4 of the trial's last step; "stays up" is the median of the
raw measurements after the peak step within `band` × the smoothed maximum,
over at least `min_after` of them (fewer: a failure, not an exclusion,
since the rise was not seen to stop). The share of successes is tested
against `p0` = 1/2 (exact binomial). From the design pilot
(`breakeven_pilot.yaml`, seeds 100–101): single probes of λ_K¹ jump by
factors 2–5 between neighbours once SGD oscillates, so the raw argmax is a
spike, often at the last probes; the smoothing (5), the tolerance (0.25)
and the band's upper end (1.25: a raw median may exceed a smoothed maximum)
were set there, the early fraction and the band's lower end (0.5: within a
factor 2 of the peak) before it. The plan's manipulation check
`cadence_resolves_rise` asks that the probe cadence saw the rise: at least
`min_before` = 8 measurements before the trial's break-even step
(saturation on λ_K¹) and `min_after` = 3 after the peak step of λ_K¹, in at
least `min_share` = 80 % of the finished trials.

The link to generalization (`breakeven.lr_generalizes`, family
`breakeven.lr_link`, Holm over 2): along η within each S, the whole-run
maximum of λ_K¹ is smaller and the final test accuracy (`final/val_acc`,
MNIST-1D's test split, `aggregate: final`) higher; seeds as blocks.
"""
from __future__ import annotations

from sweeps.conjectures.plan import AnalysisPlan, Check

LR, BATCH, TRAIN_SIZE = "optim.lr", "train.batch_size", "data.train_size"
NOISE_S2 = "sgd_noise/s2"          # s² of the stability criterion (the sgd_noise probe)
FINAL_ACC = "final/val_acc"        # final accuracy on MNIST-1D's test split
AXES = {"lr": (LR, "η"), "batch": (BATCH, "S")}
SYMBOL = {"hessian/top": "λ_H¹", "gradcov/top": "λ_K¹", "gradcov_mb/top": "λ_K¹ (mini-batch unit)",
          "gradcov/trace": "Tr(K)",
          "gradcov/trace_over_top": "Tr(K)/λ_K¹", "hessian/trace": "Tr(H)",
          "gradcov_mb/trace_over_top": "Tr(K)/λ_K¹ (mini-batch unit)"}
# predicted sign of d(max metric)/d(lr); along batch size it is the opposite.
C1_SIGNS = {"hessian/top": -1, "gradcov/top": -1}
C1_MB_SIGNS = {"gradcov_mb/top": -1}   # secondary family breakeven.c1_mb
C2_SIGNS = {"gradcov/trace_over_top": +1, "gradcov/trace": -1, "hessian/trace": -1}
C2_MB_SIGNS = {"gradcov_mb/trace_over_top": +1}   # secondary family breakeven.c2_mb
OPTIONAL = ("hessian/trace", "gradcov_mb/top", "gradcov_mb/trace_over_top")  # judged when measured
C1_WINDOW = "until_probe/acc>=0.65"
DETECTOR_OPTIONS = {"peak_eps": 0.05, "breakeven_key": "gradcov/top", "breakeven_window": 3,
                    "noise_s2_key": NOISE_S2}


def _plan(conjecture: str, key: str, sign_lr: int, axis: str, family: str, window: str,
          detector: str | None, exclusions: tuple[str, ...], where: str) -> AnalysisPlan:
    col, sym = AXES[axis]
    sign = sign_lr if axis == "lr" else -sign_lr
    more = "larger" if sign > 0 else "smaller"
    direction = "larger η" if axis == "lr" else "smaller S"
    statement = (f"max {SYMBOL.get(key, key)} ({key}) {where} is "
                 f"{'larger' if sign_lr > 0 else 'smaller'} for {direction} (i.e. {more} for "
                 f"larger {sym}, other config fields held fixed, seeds as blocks)")
    return AnalysisPlan(
        conjecture=conjecture, statement=statement, metric=key,
        statistic="stratified_spearman", predicted_sign=sign, window=window, detector=detector,
        exclusions=exclusions, family=family, alpha=0.05, min_n=10, min_per_stratum=3,
        effect_of_interest=0.5, options={**(DETECTOR_OPTIONS if detector else
                                            {"peak_eps": DETECTOR_OPTIONS["peak_eps"]}),
                                         "axis": col, "strata": None})
# strata: the config fields held fixed; null: every varying dotted field except
# the axis and seeds (`_strata_columns`)


def _plans() -> dict[str, AnalysisPlan]:
    out = {}
    for axis in AXES:
        for key, sign in C1_SIGNS.items():
            p = _plan(f"breakeven.c1_{axis}", key, sign, axis, "breakeven.c1", C1_WINDOW, None,
                      ("unfinished", "window_not_reached"),
                      "up to the first probe with train accuracy ≥ 0.65")
            out[f"{p.conjecture}[{key}]"] = p
        for key, sign in C1_MB_SIGNS.items():
            p = _plan(f"breakeven.c1_{axis}", key, sign, axis, "breakeven.c1_mb", C1_WINDOW, None,
                      ("unfinished", "window_not_reached"),
                      "up to the first probe with train accuracy ≥ 0.65")
            out[f"{p.conjecture}[{key}]"] = p
        for key, sign in C2_SIGNS.items():
            p = _plan(f"breakeven.c2_{axis}", key, sign, axis, "breakeven.c2", "after_breakeven",
                      "saturation", ("unfinished", "no_breakeven", "peak_not_reached"),
                      "at or after the break-even step")
            out[f"{p.conjecture}[{key}]"] = p
        for key, sign in C2_MB_SIGNS.items():
            p = _plan(f"breakeven.c2_{axis}", key, sign, axis, "breakeven.c2_mb",
                      "after_breakeven", "saturation",
                      ("unfinished", "no_breakeven", "peak_not_reached"),
                      "at or after the break-even step")
            out[f"{p.conjecture}[{key}]"] = p
    out.update(_rise_plans())
    out.update(_link_plans())
    return out


# ------------------------------------------------- rise and saturation (Fig. 6)
RISE_KEYS = ("gradcov/top", "hessian/top")
CADENCE = {"min_before": 8, "min_after": 3, "min_share": 0.8}
RISE_OPTIONS = {"peak_tol": 0.25, "smooth": 5, "early_frac": 0.25, "band": [0.5, 1.25], "p0": 0.5,
                **CADENCE, "peak_eps": DETECTOR_OPTIONS["peak_eps"],
                "breakeven_key": DETECTOR_OPTIONS["breakeven_key"],
                "breakeven_window": DETECTOR_OPTIONS["breakeven_window"]}
CADENCE_CHECK = Check(
    "cadence_resolves_rise",
    f"at least {CADENCE['min_before']} probe measurements before the break-even step "
    f"(saturation on λ_K¹) and {CADENCE['min_after']} after its peak step, in at least "
    f"{CADENCE['min_share']:.0%} of the finished trials")


def _rise_plans() -> dict[str, AnalysisPlan]:
    out = {}
    o = RISE_OPTIONS
    for key in RISE_KEYS:
        out[f"breakeven.rise_saturate[{key}]"] = AnalysisPlan(
            conjecture="breakeven.rise_saturate", metric=key, statistic="sign_test",
            predicted_sign=+1, exclusions=("unfinished",), family="breakeven.rise",
            alpha=0.05, min_n=10, min_per_stratum=1, effect_of_interest=0.25,
            checks=(CADENCE_CHECK,), options=dict(o),
            statement=(f"{SYMBOL[key]} ({key}) rises, then saturates early: its peak (first step "
                       f"within {o['peak_tol']:g} of the maximum) comes in the first "
                       f"{o['early_frac']:.0%} of the steps and the median after it stays within "
                       f"{o['band']} × the maximum, in more than {o['p0']:.0%} of the trials"))
    return out


# ------------------------------------------------------- link to generalization
LINK_SIGNS = {"gradcov/top": ("max", -1), FINAL_ACC: ("final", +1)}


def _link_plans() -> dict[str, AnalysisPlan]:
    out = {}
    for key, (aggregate, sign) in LINK_SIGNS.items():
        what = "max λ_K¹ (gradcov/top) over the run" if aggregate == "max" else \
            f"final test accuracy ({key})"
        out[f"breakeven.lr_generalizes[{key}]"] = AnalysisPlan(
            conjecture="breakeven.lr_generalizes", metric=key, statistic="stratified_spearman",
            predicted_sign=sign, window="whole_run", exclusions=("unfinished",),
            family="breakeven.lr_link", alpha=0.05, min_n=10, min_per_stratum=3,
            effect_of_interest=0.5,
            options={"peak_eps": DETECTOR_OPTIONS["peak_eps"], "axis": LR, "strata": None,
                     "aggregate": aggregate},
            statement=(f"{what} is {'smaller' if sign < 0 else 'larger'} for larger η "
                       f"(within each S, seeds as blocks)"))
    return out


PLANS = _plans()
