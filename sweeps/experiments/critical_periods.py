"""Critical learning periods (Achille, Rovere & Soatto, ICLR 2019).

A network trained on a deficit (blurred inputs) for its first N epochs and
then on clean data for a fixed budget ends less accurate the larger N, and a
short deficit hurts most when it comes early; deficits that only re-map the
input (vertical flip) or the labels (a class permutation) leave no lasting
effect, and pure noise hurts less than blur. The trace of the Fisher
information rises early in training, then falls. The paper's numbers
(All-CNN, CIFAR-10, blur removed at epoch N, then 160 clean epochs): final
test accuracy 91.99 / 86.82 / 82.87 % for N = 0 / 40 / 100.

Protocol: SGD η 0.05 with momentum 0.9, ×0.97 per epoch (exponential),
weight decay 1e-3, batch 128 (without momentum the 1-D CNN is at 43 % test
accuracy after 30 epochs); a 1-D CNN on MNIST-1D with blur 40→10→40
(`critical_periods.yaml`), an All-CNN on CIFAR-10 for clusters
(`critical_periods-cluster.yaml`). Arms are told apart by their config
(`arm_of`): `data.deficit.kind`, `start_epoch`, `end_epoch`, `train.epochs`.
- clean: no deficit; permanent: the deficit spans the whole run;
- removal: deficit on [0, N), then `budget = epochs − N` clean epochs;
- onset: deficit on [t₀, t₀ + w) inside a run of fixed length.
A trial with start 0 and clean epochs after the window is both a removal
trial (N = w) and the onset trial at t₀ = 0; each conjecture picks its
trials by geometry: removal trials share the budget, onset trials the
window length and the run length. N = 0 is the clean arm of `budget` epochs.

Manipulation check `blur_hurts` (also judged alone as
`critical_periods.pilot_blur_hurts`): the permanently blurred arm ends
significantly (p < alpha) and materially (by more than `min_drop`) less
accurate than the clean arm of the same length: a test of
H0: d = −min_drop for d = mean(blur always) − mean(clean), predicted below.
Every deficit conjecture's plan lists it; when it fails, the verdict is
`invalid_protocol` with the reason and what would fix it (`fix` in details: a
stronger deficit, a task whose high frequencies matter, more seeds): a
deficit that never hurt cannot show a critical period, and "controls leave
no lasting effect" would pass trivially. The Fisher conjecture does not
depend on the deficit and is not gated.

Plans (`PLANS`): the four deficit conjectures are the Holm family
`critical_periods`, the pilot check its own (`critical_periods.pilot`);
alpha 0.05; trends need 10 trials (seeds as blocks: trials of one seed share
their initialisation), comparisons 5 per arm (3 against 3 cannot reach
p < 0.05 in a permutation test); effects of interest |rho| 0.5 and 0.02 of
accuracy (two points). The Fisher conjecture is its own family
(`critical_periods.fisher`): it is not gated by `blur_hurts`, reads another
metric (Tr F, not final accuracy) over every arm, and adjusting it with the
deficit tests would couple a claim about training dynamics to whether the
deficit bit. Its statistic is `sign_test` (exact binomial, share against
1/2); min n 10: the exact two-sided p cannot go below 2/2ⁿ (6 trials at the
least, 6/6: p = 0.031), and at 10 one trial may miss (9/10: p = 0.021), as
a Monte-Carlo Tr F on a flat run sometimes does; effect of interest a share
of 3/4 (0.25 above 1/2).

Conjectures (final accuracy = `final/val_acc`, else the last `val/acc`):
- `removal_hurts`: final accuracy decreases with N (blur removal trials plus
  the clean N = 0 arm; Spearman within seeds, permutation p). details carry the
  shape: per-N means, the drop over the first and the second half of the N
  range, and least-squares R² of a line against a one-step fit.
- `early_onset_most_sensitive`: sensitivity = mean clean accuracy (same run
  length) − final accuracy falls with t₀ (Spearman of sensitivity vs t₀ < 0).
- `controls_no_lasting_effect`: each of vflip and label permutation, removed
  at N, ends within `margin` (default 0.02 = 2 accuracy points) of the clean
  arm of the same budget: non-inferiority per control, a permutation test of
  H0: mean(control) − mean(clean) = −margin, and one intersection–union
  test over the controls: supported only when both are significantly above
  −margin, refuted when either is significantly below. The margin is about three times
  the seed-to-seed spread of the clean arm at the shipped size and a sixth
  of the pilot's drop at N = 40 (0.895 → 0.770).
- `noise_hurts_less_than_blur`: at the same N, noise-removal trials end more
  accurate than blur-removal trials (difference of means, permutation p).
- `fisher_rises_then_falls`: per trial, on the `fisher/trace` curve smoothed
  by a centred moving average of `window` (5) measurements, the maximum is
  interior (after the first and before the last measurement) and the last
  value is at most (1 − `drop`) × the maximum; across trials (every arm by
  default, `deficits` to choose) an exact binomial (sign) test of the share
  of such trials against 1/2 (`inference.sign_test`). Tr F is a Monte-Carlo estimate: on 300 probe
  examples one measurement scattered by about 25 % on MNIST-1D in the pilot
  with one label sample, so about 18 % with the spec's 2 and 8 % smoothed;
  `drop` = 0.2 (≈ 2.5 × that) keeps noise on a plateau from passing for a fall.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweeps.conjectures.inference import sign_test
from sweeps.conjectures.plan import FROM_PLAN, AnalysisPlan, Check
from sweeps.conjectures.verdict import (ALPHA, N_BOOT, N_PERM, compare_groups, intersection_union,
                                        trend_test, Verdict, verdict_of)
from sweeps.experiments import Experiment, Sources, own_plans, register
from sweeps.table import SweepTable
from sweeps.plotting import DPI

KIND, START, END, EPOCHS = ("data.deficit.kind", "data.deficit.start_epoch",
                            "data.deficit.end_epoch", "train.epochs")
FISHER = "fisher/trace"
CONTROLS = ("vflip", "label_permutation")
MARGIN = 0.02
MIN_DROP = 0.01
DROP, WINDOW = 0.2, 5          # Fisher: fall from the smoothed peak, smoothing width
FIX = ("make the deficit bite before judging critical periods: a stronger blur, a model and "
       "task whose high frequencies carry the label, longer training, or more seeds")
ACC = "final/val_acc"
BLUR_HURTS = Check("blur_hurts", f"the permanently blurred arm ends more than {MIN_DROP:g} below "
                                 "the clean arm of the same length, p < alpha")
_GATED = dict(metric=ACC, exclusions=("unfinished",), family="critical_periods",
              checks=(BLUR_HURTS,))
_CHECK = {"min_drop": MIN_DROP}                    # the threshold of blur_hurts
_TREND = dict(statistic="stratified_spearman", min_n=10, min_per_stratum=3,
              effect_of_interest=0.5)
_GROUPS = dict(min_n=10, min_per_stratum=5, effect_of_interest=0.02)
# options budget, window, epochs pick the arms compared (clean epochs after the
# deficit, deficit length, run length); null: the sweep's most common one
PLANS = {
    "critical_periods.pilot_blur_hurts": AnalysisPlan(
        conjecture="critical_periods.pilot_blur_hurts", metric=ACC,
        statistic="non_inferiority", predicted_sign=-1, exclusions=("unfinished",),
        family="critical_periods.pilot", **_GROUPS, options={"min_drop": MIN_DROP},
        statement=f"a permanent blur lowers final test accuracy by more than {MIN_DROP:g} "
                  "against clean training of the same length (manipulation check)"),
    "critical_periods.removal_hurts": AnalysisPlan(
        conjecture="critical_periods.removal_hurts", **_GATED, **_TREND, predicted_sign=-1,
        options={**_CHECK, "deficit": "blur", "budget": None},
        statement="final test accuracy decreases with the epoch N at which the blur deficit "
                  "is removed (fixed clean budget afterwards)"),
    "critical_periods.early_onset_most_sensitive": AnalysisPlan(
        conjecture="critical_periods.early_onset_most_sensitive", **_GATED, **_TREND,
        predicted_sign=-1, options={**_CHECK, "deficit": "blur", "window": None, "epochs": None},
        statement="sensitivity (clean − final accuracy) to a short blur window decreases with "
                  "its onset epoch t0"),
    "critical_periods.controls_no_lasting_effect": AnalysisPlan(
        conjecture="critical_periods.controls_no_lasting_effect", **_GATED,
        statistic="intersection_union", predicted_sign=+1, **_GROUPS,
        options={**_CHECK, "margin": MARGIN, "controls": list(CONTROLS), "budget": None},
        statement=f"{' and '.join(CONTROLS)} deficits, once removed, leave final test accuracy "
                  f"within {MARGIN:g} of clean training with the same budget"),
    "critical_periods.noise_hurts_less_than_blur": AnalysisPlan(
        conjecture="critical_periods.noise_hurts_less_than_blur", **_GATED,
        statistic="difference_of_means", predicted_sign=+1, **_GROUPS,
        options={**_CHECK, "budget": None},
        statement="a noise deficit removed at epoch N leaves a higher final test accuracy than "
                  "a blur deficit removed at the same N"),
    "critical_periods.fisher_rises_then_falls": AnalysisPlan(
        conjecture="critical_periods.fisher_rises_then_falls", metric=FISHER,
        statistic="sign_test", predicted_sign=+1,
        exclusions=("unfinished", "fewer_than_3_measurements"),
        family="critical_periods.fisher", min_n=10, min_per_stratum=1, effect_of_interest=0.25,
        options={"drop": DROP, "smooth": WINDOW, "p0": 0.5, "deficits": None,
                 "outcome": "per trial: the smoothed Tr F peaks at an interior measurement and "
                            "ends at most (1 - drop) x the peak"},
        statement=f"the Fisher trace peaks after its first and before its last measurement, "
                  f"then falls by at least {DROP:g} of the peak, in more than half of the trials"),
}


# ------------------------------------------------------------------ arms
@dataclass(frozen=True)
class Arm:
    """Where a trial sits in the protocol, from its config alone."""

    deficit: str          # none | blur | vflip | label_permutation | noise
    sweep: str            # clean | permanent | removal | onset
    start: int            # deficit window [start, end) in epochs (0, 0 for clean)
    end: int
    epochs: int           # run length

    @property
    def budget(self) -> int:
        """Clean epochs after the deficit window."""
        return self.epochs - self.end

    @property
    def window(self) -> int:
        return self.end - self.start

    @property
    def label(self) -> str:
        if self.sweep == "clean":
            return f"clean/{self.epochs}"
        if self.sweep == "permanent":
            return f"{self.deficit}/always/{self.epochs}"
        return f"{self.deficit}/[{self.start},{self.end})/{self.epochs}"


def arm_of(row: pd.Series | dict) -> Arm:
    """The arm of one table row (see module docstring); the window is clipped to the run."""
    kind = str(row.get(KIND, "none") or "none")
    epochs = _int(row.get(EPOCHS, 0))
    start, end = _int(row.get(START, 0)), min(_int(row.get(END, 0)), epochs)
    if kind in ("none", "nan") or end <= start:
        return Arm("none", "clean", 0, 0, epochs)
    if start == 0 and end >= epochs:
        return Arm(kind, "permanent", 0, epochs, epochs)
    return Arm(kind, "removal" if start == 0 else "onset", start, end, epochs)


def _int(v: Any) -> int:
    v = pd.to_numeric(pd.Series([v]), errors="coerce").iloc[0]
    return int(v) if pd.notna(v) else 0


def arm_frame(table: SweepTable) -> tuple[pd.DataFrame, dict[str, int]]:
    """Finished runs with their arm fields and final accuracy (`acc`), and the exclusion counts."""
    runs, excluded = table.usable()
    acc = table.final("final/val_acc", fallback="val/acc")
    arms = [arm_of(r) for _, r in runs.iterrows()]
    df = pd.DataFrame({"run_id": runs["run_id"].to_numpy(),
                       "seed": runs["seed"].to_numpy(),
                       "deficit": [a.deficit for a in arms], "sweep": [a.sweep for a in arms],
                       "start": [a.start for a in arms], "end": [a.end for a in arms],
                       "epochs": [a.epochs for a in arms], "budget": [a.budget for a in arms],
                       "window": [a.window for a in arms], "arm": [a.label for a in arms]})
    df["acc"] = acc.reindex(df["run_id"]).to_numpy(float)
    return df, excluded


def clean_acc(df: pd.DataFrame, epochs: int) -> pd.Series:
    """Final accuracies of the clean arm of this run length."""
    return df.loc[(df["sweep"] == "clean") & (df["epochs"] == epochs), "acc"]


def _mode(values: pd.Series) -> int | None:
    return None if values.empty else int(values.value_counts().sort_index().idxmax())


# ------------------------------------------------------- manipulation check
def blur_test(df: pd.DataFrame, *, alpha: float = ALPHA, min_drop: float = MIN_DROP,
              n_perm: int = N_PERM, n_boot: int = N_BOOT, rng_seed: int = 0):
    """(result, epochs, reason): does a permanent blur lower final accuracy by more than
    `min_drop` against clean runs of the same length? result None without the arm."""
    perm = df[(df["sweep"] == "permanent") & (df["deficit"] == "blur")]
    epochs = _mode(perm["epochs"])
    if epochs is None:
        return None, None, "no permanently blurred arm in the sweep"
    res = compare_groups(perm.loc[perm["epochs"] == epochs, "acc"], clean_acc(df, epochs),
                         n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=alpha,
                         shift=min_drop, alternative="two-sided")
    return res, epochs, res.details.get("reason", "")


def blur_check(df: pd.DataFrame, *, alpha: float = ALPHA, min_drop: float = MIN_DROP,
               n_perm: int = N_PERM, n_boot: int = N_BOOT, rng_seed: int = 0) -> tuple[bool, str]:
    """The manipulation check `blur_hurts` as (passed, one-line detail)."""
    res, epochs, why = blur_test(df, alpha=alpha, min_drop=min_drop, n_perm=n_perm,
                                 n_boot=n_boot, rng_seed=rng_seed)
    if res is None or not np.isfinite(res.p_value):
        return False, f"the deficit does not hurt: {why or 'no test'}; to fix: {FIX}"
    passed = res.p_value < alpha and res.effect < -min_drop
    return passed, (f"permanent blur changed final accuracy by {res.effect:+.4f} "
                    f"(p = {res.p_value:.3g} against a drop of {min_drop:g}, {epochs} epochs)"
                    + ("" if passed else f"; the deficit does not hurt; to fix: {FIX}"))


def pilot_blur_hurts(table: SweepTable, plans: Mapping[str, AnalysisPlan] | None = None,
                     **options: Any) -> list[Verdict]:
    """Manipulation check: the permanently blurred arm ends less accurate than the clean arm."""
    name = "critical_periods.pilot_blur_hurts"
    plan = own_plans(PLANS, name, plans)[name]
    df, excluded = arm_frame(table)
    res, epochs, why = blur_test(df, alpha=plan.alpha, min_drop=plan.options["min_drop"],
                                 **options)
    base = {**excluded, "epochs": epochs, "min_drop": plan.options["min_drop"],
            "groups": {"a": "blur always", "b": "clean"}}
    v = verdict_of(plan, res, n=0, reason=why, **base)
    return [v if v.verdict == "supported" else replace(v, details={**v.details, "fix": FIX})]


def _gate(df: pd.DataFrame, plan: AnalysisPlan, n_perm: int, n_boot: int,
          rng_seed: int) -> dict[str, tuple[bool, str]]:
    """A deficit conjecture's manipulation check, at its plan's alpha and `min_drop`."""
    return {BLUR_HURTS.name: blur_check(df, alpha=plan.alpha, min_drop=plan.options["min_drop"],
                                        n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed)}


def _failed(plan: AnalysisPlan, checks: dict[str, tuple[bool, str]], **details: Any) -> Verdict | None:
    """The invalid-protocol verdict when a check failed (None when all passed)."""
    if all(passed for passed, _ in checks.values()):
        return None
    return verdict_of(plan, None, checks=checks, n=0, fix=FIX, **details)


# ------------------------------------------------------------ removal sweep
def removal_frame(df: pd.DataFrame, deficit: str = "blur", budget: int | None = None
                  ) -> tuple[pd.DataFrame, int | None]:
    """Removal trials of one deficit sharing one clean budget, with the clean arm as N = 0.

    Column `N` = deficit end epoch; budget = the most common one unless given.
    """
    rem = df[(df["sweep"] == "removal") & (df["deficit"] == deficit)]
    budget = _mode(rem["budget"]) if budget is None else budget
    if budget is None:
        return rem.assign(N=[]), None
    rem = rem[rem["budget"] == budget]
    clean = df[(df["sweep"] == "clean") & (df["epochs"] == budget)]
    return pd.concat([clean.assign(N=0), rem.assign(N=rem["end"])]), budget


def removal_shape(levels: np.ndarray, means: np.ndarray) -> dict[str, Any]:
    """Shape of accuracy against N: drops over the first and second half of
    the N range, and R² of a straight line against the best one-step fit."""
    x, y = np.asarray(levels, float), np.asarray(means, float)
    if x.size < 3:
        return {"shape": "too few levels"}
    mid = (x[0] + x[-1]) / 2
    y_mid = float(np.interp(mid, x, y))
    first, second = float(y[0] - y_mid), float(y_mid - y[-1])
    sst = float(((y - y.mean()) ** 2).sum()) or np.inf
    line = np.polyval(np.polyfit(x, y, 1), x)
    r2_line = 1 - float(((y - line) ** 2).sum()) / sst
    r2_step = max(1 - float(sum(((y[s] - y[s].mean()) ** 2).sum()
                                for s in (slice(0, k), slice(k, None)))) / sst
                  for k in range(1, x.size))
    shape = "saturating" if first > 1.5 * second else (
        "accelerating" if second > 1.5 * first else "linear")
    return {"shape": shape, "drop_first_half": first, "drop_second_half": second,
            "r2_line": r2_line, "r2_step": r2_step}


def removal_test(rem: pd.DataFrame, *, alpha: float, n_perm: int, n_boot: int, rng_seed: int):
    """Statistics of `removal_hurts`: Spearman of final accuracy vs N within seeds, permutation p."""
    return trend_test(rem["N"].to_numpy(float), rem["acc"].to_numpy(float), None,
                      blocks=rem["seed"].astype(str).to_numpy(), n_perm=n_perm, n_boot=n_boot,
                      rng_seed=rng_seed, alpha=alpha)


def removal_hurts(table: SweepTable, plans: Mapping[str, AnalysisPlan] | None = None, *,
                  deficit: Any = FROM_PLAN, budget: Any = FROM_PLAN, n_perm: int = N_PERM,
                  n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Final accuracy decreases with the epoch N at which the plan's `deficit` is removed."""
    name = "critical_periods.removal_hurts"
    plan = own_plans(PLANS, name, plans)[name].with_options(deficit=deficit, budget=budget)
    deficit, budget = plan.options["deficit"], plan.options["budget"]
    df, excluded = arm_frame(table)
    checks = _gate(df, plan, n_perm, n_boot, rng_seed)
    if (bad := _failed(plan, checks, **excluded)) is not None:
        return [bad]
    rem, budget = removal_frame(df, deficit, budget)
    base = {**excluded, "budget": budget, "deficit": deficit}
    if len(rem) < 3 or rem["N"].nunique() < 2:
        return [verdict_of(plan, None, checks=checks, n=len(rem),
                      reason=f"only {len(rem)} removal trials at {rem['N'].nunique()} levels of N",
                      **base)]
    res = removal_test(rem, alpha=plan.alpha, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed)
    means = rem.groupby("N")["acc"].mean()
    return [verdict_of(plan, res, checks=checks, **base,
                  mean_acc_by_N={int(k): float(v) for k, v in means.items()},
                  **removal_shape(means.index.to_numpy(), means.to_numpy()))]


