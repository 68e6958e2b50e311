"""Critical learning periods on constructed tables whose answer is known:
each conjecture supported / refuted (/ underpowered), `invalid_protocol` when
the manipulation check (the permanent blur hurts) fails, `arm_of` on rows,
the specs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweeps import experiments
from sweeps.experiments import critical_periods as cp
from sweeps.spec import load_spec, smoke

from test_conjectures import FAST, make_table      # the shared constructed-table builder

SPECS = Path(__file__).parents[1] / "sweeps" / "specs"
SPE = 32                                            # optimizer steps per epoch
CLEAN = 0.90


# ------------------------------------------------------------------ builder
def arm(kind: str = "none", start: int = 0, end: int = 0, epochs: int = 40) -> dict:
    return {cp.KIND: kind, cp.START: start, cp.END: end, cp.EPOCHS: epochs}


def hump_fisher(epochs: int, falls: bool = True) -> np.ndarray:
    """Tr F per epoch: a fast rise to a peak at 1/4 of the run, then a fall to
    half the peak (`falls`), or a rise that never stops."""
    t = np.arange(epochs + 1) / max(epochs, 1)
    return 100 * t / 0.25 * np.exp(1 - t / 0.25) if falls else 3 + 100 * t


def trial(params: dict, acc: float, seed: int, falls: bool = True, status: str = "finished") -> dict:
    epochs = params[cp.EPOCHS]
    steps = np.arange(epochs + 1) * SPE
    return {"params": params, "seed": seed, "status": status, "curves": {
        "final/val_acc": ([epochs * SPE], [acc]),
        "val/acc": (steps[1:], np.linspace(0.2, acc, epochs)),
        "train/epoch": (steps[1:], np.arange(1, epochs + 1)),
        cp.FISHER: (steps, hump_fisher(epochs, falls))}}


def sweep(*, blur_hurt: float = 0.6, removal_slope: float = 0.003, onset: float = 0.05,
          control_drop: float = 0.0, noise_gap: float = 0.03, falls: bool = True,
          seeds: range = range(5), sd: float = 0.003, rng_seed: int = 0) -> list[dict]:
    """The shipped protocol's arms, with known effects:
    removal at N costs removal_slope * N; a 20-epoch blur window at t0 costs
    onset * (30 - t0) / 30; controls cost control_drop; noise removed at N
    ends noise_gap above blur removed at N."""
    rng = np.random.default_rng(rng_seed)
    out = []
    for s in seeds:
        def add(params, acc):
            out.append(trial(params, acc + rng.normal(0, sd), s, falls))
        add(arm(epochs=40), CLEAN)
        add(arm(epochs=60), CLEAN)
        add(arm("blur", 0, 40, 40), CLEAN - blur_hurt)
        for n in (5, 10, 20, 30, 40):
            add(arm("blur", 0, n, n + 40), CLEAN - removal_slope * n)
        for t0 in (10, 20, 30):
            add(arm("blur", t0, t0 + 20, 60), CLEAN - onset * (30 - t0) / 30)
        for kind in cp.CONTROLS:
            add(arm(kind, 0, 20, 60), CLEAN - control_drop)
        add(arm("noise", 0, 20, 60), CLEAN - removal_slope * 20 + noise_gap)
    return out


def table(**kw):
    return make_table(sweep(**kw))


def one(verdicts):
    (v,) = verdicts
    return v


# -------------------------------------------------------------------- arms
@pytest.mark.parametrize("row, expected", [
    (arm(epochs=40), cp.Arm("none", "clean", 0, 0, 40)),
    (arm("blur", 0, 40, 40), cp.Arm("blur", "permanent", 0, 40, 40)),
    (arm("blur", 0, 60, 40), cp.Arm("blur", "permanent", 0, 40, 40)),       # window clipped
    (arm("blur", 0, 20, 60), cp.Arm("blur", "removal", 0, 20, 60)),
    (arm("noise", 10, 30, 60), cp.Arm("noise", "onset", 10, 30, 60)),
    (arm("vflip", 50, 70, 40), cp.Arm("none", "clean", 0, 0, 40)),          # never active
    ({cp.EPOCHS: 30}, cp.Arm("none", "clean", 0, 0, 30)),                   # no deficit columns
])
def test_arm_of_rows(row, expected):
    assert cp.arm_of(pd.Series(row)) == expected
    assert cp.arm_of(row) == expected


def test_arm_geometry():
    a = cp.arm_of(arm("blur", 0, 20, 60))
    assert (a.budget, a.window, a.label) == (40, 20, "blur/[0,20)/60")
    assert cp.arm_of(arm(epochs=40)).label == "clean/40"


def test_arm_frame_excludes_unfinished():
    trials = sweep()
    trials.append(trial(arm("blur", 0, 20, 60), float("nan"), 9, status="diverged"))
    df, excluded = cp.arm_frame(make_table(trials))
    assert len(df) == 70 and excluded["excluded_diverged"] == 1


# ---------------------------------------------------- manipulation check
def test_pilot_blur_hurts_supported():
    v = one(cp.pilot_blur_hurts(table(), **FAST))
    assert v.verdict == "supported" and v.effect == pytest.approx(-0.6, abs=0.01)
    assert v.details["epochs"] == 40 and v.n == 10


def test_pilot_blur_not_hurting_is_not_supported():
    """The pilot tests H0: drop = min_drop: no drop at all is significantly less than that."""
    v = one(cp.pilot_blur_hurts(table(blur_hurt=0.0), **FAST))
    assert v.verdict == "refuted" and "fix" in v.details and v.details["margin"] == cp.MIN_DROP
    # significant but smaller than min_drop is no manipulation either
    v = one(cp.pilot_blur_hurts(table(blur_hurt=0.005, sd=0.0005), **FAST))
    assert v.p_value < 0.05 and v.effect < 0 and v.verdict == "refuted"
    assert not cp.blur_check(cp.arm_frame(table(blur_hurt=0.005, sd=0.0005))[0], **FAST)[0]


GATED = [cp.removal_hurts, cp.early_onset_most_sensitive, cp.controls_no_lasting_effect,
         cp.noise_hurts_less_than_blur]


@pytest.mark.parametrize("conjecture", GATED)
def test_invalid_protocol_when_blur_does_not_hurt(conjecture):
    v = one(conjecture(table(blur_hurt=0.0), **FAST))
    assert v.verdict == "invalid_protocol" and "manipulation check blur_hurts failed" in v.reason
    assert "does not hurt" in v.reason and v.details["fix"] == cp.FIX
    assert not v.details["checks"]["blur_hurts"]["passed"]


@pytest.mark.parametrize("conjecture", GATED)
def test_invalid_protocol_without_a_permanent_arm(conjecture):
    trials = [t for t in sweep() if cp.arm_of(t["params"]).sweep != "permanent"]
    v = one(conjecture(make_table(trials), **FAST))
    assert v.verdict == "invalid_protocol"
    assert "no permanently blurred arm" in v.reason


# ------------------------------------------------------------ removal
def test_removal_hurts_supported_with_shape():
    v = one(cp.removal_hurts(table(), **FAST))
    assert v.verdict == "supported" and v.statistic < -0.8 and v.n == 30
    assert v.details["n_cells"] == 5 and v.details["checks"]["blur_hurts"]["passed"]   # seeds
    assert v.effect == v.statistic and v.details["effect_units"] == pytest.approx(-0.12, abs=0.01)
    assert sorted(v.details["mean_acc_by_N"]) == [0, 5, 10, 20, 30, 40]
    assert v.details["budget"] == 40 and v.details["shape"] == "linear"


def test_removal_helps_is_refuted():
    v = one(cp.removal_hurts(table(removal_slope=-0.002), **FAST))
    assert v.verdict == "refuted"


def test_removal_shape():
    n = np.array([0, 10, 20, 30, 40])
    step = cp.removal_shape(n, np.array([0.9, 0.8, 0.8, 0.8, 0.8]))
    assert step["shape"] == "saturating" and step["r2_step"] == pytest.approx(1.0)
    assert step["r2_step"] > step["r2_line"]
    line = cp.removal_shape(n, 0.9 - 0.002 * n)
    assert line["shape"] == "linear" and line["r2_line"] == pytest.approx(1.0)
    assert cp.removal_shape(n[:2], n[:2])["shape"] == "too few levels"


# -------------------------------------------------------------- onset
def test_early_onset_most_sensitive_supported():
    v = one(cp.early_onset_most_sensitive(table(), **FAST))
    assert v.verdict == "supported" and v.statistic < 0
    assert (v.details["window"], v.details["epochs"], v.n) == (20, 60, 20)
    sens = v.details["mean_sensitivity_by_t0"]
    assert sorted(sens) == [0, 10, 20, 30] and sens[0] > sens[30]


def test_late_onset_most_sensitive_is_refuted():
    v = one(cp.early_onset_most_sensitive(table(onset=-0.05, removal_slope=-0.0025), **FAST))
    assert v.verdict == "refuted"


def test_onset_without_clean_baseline_is_inconclusive():
    trials = [t for t in sweep() if t["params"] != arm(epochs=60)]
    v = one(cp.early_onset_most_sensitive(make_table(trials), **FAST))
    assert v.verdict == "inconclusive" and "no clean trials" in v.reason


# ----------------------------------------------------------- controls
def test_controls_no_lasting_effect_supported():
    v = one(cp.controls_no_lasting_effect(table(), **FAST))
    assert v.verdict == "supported" and v.details["margin"] == cp.MARGIN
    assert set(v.details["controls"]) == set(cp.CONTROLS)
    assert all(c["p_value"] < 0.05 and c["N"] == [20] for c in v.details["controls"].values())
    assert v.details["test"] == "intersection-union" and len(v.details["parts"]) == 2


def test_controls_with_a_lasting_effect_are_refuted():
    v = one(cp.controls_no_lasting_effect(table(control_drop=0.06), **FAST))
    # the tested effect is the difference + margin: -0.06 + 0.02
    assert v.verdict == "refuted" and v.effect == pytest.approx(-0.04, abs=0.01)
    assert v.details["controls"]["vflip"]["difference"] == pytest.approx(-0.06, abs=0.01)


def test_controls_noisy_are_underpowered():
    """5 seeds with sd 0.03 detect 0.05 at best: the margin's 0.02 is out of reach."""
    v = one(cp.controls_no_lasting_effect(table(control_drop=0.01, sd=0.03), **FAST))
    assert v.verdict == "underpowered" and "minimum detectable" in v.reason


