"""Break-even on constructed tables: K in the mini-batch unit as its own
secondary Holm family, and the stability detector with the SGD-noise term
(s² from `sgd_noise/s2`, S and N from the config)."""
from __future__ import annotations

import numpy as np
import pytest

from sweeps import experiments
from sweeps.experiments import breakeven

from test_conjectures import FAST, STEPS, breakeven_trials, make_table      # the shared builders

C1 = ["breakeven.c1_lr", "breakeven.c1_batch"]


def with_minibatch_unit(trials, sign: int = 1, rng_seed: int = 0):
    """Add gradcov_mb/top: the per-example λ_K¹ / 128 (sign +1), or its
    trend reversed along both axes (sign −1), with 5 % jitter; and
    gradcov_mb/trace_over_top, the per-example ratio (its trend as it is)."""
    rng = np.random.default_rng(rng_seed)
    for t in trials:
        steps, top = t["curves"]["gradcov/top"]
        if sign < 0:
            a, b = np.log10(t["params"]["optim.lr"] / 0.01), np.log2(t["params"]["train.batch_size"] / 32)
            top = top * np.exp(2 * (0.8 * a - 0.4 * b))            # exp(+0.8a − 0.4b) instead
        t["curves"]["gradcov_mb/top"] = (steps, top / 128 * np.exp(rng.normal(0, 0.05)))
        t["curves"]["gradcov_mb/trace_over_top"] = t["curves"]["gradcov/trace_over_top"]
    return trials


def test_the_minibatch_unit_is_registered_as_a_secondary_family():
    plans = experiments.get("breakeven").plans
    for axis in ("lr", "batch"):
        mb = plans[f"breakeven.c1_{axis}[gradcov_mb/top]"]
        ex = plans[f"breakeven.c1_{axis}[gradcov/top]"]
        assert mb.family == "breakeven.c1_mb" and ex.family == "breakeven.c1"
        assert mb.window == ex.window == "until_probe/acc>=0.65"
        assert mb.predicted_sign == ex.predicted_sign and "mini-batch unit" in mb.statement
    assert sum(p.family == "breakeven.c1" for p in plans.values()) == 4       # the primary family as before
    c2 = [p for k, p in plans.items() if k.startswith("breakeven.c2")]
    assert c2 and all(p.detector == "saturation" for p in c2)
    assert all(p.options["noise_s2_key"] == "sgd_noise/s2" for p in c2)
    # a plan without a detector carries no detector settings (its options are what it reads)
    c1 = [p for k, p in plans.items() if k.startswith("breakeven.c1")]
    assert all(p.detector is None and "noise_s2_key" not in p.options for p in c1)


def test_minibatch_unit_judged_in_its_own_family():
    out = experiments.evaluate(C1, make_table(with_minibatch_unit(breakeven_trials("paper"))),
                               options={n: FAST for n in C1})
    by = {v.name: v for v in out}
    assert set(by) == {f"breakeven.c1_{a}[{k}]" for a in ("lr", "batch")
                       for k in ("hessian/top", "gradcov/top", "gradcov_mb/top")}
    for name, v in by.items():
        mb = "gradcov_mb" in name
        assert (v.family, v.n_family) == (("breakeven.c1_mb", 2) if mb else ("breakeven.c1", 4))
        assert v.verdict == "supported" and v.n == 18, v.summary()
    # a sweep without the mini-batch unit: no such verdict, the primary family unchanged
    plain = experiments.evaluate(C1, make_table(breakeven_trials("paper")), options={n: FAST for n in C1})
    assert sorted(v.name for v in plain) == sorted(n for n in by if "gradcov_mb" not in n)
    assert {v.name: v.p_adjusted for v in plain} == {
        n: v.p_adjusted for n, v in by.items() if "gradcov_mb" not in n}


def test_a_reversed_minibatch_unit_does_not_touch_the_primary_family():
    out = experiments.evaluate(C1, make_table(with_minibatch_unit(breakeven_trials("paper"), sign=-1)),
                               options={n: FAST for n in C1})
    for v in out:
        expected = "refuted" if v.details["metric"] == "gradcov_mb/top" else "supported"
        assert v.verdict == expected, v.summary()


