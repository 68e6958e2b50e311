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
"""
from __future__ import annotations

from sweeps.conjectures.plan import AnalysisPlan

LR, BATCH, TRAIN_SIZE = "optim.lr", "train.batch_size", "data.train_size"
NOISE_S2 = "sgd_noise/s2"          # s² of the stability criterion (the sgd_noise probe)
AXES = {"lr": (LR, "η"), "batch": (BATCH, "S")}
SYMBOL = {"hessian/top": "λ_H¹", "gradcov/top": "λ_K¹", "gradcov_mb/top": "λ_K¹ (mini-batch unit)",
          "gradcov/trace": "Tr(K)",
          "gradcov/trace_over_top": "Tr(K)/λ_K¹", "hessian/trace": "Tr(H)"}
# predicted sign of d(max metric)/d(lr); along batch size it is the opposite.
C1_SIGNS = {"hessian/top": -1, "gradcov/top": -1}
C1_MB_SIGNS = {"gradcov_mb/top": -1}   # secondary family breakeven.c1_mb
C2_SIGNS = {"gradcov/trace_over_top": +1, "gradcov/trace": -1, "hessian/trace": -1}
OPTIONAL = ("hessian/trace", "gradcov_mb/top")   # judged only when the sweep measured it
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
    return out


PLANS = _plans()