# -------------------------------------------------------------- noise
def test_noise_hurts_less_than_blur_supported():
    v = one(cp.noise_hurts_less_than_blur(table(), **FAST))
    assert v.verdict == "supported" and v.effect == pytest.approx(0.03, abs=0.01)
    assert v.details["N"] == [20]


def test_noise_hurts_more_than_blur_is_refuted():
    v = one(cp.noise_hurts_less_than_blur(table(noise_gap=-0.05), **FAST))
    assert v.verdict == "refuted"


# ------------------------------------------------------------- Fisher
def test_rises_then_falls():
    assert cp.rises_then_falls(hump_fisher(40))
    assert not cp.rises_then_falls(hump_fisher(40, falls=False))
    assert not cp.rises_then_falls(np.linspace(100, 10, 30))        # peak at the first point
    plateau = 100 + np.random.default_rng(0).normal(0, 8, 60)        # ~8 % scatter, no fall
    assert not cp.rises_then_falls(np.r_[3, plateau])


def test_fisher_rises_then_falls_supported():
    v = one(cp.fisher_rises_then_falls(table()))
    assert v.verdict == "supported" and v.statistic == 1.0 and v.n == 70
    assert v.p_value < 1e-6 and v.details["share_by_arm"]["clean/40"] == 1.0