# ----------------------------------------------- stability with the noise term
# η = 0.1, S = 32, N = 4000: (N − S)/(S(N − 1)) = 3968/127968; with s² = 400 the
# noise term is c = 400·0.01·0.031008 = 0.12403, so SGD is unstable along e_H¹
# once ηλ ≥ 1 + √(1 − c) = 1.93594, λ ≥ 19.359 (full batch: λ ≥ 20).
LAM = np.array([1.0, 5.0, 19.3, 19.5, 30.0])
S2_STEPS = np.arange(0, 100, 20)


def noisy_trial(train_size=4000, s2=400.0, log_s2=True):
    curves = {"hessian/top": (S2_STEPS, LAM)}
    if log_s2:
        curves["sgd_noise/s2"] = (S2_STEPS, np.full(LAM.size, s2))
    params = {"optim.lr": 0.1, "train.batch_size": 32}
    if train_size is not None:
        params["data.train_size"] = train_size
    return {"params": params, "curves": curves}


def test_stability_step_uses_s2_batch_and_train_size():
    t = make_table([noisy_trial(), noisy_trial(train_size=None), noisy_trial(log_s2=False),
                    noisy_trial(s2=0.0), noisy_trial(s2=1e4)])
    row = lambda i: t.runs.iloc[i]                                  # noqa: E731
    step = lambda i, key="sgd_noise/s2": breakeven.run_stability_step(  # noqa: E731
        t, row(i), noise_s2_key=key)
    assert step(0) == 60                                   # λ = 19.5 ≥ 19.359 > 19.3
    assert step(0, None) == 80                             # full batch: the first λ ≥ 20
    assert step(1) == step(2) == 80                        # no N, or no s²: full batch
    assert step(3) == 80                                   # s² = 0: the noise term vanishes
    # c = 1e4·0.01·0.031008 = 3.1 > 1: noise alone is unstable; the first ηλ ≥ 1 (λ = 19.3)
    assert step(4) == 40
    df = breakeven.breakeven_steps(t)
    assert df["stability_step"].tolist() == [60, 80, 80, 80, 40]
    assert df["stability_step_full_batch"].tolist() == [80] * 5


def test_stability_step_with_a_schedule_and_varying_s2():
    # s² per probe step: dropped to 10 by step 60, the limit there is back near 20
    # (λ = 19.5 is stable); logged at other steps, s² is interpolated to the probe steps
    trial = noisy_trial()
    trial["curves"]["sgd_noise/s2"] = (S2_STEPS, np.array([400.0, 400.0, 400.0, 10.0, 10.0]))
    t = make_table([trial])
    assert breakeven.run_stability_step(t, t.runs.iloc[0], noise_s2_key="sgd_noise/s2") == 80
    trial["curves"]["sgd_noise/s2"] = (np.array([0, 80]), np.array([400.0, 400.0]))
    t = make_table([trial])
    assert breakeven.run_stability_step(t, t.runs.iloc[0], noise_s2_key="sgd_noise/s2") == 60


def test_a_stability_plan_says_whether_the_noise_term_was_on():
    trials = breakeven_trials("paper")
    for tr in trials:
        tr["params"]["data.train_size"] = 4000
    plans = experiments.plans_for("breakeven.c2_lr", {"detector": "stability"})
    off = breakeven.c2_lr(make_table(trials), plans=plans, **FAST)
    assert off and all(v.details["noise_term"].startswith("off: no trial logged") for v in off)
    for tr in trials:
        tr["curves"]["sgd_noise/s2"] = (STEPS, np.full(STEPS.size, 50.0))
    trials[0]["curves"].pop("sgd_noise/s2")
    part = breakeven.c2_lr(make_table(trials), plans=plans, **FAST)
    assert all(v.details["noise_term"].startswith("on for 17 of 18 trials") for v in part)
    trials[0]["curves"]["sgd_noise/s2"] = (STEPS, np.full(STEPS.size, 50.0))
    on = breakeven.c2_lr(make_table(trials), plans=plans, **FAST)
    assert all(v.details["noise_term"].startswith("on (sgd_noise/s2") and v.exploratory for v in on)