# -------------------------------------------------------------- onset sweep
def onset_frame(df: pd.DataFrame, deficit: str = "blur", window: int | None = None,
                epochs: int | None = None) -> tuple[pd.DataFrame, float, dict[str, Any]]:
    """Deficit windows of one length in runs of one length, with `t0` and
    `sensitivity` = mean clean accuracy (same run length) − final accuracy."""
    win = df[df["sweep"].isin(["removal", "onset"]) & (df["deficit"] == deficit)]
    epochs = _mode(win.loc[win["sweep"] == "onset", "epochs"]) if epochs is None else epochs
    win = win[win["epochs"] == epochs] if epochs is not None else win.iloc[:0]
    window = _mode(win.loc[win["sweep"] == "onset", "window"]) if window is None else window
    win = win[win["window"] == window]
    baseline = clean_acc(df, epochs) if epochs is not None else pd.Series(dtype=float)
    base_mean = float(baseline.mean()) if len(baseline) else np.nan
    win = win.assign(t0=win["start"], sensitivity=base_mean - win["acc"])
    return win, base_mean, {"window": window, "epochs": epochs, "n_clean": int(len(baseline)),
                            "baseline_acc": base_mean}


def onset_test(win: pd.DataFrame, *, alpha: float, n_perm: int, n_boot: int, rng_seed: int):
    """Statistics of `early_onset_most_sensitive`: Spearman of sensitivity vs t₀ within seeds."""
    return trend_test(win["t0"].to_numpy(float), win["sensitivity"].to_numpy(float), None,
                      blocks=win["seed"].astype(str).to_numpy(), n_perm=n_perm, n_boot=n_boot,
                      rng_seed=rng_seed, alpha=alpha)