def test_fisher_keeps_rising_is_refuted():
    v = one(cp.fisher_rises_then_falls(table(falls=False)))
    assert v.verdict == "refuted" and v.statistic == 0.0


def test_fisher_clean_only_and_too_few():
    v = one(cp.fisher_rises_then_falls(table(), deficits=("none",)))
    assert v.verdict == "supported" and v.n == 10 and v.p_raw == pytest.approx(2 / 1024)
    # 4 trials: even 4/4 gives p = 2/16; n below the plan's minimum 10 is underpowered
    v = one(cp.fisher_rises_then_falls(table(seeds=range(2)), deficits=("none",)))
    assert v.verdict == "underpowered" and v.n == 4 and "n=4 < min 10" in v.reason


def test_fisher_is_not_gated_by_the_blur_check():
    assert one(cp.fisher_rises_then_falls(table(blur_hurt=0.0))).verdict == "supported"


# ---------------------------------------------------- tables and figures
def test_arm_table():
    t = cp.arm_table(table())
    assert len(t) == 14 and (t["n"] == 5).all()
    row = t[t["arm"] == "blur/always/40"].iloc[0]
    assert row["mean"] == pytest.approx(0.3, abs=0.01) and row["sd"] > 0


def test_figures_draw():
    tab = table()
    assert cp.fig_accuracy(tab) is not None and cp.fig_fisher(tab) is not None
    bare = make_table([trial(arm(epochs=40), 0.9, 0)])
    assert cp.fig_accuracy(bare) is None