# -------------------------------------------------------------------- figures
def test_stability_figure_and_the_minibatch_row(tmp_path):
    from sweeps import report

    trials = with_minibatch_unit(breakeven_trials("paper", seeds=range(1)))
    assert breakeven.fig_stability(make_table(trials)) is None          # no noise term logged
    for t in trials:
        lr = t["params"]["optim.lr"]
        t["curves"]["hessian/lr_x_top"] = (STEPS, lr * t["curves"]["hessian/top"][1])
        t["curves"]["sgd_noise/noise_term"] = (STEPS, np.linspace(0.0, 1.5, STEPS.size))
    table = make_table(trials)
    figs = report.make_figures(table, ["breakeven"])
    assert {"breakeven_stability.png", "breakeven_max_vs_hparams.png"} <= set(figs)
    assert len(figs["breakeven_stability.png"].axes) == 3                # S = 32, 128 and the colour bar
    assert len(figs["breakeven_max_vs_hparams.png"].axes) == 6  # λ_H¹, λ_K¹, λ_K¹ mini-batch × 2
    for p in report.save_figures(figs, tmp_path):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------ rise and saturation
GRID = np.array([0, *np.unique(np.round(np.geomspace(10, 3000, 30)).astype(int))])


def plateau(peak: float, t_rise: float, level: float, steps=GRID) -> np.ndarray:
    """Rises linearly to `peak` at t_rise, then relaxes to level × peak."""
    s = np.asarray(steps, dtype=float)
    up = 0.1 * peak + 0.9 * peak * np.minimum(s / t_rise, 1.0)
    return np.where(s <= t_rise, up, peak * (level + (1 - level) * np.exp(-(s - t_rise) / 300)))


def test_peak_step_and_the_outcome_by_hand():
    steps = [0, 10, 20, 40, 80, 160, 320, 640, 1280, 3000]
    vals = [1.0, 2.0, 5.0, 9.5, 10.0, 9.0, 8.0, 7.0, 7.5, 7.0]
    assert breakeven.peak_step(steps, vals, 0.1) == 40                 # 9.5 ≥ 0.9 × 10
    assert breakeven.peak_step(steps, vals, 0.01) == 80                # the argmax itself
    out = breakeven.rise_saturates(steps, vals, peak_tol=0.1, smooth=1, early_frac=0.25, band=[0.5, 1.0],
                                   min_after=3)
    # after step 40: 10, 9, 8, 7, 7.5, 7 → median 7.75 / 10
    assert out["n_after"] == 6 and out["level"] == pytest.approx(0.775) and out["success"]
    late = breakeven.rise_saturates(steps, vals[:4] + [5, 5, 5, 5, 5, 11.0], peak_tol=0.1,
                                    smooth=1, early_frac=0.25, band=[0.5, 1.0], min_after=3)
    assert late["peak_step"] == 3000 and not late["early"] and not late["success"]
    fall = breakeven.rise_saturates(steps, vals[:5] + [1, 1, 1, 1, 1], peak_tol=0.1,
                                    smooth=1, early_frac=0.25, band=[0.5, 1.0], min_after=3)
    assert fall["early"] and not fall["in_band"] and fall["level"] == pytest.approx(0.1)
    # cadence: 4 measurements before a break-even step of 80, 6 after a peak step of 40,
    # 5 after the argmax (step 80)
    assert breakeven.cadence(steps, vals, 80.0, 40.0) == (4, 6, 5)
    assert breakeven.cadence(steps, vals, float("nan"), float("nan")) == (0, 0, 5)
    # smoothing: one spike (30 at step 640) is the raw maximum, not the smoothed one
    spiky = vals[:7] + [30.0, 7.0, 7.0]
    assert breakeven.peak_step(steps, spiky, 0.1) == 640
    assert list(breakeven.smoothed([1, 9, 1, 1, 1], 3)) == [5, 1, 1, 1, 1]
    assert breakeven.peak_step(steps, spiky, 0.1, smooth=3) == 40     # running medians 9.5, 9.5, 9 …


def rise_trials(level: float, t_rise: float = 150.0, steps=GRID, n: int = 12) -> list[dict]:
    out = []
    for i in range(n):
        lr = (0.04, 0.1, 0.2, 0.4)[i % 4]
        k = plateau(10.0 / (1 + 10 * lr), t_rise * (1 + 0.1 * (i % 3)), level, steps)
        out.append({"params": {"optim.lr": lr, "train.batch_size": 32}, "seed": i // 4,
                    "curves": {"gradcov/top": (steps, k), "hessian/top": (steps, 5 * k),
                               "final/val_acc": (steps[-1:], [0.5 + 0.5 * lr + 0.01 * i])}})
    return out