def early_onset_most_sensitive(table: SweepTable, plans: Mapping[str, AnalysisPlan] | None = None, *,
                               deficit: Any = FROM_PLAN, window: Any = FROM_PLAN,
                               epochs: Any = FROM_PLAN, n_perm: int = N_PERM,
                               n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Sensitivity to a short window of the plan's `deficit` is largest when it starts early."""
    name = "critical_periods.early_onset_most_sensitive"
    plan = own_plans(PLANS, name, plans)[name].with_options(deficit=deficit, window=window,
                                                            epochs=epochs)
    deficit, window, epochs = (plan.options[k] for k in ("deficit", "window", "epochs"))
    df, excluded = arm_frame(table)
    checks = _gate(df, plan, n_perm, n_boot, rng_seed)
    if (bad := _failed(plan, checks, **excluded)) is not None:
        return [bad]
    win, base_mean, info = onset_frame(df, deficit, window, epochs)
    base = {**excluded, **info, "deficit": deficit}
    if not np.isfinite(base_mean):
        return [verdict_of(plan, None, checks=checks, n=len(win),
                      reason="no clean trials of the onset run length", **base)]
    if len(win) < 3 or win["t0"].nunique() < 2:
        return [verdict_of(plan, None, checks=checks, n=len(win),
                      reason=f"only {len(win)} onset trials at {win['t0'].nunique()} onsets",
                      **base)]
    res = onset_test(win, alpha=plan.alpha, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed)
    means = win.groupby("t0")["sensitivity"].mean()
    return [verdict_of(plan, res, checks=checks, **base,
                  mean_sensitivity_by_t0={int(k): float(v) for k, v in means.items()})]


# ----------------------------------------------------------------- controls
def noninferiority_test(a: pd.Series, b: pd.Series, margin: float, *, alpha: float,
                        n_perm: int, n_boot: int, rng_seed: int):
    """One control of `controls_no_lasting_effect`: H0 mean(a) − mean(b) = −margin, two-sided
    (significantly above: within the margin; significantly below: a lasting effect)."""
    return compare_groups(a, b, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed, alpha=alpha,
                          shift=margin, alternative="two-sided")


def controls_no_lasting_effect(table: SweepTable, plans: Mapping[str, AnalysisPlan] | None = None, *,
                               budget: Any = FROM_PLAN, n_perm: int = N_PERM,
                               n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Flip and label-permutation deficits, once removed, end within `margin` of clean."""
    name = "critical_periods.controls_no_lasting_effect"
    plan = own_plans(PLANS, name, plans)[name].with_options(budget=budget)
    budget = plan.options["budget"]
    margin, controls = float(plan.options["margin"]), tuple(plan.options["controls"])
    df, excluded = arm_frame(table)
    checks = _gate(df, plan, n_perm, n_boot, rng_seed)
    if (bad := _failed(plan, checks, **excluded)) is not None:
        return [bad]
    per, results = {}, []
    for c in controls:
        rem, b = removal_frame(df, c, budget)
        ctrl, clean = rem.loc[rem["N"] > 0], rem.loc[rem["N"] == 0, "acc"]
        res = noninferiority_test(ctrl["acc"], clean, margin, alpha=plan.alpha, n_perm=n_perm,
                                  n_boot=n_boot, rng_seed=rng_seed)
        results.append(res)
        per[c] = {"budget": b, "N": sorted(int(n) for n in ctrl["N"].unique()),
                  "difference": res.effect, "ci": [res.ci_low, res.ci_high],
                  "p_value": res.p_value, "n_control": int(len(ctrl)), "n_clean": int(len(clean)),
                  **{k: v for k, v in res.details.items() if k == "reason"}}
    res = intersection_union(results, [+1] * len(results))
    return [verdict_of(plan, res, checks=checks, **excluded, margin=margin, controls=per)]


def noise_test(noise: pd.Series, blur: pd.Series, *, alpha: float, n_perm: int, n_boot: int,
               rng_seed: int):
    """Statistics of `noise_hurts_less_than_blur`: mean(noise) − mean(blur), permutation p."""
    return compare_groups(noise, blur, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed,
                          alpha=alpha)


def noise_hurts_less_than_blur(table: SweepTable, plans: Mapping[str, AnalysisPlan] | None = None, *,
                               budget: Any = FROM_PLAN, n_perm: int = N_PERM,
                               n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """Removed at the same N, a noise deficit ends more accurate than a blur deficit."""
    name = "critical_periods.noise_hurts_less_than_blur"
    plan = own_plans(PLANS, name, plans)[name].with_options(budget=budget)
    budget = plan.options["budget"]
    df, excluded = arm_frame(table)
    checks = _gate(df, plan, n_perm, n_boot, rng_seed)
    if (bad := _failed(plan, checks, **excluded)) is not None:
        return [bad]
    noise, b = removal_frame(df, "noise", budget)
    blur, _ = removal_frame(df, "blur", b)
    noise, blur = noise[noise["N"] > 0], blur[blur["N"] > 0]
    shared = sorted(set(noise["N"]) & set(blur["N"]))
    base = {**excluded, "budget": b, "N": [int(n) for n in shared],
            "groups": {"a": "noise", "b": "blur"}}
    if not shared:
        return [verdict_of(plan, None, checks=checks, n=0,
                      reason="no N at which both noise and blur were removed", **base)]
    res = noise_test(noise.loc[noise["N"].isin(shared), "acc"],
                     blur.loc[blur["N"].isin(shared), "acc"],
                     alpha=plan.alpha, n_perm=n_perm, n_boot=n_boot, rng_seed=rng_seed)
    return [verdict_of(plan, res, checks=checks, **base)]


# ------------------------------------------------------------------ Fisher
def smooth(values: np.ndarray, window: int = 5) -> np.ndarray:
    """Centred moving average over `window` measurements (shorter at the ends)."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size == 0:
        return v
    kernel = np.ones(min(window, v.size))
    return np.convolve(v, kernel, "same") / np.convolve(np.ones(v.size), kernel, "same")


def rises_then_falls(values: np.ndarray, drop: float = DROP, window: int = WINDOW) -> bool:
    """On the smoothed curve, the maximum is interior (not the first or last
    measurement) and the last value is at most (1 − drop) × the maximum."""
    v = np.asarray(values, dtype=float)
    v = smooth(v[np.isfinite(v)], window)
    if v.size < 3:
        return False
    i = int(np.argmax(v))
    return 0 < i < v.size - 1 and v[-1] <= (1 - drop) * v[i]


def fisher_rises_then_falls(table: SweepTable, plans: Mapping[str, AnalysisPlan] | None = None, *,
                            deficits: Any = FROM_PLAN, n_perm: int = N_PERM,
                            n_boot: int = N_BOOT, rng_seed: int = 0) -> list[Verdict]:
    """In most trials Tr F peaks after its first measurement, then falls by `drop`.

    `drop`, the smoothing width and `deficits` (the arms judged; null: every
    arm) are the plan's options. The sign test is exact: the resampling
    options every conjecture takes (n_perm, n_boot, rng_seed) are accepted
    and unused.
    """
    name = "critical_periods.fisher_rises_then_falls"
    plan = own_plans(PLANS, name, plans)[name].with_options(
        deficits=list(deficits) if isinstance(deficits, tuple) else deficits)
    drop, window = float(plan.options["drop"]), int(plan.options["smooth"])
    deficits = plan.options["deficits"]
    df, excluded = arm_frame(table)
    if deficits is not None:
        df = df[df["deficit"].isin(deficits)]
    m = table.metric(plan.metric)
    m = m[m["run_id"].isin(df["run_id"]) & np.isfinite(m["value"].astype(float))]
    curves = {rid: g["value"].to_numpy(float) for rid, g in m.groupby("run_id")}
    shapes = {rid: rises_then_falls(v, drop, window) for rid, v in curves.items() if v.size >= 3}
    base = {**excluded, "drop": drop, "window": window,
            "deficits": list(deficits) if deficits else "all",
            "excluded_fewer_than_3_measurements": len(curves) - len(shapes)}
    if not shapes:
        return [verdict_of(plan, None, n=0, **base,
                      reason=f"{plan.metric} logged with >= 3 measurements for no trial")]
    res = sign_test(list(shapes.values()), p0=float(plan.options["p0"]), alpha=plan.alpha)
    by_arm = df.assign(ok=df["run_id"].map(shapes)).dropna(subset=["ok"]).groupby("arm")["ok"]
    return [verdict_of(plan, res, **base, n_rise_fall=int(sum(shapes.values())),
                  share_by_arm={a: float(v.astype(float).mean()) for a, v in by_arm})]


# ------------------------------------------------------------------ tables
def arm_table(table: SweepTable) -> pd.DataFrame | None:
    """Per arm: deficit, sweep, window, run length, final accuracy mean, sd, n."""
    df, _ = arm_frame(table)
    if df.empty:
        return None
    keys = ["arm", "deficit", "sweep", "start", "end", "epochs"]
    out = df.groupby(keys)["acc"].agg(mean="mean", sd="std", n="count").reset_index()
    return out.sort_values(["sweep", "deficit", "epochs", "start", "end"]).reset_index(drop=True)


# ------------------------------------------------------------------ figures
def _errorbar(ax, df: pd.DataFrame, x: str, y: str, **kw) -> None:
    g = df.groupby(x)[y].agg(["mean", "std"])
    ax.errorbar(g.index, g["mean"], yerr=g["std"].fillna(0.0), capsize=2, ms=4, **kw)


def fig_accuracy(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Paper Fig. 10/11 analog: final accuracy against the removal epoch N
    (blur, with the controls at their N) and against the onset t₀ of a short
    blur window; the clean arm as a band (mean ± sd)."""
    df, _ = arm_frame(table)
    if df.empty or not (df["sweep"].isin(["removal", "onset"])).any():
        return None
    fig = Figure(figsize=(9, 3.6), dpi=DPI, layout="constrained")
    ax_n, ax_t = fig.subplots(1, 2)
    rem, budget = removal_frame(df, "blur")
    for i, kind in enumerate(("blur", "noise", *CONTROLS)):
        r, _ = removal_frame(df, kind, budget)
        r = r[r["N"] > 0] if kind != "blur" else r
        if len(r):
            _errorbar(ax_n, r, "N", "acc", fmt="o-" if kind == "blur" else "s", color=f"C{i}",
                      label=kind)
    clean = clean_acc(df, budget) if budget is not None else pd.Series(dtype=float)
    if len(clean):
        ax_n.axhspan(clean.mean() - np.nan_to_num(clean.std()),
                     clean.mean() + np.nan_to_num(clean.std()), color="k", alpha=0.1, label="clean")
    ax_n.set(xlabel="deficit removed at epoch N", ylabel="final test accuracy",
             title=f"removal (then {budget} clean epochs)")
    ax_n.legend(fontsize=6)
    win, base_mean, info = onset_frame(df, "blur")
    if len(win):
        _errorbar(ax_t, win, "t0", "sensitivity", fmt="o-", color="C0", label="blur")
        ax_t.axhline(0, color="k", lw=0.5)
    ax_t.set(xlabel="deficit onset t₀ (epoch)", ylabel="sensitivity (clean − final accuracy)",
             title=f"onset (window {info['window']}, {info['epochs']} epochs)")
    return fig


def fig_fisher(table: SweepTable, sources: Sources | None = None) -> Figure | None:
    """Tr F over training: mean curve per arm (clean and blur removal at each N),
    against the epoch (the step divided by the steps per epoch of each run)."""
    if not table.has(FISHER):
        return None
    df, _ = arm_frame(table)
    df = df[df["sweep"].isin(["clean", "removal", "permanent"])
            & df["deficit"].isin(["none", "blur"])]
    if df.empty:
        return None
    fig = Figure(figsize=(5.5, 3.6), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    df = df.sort_values(["sweep", "end", "epochs"])
    for i, (arm, g) in enumerate(df.groupby("arm", sort=False)):
        c = table.mean_curve(g["run_id"], FISHER)
        epoch_len = _steps_per_epoch(table, g["run_id"].iloc[0])
        ax.plot(c.index / epoch_len, c.to_numpy(), color=f"C{i % 10}", lw=1, label=arm)
        if g["sweep"].iloc[0] == "removal":
            ax.axvline(g["end"].iloc[0], color=f"C{i % 10}", lw=0.5, ls=":")
    ax.set(xlabel="epoch", ylabel="Tr F", yscale="log", title="Fisher trace (dotted: deficit removed)")
    ax.legend(fontsize=6)
    return fig


def _steps_per_epoch(table: SweepTable, run_id: str) -> float:
    ends = table.series(run_id, "train/epoch").sort_index()
    if len(ends) >= 1 and ends.iloc[0] > 0:
        return float(ends.index[0]) / float(ends.iloc[0])
    return 1.0


# --------------------------------------------------------------- registry
EXPERIMENT = register(Experiment(
    name="critical_periods",
    title="Critical learning periods (Achille, Rovere & Soatto 2019)",
    conjectures={"critical_periods.pilot_blur_hurts": pilot_blur_hurts,
                 "critical_periods.removal_hurts": removal_hurts,
                 "critical_periods.early_onset_most_sensitive": early_onset_most_sensitive,
                 "critical_periods.controls_no_lasting_effect": controls_no_lasting_effect,
                 "critical_periods.noise_hurts_less_than_blur": noise_hurts_less_than_blur,
                 "critical_periods.fisher_rises_then_falls": fisher_rises_then_falls},
    figures={"critical_periods_fig10_accuracy.png": fig_accuracy,
             "critical_periods_fisher.png": fig_fisher},
    tables={"critical_periods_arms.csv": arm_table},
    specs=("critical_periods.yaml", "critical_periods_pilot.yaml", "critical_periods-cluster.yaml"),
    plans=PLANS,
))