# -------------------------------------------------------- registry, specs
def test_registered():
    exp = experiments.get("critical_periods")
    assert "critical_periods.removal_hurts" in experiments.conjecture_names()
    assert len(exp.conjectures) == 6 and "critical_periods_arms.csv" in exp.tables
    vs = experiments.evaluate(list(exp.conjectures), table(), {n: FAST for n in exp.conjectures})
    assert [v.verdict for v in vs] == ["supported"] * 6
    # Holm over the four deficit conjectures; the pilot and the Fisher test stand alone
    assert [v.n_family for v in vs] == [1, 4, 4, 4, 4, 1]
    assert vs[-1].family == "critical_periods.fisher"
    assert set(exp.plans) == set(exp.conjectures)
    assert all(v.plan_hash == exp.plans[v.name].hash() for v in vs)


@pytest.mark.parametrize("name", experiments.get("critical_periods").specs)
def test_specs_validate(name):
    spec = load_spec(SPECS / name)
    assert set(spec.conjectures) <= set(experiments.get("critical_periods").conjectures)
    assert smoke(spec).trials()


def test_main_spec_arms():
    spec = load_spec(SPECS / "critical_periods.yaml")
    arms = [cp.arm_of(t.flat()) for t in spec.trials()]
    assert len(arms) == 70
    assert {a.budget for a in arms if a.sweep == "removal" and a.deficit == "blur"} == {40}
    assert sorted({a.end for a in arms if a.sweep == "removal" and a.budget == 40}) == [5, 10, 20, 30, 40]
    assert sorted({a.start for a in arms if a.window == 20 and a.epochs == 60
                   and a.deficit == "blur"}) == [0, 10, 20, 30]
    assert {a.deficit for a in arms if a.end == 20 and a.epochs == 60} == {"blur", "vflip", "label_permutation", "noise"}


def test_fisher_trials_too_short_are_excluded_not_failures():
    short = [trial(arm(epochs=1), CLEAN, s) for s in range(6)]
    v = one(cp.fisher_rises_then_falls(make_table(short)))
    # nothing left to test: n = 0 < min 10 is underpowered (was inconclusive without a plan)
    assert v.verdict == "underpowered" and v.details["excluded_fewer_than_3_measurements"] == 6


def test_gate_takes_min_drop_from_the_plan():
    tab = table(blur_hurt=0.005, sd=0.0005)
    plan = cp.PLANS["critical_periods.removal_hurts"]
    lower = plan.with_overrides(options={**plan.options, "min_drop": 0.001})
    v = one(cp.removal_hurts(tab, plans={"critical_periods.removal_hurts": lower}, **FAST))
    assert v.verdict == "supported" and v.exploratory
    assert one(cp.removal_hurts(tab, **FAST)).verdict == "invalid_protocol"