def test_rise_saturate_supported_refuted_and_the_cadence_check():
    ok = breakeven.rise_saturate(make_table(rise_trials(0.8)))
    assert [v.verdict for v in ok] == ["supported"] * 2, [v.summary() for v in ok]
    assert all(v.n == 12 and v.statistic == 1.0 and v.family == "breakeven.rise" for v in ok)
    assert ok[0].details["checks"]["cadence_resolves_rise"]["passed"]
    # the spectra collapse after the peak (level 0.2, below the band): refuted
    low = breakeven.rise_saturate(make_table(rise_trials(0.2)))
    assert [v.verdict for v in low] == ["refuted"] * 2 and all(v.statistic == 0 for v in low)
    # the same trajectories seen at 6 probe steps: the cadence cannot resolve the rise
    sparse = np.array([0, 30, 300, 1000, 2000, 3000])
    bad = breakeven.rise_saturate(make_table(rise_trials(0.8, steps=sparse)))
    assert [v.verdict for v in bad] == ["invalid_protocol"] * 2
    assert "cadence_resolves_rise" in bad[0].reason


def test_lr_generalizes_both_links():
    out = experiments.evaluate(["breakeven.lr_generalizes"], make_table(rise_trials(0.8, n=24)),
                               options={"breakeven.lr_generalizes": FAST})
    by = {v.name: v for v in out}
    acc, top = by["breakeven.lr_generalizes[final/val_acc]"], by["breakeven.lr_generalizes[gradcov/top]"]
    assert acc.verdict == top.verdict == "supported", [v.summary() for v in out]
    assert acc.statistic > 0 > top.statistic and acc.n == top.n == 24
    assert acc.family == top.family == "breakeven.lr_link" and acc.n_family == 2


def test_rise_figure_and_table():
    trials = rise_trials(0.8)
    for t in trials:
        t["params"]["probes.gradcov_mb_batches"] = 30
        steps, k = t["curves"]["gradcov/top"]
        t["curves"]["gradcov_mb/top"] = (steps, k / 128)
        t["curves"]["gradcov_mb/trace_over_top"] = (steps, np.linspace(20, 12, steps.size))
    table = make_table(trials)
    fig = breakeven.fig_rise(table)
    assert fig is not None and len(fig.axes) == 7                     # 6 panels and the colour bar
    df = breakeven.rise_steps(table)
    assert len(df) == 24 and set(df["key"]) == {"gradcov/top", "hessian/top"}
    assert df["success"].all() and (df["peak_step"] <= 0.25 * 3000).all()


# ------------------------------------------------------------------ the specs
def test_shipped_spec_design():
    from pathlib import Path

    from dynamics_core.hooks import log_spaced_steps
    from dynamics_core.pack_rules import pack_compatible
    from sweeps.spec import load_spec, smoke

    specs = Path(__file__).parents[1] / "sweeps" / "specs"
    spec, pilot = load_spec(specs / "breakeven.yaml"), load_spec(specs / "breakeven_pilot.yaml")
    assert not set(spec.seeds) & set(pilot.seeds)                      # fresh confirmatory seeds
    assert not pilot.conjectures and {"breakeven.rise_saturate", "breakeven.lr_generalizes",
                                      "breakeven.c2_lr", "breakeven.c2_batch"} <= set(spec.conjectures)
    p = spec.base.probes
    assert p.gradcov_mb_batches - 1 > 2 * 14.29                          # the cap, twice the paper's max ratio
    assert p.gradcov_mb_batches * p.gradcov_mb_size <= spec.base.data.train_size
    steps = log_spaced_steps(spec.base.train.max_steps, p.schedule.points, p.schedule.log_start)
    # the pilot's earliest break-even step was 30 (η = 0.4): ≥ 8 probes before it
    assert len(steps) == 37 and sum(s < 30 for s in steps) >= 8 and steps[-1] == 3000
    trials = spec.trials()
    assert len(trials) == 36 and smoke(spec).trials()
    by_s = {}
    for t in trials:
        by_s.setdefault(t.train.batch_size, []).append(t)
    assert all(pack_compatible(group) is None for group in by_s.values())
