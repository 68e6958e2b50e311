"""Every conjecture on constructed tables whose answer is known:
monotone in the predicted direction -> supported, reversed -> refuted,
pure noise -> inconclusive, or underpowered where the design could not have
detected the plan's effect of interest; diverged trials present, excluded
and counted. Each conjecture runs under its registered plan."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from sweeps import experiments
from sweeps.experiments import breakeven, large_lr, regimes
from sweeps.conjectures.verdict import Verdict, compare_groups, decide, trend_test
from sweeps.table import SweepTable


# ------------------------------------------------------------------ builder
def make_table(trials: list[dict]) -> SweepTable:
    """trials: dicts with `params` (dotted names), optional `status`, `seed`, and
    `curves` {metric key: (steps, values)}; the table's runs get each metric's last value."""
    runs, rows = [], []
    for i, t in enumerate(trials):
        rid = f"r{i:03d}"
        row = {"run_id": rid, "trial_id": f"t{i}", "run_hash": f"h{i}",
               "status": t.get("status", "finished"), "seed": t.get("seed", 0), **t["params"]}
        for key, (steps, values) in t["curves"].items():
            steps, values = np.asarray(steps), np.asarray(values, dtype=float)
            rows.append(pd.DataFrame({"run_id": rid, "key": key, "step": steps, "value": values}))
            row[key] = values[-1]
        runs.append(row)
    metrics = pd.concat(rows, ignore_index=True).sort_values(["run_id", "key", "step"])
    return SweepTable(pd.DataFrame(runs), metrics.reset_index(drop=True))


FAST = dict(n_perm=999, n_boot=300)


# --------------------------------------------------------------- break-even
STEPS = np.arange(0, 401, 20)


def hump(peak: float, t_peak: float = 100.0, steps=STEPS) -> np.ndarray:
    """Rises to `peak` at t_peak, then decays (peak reached within the run)."""
    t = np.maximum(steps, 1) / t_peak
    return peak * t * np.exp(1 - t)


def breakeven_trials(mode: str, seeds=range(3), rng_seed: int = 0) -> list[dict]:
    """Grid lr x batch x seed. mode: paper (predicted direction), reversed, noise."""
    rng = np.random.default_rng(rng_seed)
    out = []
    for lr, bs, seed in itertools.product([0.01, 0.03, 0.1], [32, 128], seeds):
        a, b = np.log10(lr / 0.01), np.log2(bs / 32)      # 0..1, 0..2
        sign = {"paper": 1, "reversed": -1, "noise": 0}[mode]
        if mode == "noise":
            a, b = rng.normal(size=2)
        jitter = lambda: float(np.exp(rng.normal(0, 0.05)))  # noqa: E731
        top_k = 3.0 * np.exp(sign * (-0.8 * a + 0.4 * b)) * jitter()
        top_h = 30.0 * np.exp(sign * (-0.8 * a + 0.4 * b)) * jitter()
        ratio = 10.0 * np.exp(sign * (0.4 * a - 0.2 * b)) * jitter()
        trace = 40.0 * np.exp(sign * (-0.5 * a + 0.3 * b)) * jitter()
        if mode == "noise":
            top_k, top_h, ratio, trace = np.exp(rng.normal(0, 0.5, 4)) * [3, 30, 10, 40]
        curves = {"gradcov/top": (STEPS, hump(top_k)), "hessian/top": (STEPS, hump(top_h)),
                  "gradcov/trace": (STEPS, hump(trace)),
                  "gradcov/trace_over_top": (STEPS, hump(ratio, 60.0)),
                  # train accuracy on the probe set: 0.65 after the peaks (step 260)
                  "probe/acc": (STEPS, np.linspace(0.1, 0.95, STEPS.size))}
        out.append({"params": {"optim.lr": lr, "train.batch_size": bs}, "seed": seed,
                    "curves": curves})
    return out


def diverged_trials(n: int = 3) -> list[dict]:
    """Largest lr, huge spectra: would flip every trend if they were averaged in."""
    big = {k: (STEPS, hump(1e6)) for k in
           ("gradcov/top", "hessian/top", "gradcov/trace", "gradcov/trace_over_top")}
    return [{"params": {"optim.lr": 0.1, "train.batch_size": bs}, "seed": s, "status": "diverged",
             "curves": big} for s in range(n) for bs in (32,)]


BE = ["breakeven.c1_lr", "breakeven.c1_batch", "breakeven.c2_lr", "breakeven.c2_batch"]


@pytest.mark.parametrize("name", BE)
def test_breakeven_paper_direction_supported(name):
    verdicts = experiments.get_conjecture(name)(make_table(breakeven_trials("paper")), **FAST)
    assert len(verdicts) == 2
    for v in verdicts:
        assert v.verdict == "supported", v.summary()
        assert v.n == 18 and v.p_value < 0.01 and not v.exploratory
        assert v.details.get("excluded_peak_not_reached", 0) == 0
        # cells are (held-fixed stratum, seed): 2 batch sizes or 3 lrs, times 3 seeds
        assert v.details["blocks"] == "seed" and v.details["n_cells"] == (6 if "lr" in name else 9)
        assert v.plan_hash == experiments.get("breakeven").plans[v.name].hash()


@pytest.mark.parametrize("name", BE)
def test_breakeven_reversed_refuted(name):
    for v in experiments.get_conjecture(name)(make_table(breakeven_trials("reversed")), **FAST):
        assert v.verdict == "refuted", v.summary()


@pytest.mark.parametrize("name", BE)
def test_breakeven_noise_underpowered(name):
    """3 trials per (batch, seed) cell detect |rho| ≈ 0.75 at best: below the 0.5 of interest."""
    for v in experiments.get_conjecture(name)(make_table(breakeven_trials("noise", rng_seed=3)), **FAST):
        assert v.verdict == "underpowered", v.summary()
        assert "minimum detectable" in v.reason


def test_breakeven_c1_signs_and_metrics():
    t = make_table(breakeven_trials("paper"))
    lr_v = {v.details["metric"]: v for v in breakeven.c1_lr(t, **FAST)}
    assert set(lr_v) == {"hessian/top", "gradcov/top"}
    assert all(v.statistic < 0 and v.effect < 0 and v.ci_high < 0 for v in lr_v.values())
    bs_v = breakeven.c1_batch(t, **FAST)
    assert all(v.statistic > 0 and v.effect > 0 for v in bs_v)
    # held fixed: batch size along lr, lr along batch size
    assert lr_v["gradcov/top"].details["strata"] == ["train.batch_size"]
    assert bs_v[0].details["strata"] == ["optim.lr"]
    assert lr_v["gradcov/top"].details["n_strata"] == 2
    c2 = {v.details["metric"]: v for v in breakeven.c2_lr(t, **FAST)}
    assert c2["gradcov/trace_over_top"].statistic > 0 and c2["gradcov/trace"].statistic < 0


def test_breakeven_diverged_excluded_and_counted():
    t = make_table(breakeven_trials("paper") + diverged_trials(3))
    for v in breakeven.c1_lr(t, **FAST) + breakeven.c2_batch(t, **FAST):
        assert v.verdict == "supported", v.summary()
        assert v.details["excluded_diverged"] == 3
        assert v.n == 18


def test_breakeven_unpeaked_trials_excluded():
    """docs/science.md#break-even-point trap: small-lr runs still rising have small maxima.
    Conjecture 1's registered window ends at train accuracy 0.65, which these never
    reach: excluded. Over the whole run (exploratory) the peak rule excludes them."""
    rising = [{"params": {"optim.lr": 0.01, "train.batch_size": bs}, "seed": 10 + s,
               "curves": {k: (STEPS, hump(0.01, t_peak=1e4)) for k in ("gradcov/top", "hessian/top")}}
              for s in range(4) for bs in (32, 128)]
    t = make_table(breakeven_trials("paper") + rising)
    for v in breakeven.c1_lr(t, **FAST):
        assert v.verdict == "supported", v.summary()
        assert v.details["excluded_window_not_reached"] == 8
        assert v.n == 18
    whole = experiments.plans_for("breakeven.c1_lr", {
        "window": "whole_run", "exclusions": ("unfinished", "peak_not_reached")})
    for v in breakeven.c1_lr(t, plans=whole, **FAST):
        assert v.verdict == "supported" and v.exploratory, v.summary()
        assert v.details["excluded_peak_not_reached"] == 8 and v.n == 18
        assert v.registered_hash == experiments.get("breakeven").plans[v.name].hash() != v.plan_hash


def test_breakeven_too_few_in_window_is_underpowered():
    rising = [{"params": {"optim.lr": lr, "train.batch_size": 32}, "seed": s,
               "curves": {"gradcov/top": (STEPS, hump(1.0 / lr, t_peak=1e4)),
                          "hessian/top": (STEPS, hump(1.0 / lr, t_peak=1e4))}}
              for lr in (0.01, 0.1) for s in range(3)]
    for v in breakeven.c1_lr(make_table(rising), **FAST):
        assert v.verdict == "underpowered" and v.n == 0
        assert v.details["excluded_window_not_reached"] == 6 and "n=0 < min 10" in v.reason


def test_c2_ratio_derived_when_not_logged():
    trials = breakeven_trials("paper")
    for t in trials:
        del t["curves"]["gradcov/trace_over_top"]
        # trace peaks earlier than top, so their ratio falls from its early maximum;
        # its peak ∝ exp(0.3 log10(lr/0.01)): larger for larger lr
        t["curves"]["gradcov/trace"] = (STEPS, hump(t["curves"]["gradcov/trace"][1].max(), 60.0))
    v = {x.details["metric"]: x for x in breakeven.c2_lr(make_table(trials), **FAST)}
    ratio = v["gradcov/trace_over_top"]
    assert ratio.n == 18 and ratio.verdict == "supported", ratio.summary()


def test_peak_and_saturation_rules():
    assert breakeven.peak_reached(hump(1.0))
    assert not breakeven.peak_reached(hump(1.0, t_peak=1e4))       # still rising
    assert not breakeven.peak_reached(np.r_[1.0, 2.0, 3.0, 3.0])   # flat at the max
    s = breakeven.saturation_step(STEPS, hump(1.0), eps=0.05)
    assert 60 <= s <= 100
    assert np.isnan(breakeven.saturation_step(STEPS, hump(1.0, t_peak=1e4)))
    assert breakeven.stability_step(np.arange(5), np.r_[1, 5, 19, 21, 30.0], 0.1) == 3
    assert np.isnan(breakeven.stability_step(np.arange(3), np.r_[1, 2, 3.0], 0.1))


def test_breakeven_steps_table():
    trials = breakeven_trials("paper", seeds=range(1))
    trials[0]["curves"]["lr"] = (STEPS, np.full(STEPS.size, 0.01))
    df = breakeven.breakeven_steps(make_table(trials + diverged_trials(1)))
    assert len(df) == 7
    assert {"stability_step", "saturation_step_gradcov", "saturation_step_hessian",
            "peak_reached_gradcov", "peak_reached_hessian"} <= set(df.columns)
    assert df["peak_reached_gradcov"].all()
    # lr 0.01: the hessian peak (30) never reaches 2/lr = 200
    assert np.isnan(df.loc[0, "stability_step"])
    # lr 0.1, bs 32: hessian peak 30*exp(-0.8) ≈ 13.5 <= 20: still never
    big = df[df["status"] == "diverged"].iloc[0]
    assert big["stability_step"] == 0.0      # 1e6 hump is above 2/0.1 from the first step


# ------------------------------------------------------------------ regimes
EPOCH_STEPS = 50 * np.arange(1, 11)


def loss_curve(final: float, regime: str) -> np.ndarray:
    e = np.arange(1, 11)
    base = final + (2.3 - final) * np.exp(-e / 2.0)
    if regime == "large-step":
        base = base + 0.3 * (-1.0) ** e
    return base


def regime_trials(mode: str, seeds=range(3), rng_seed: int = 0, diverged: int = 0) -> list[dict]:
    """lr {0.01, 0.03} small-step, {0.3, 1.0} large-step, momentum {0, 0.5, 0.9}."""
    rng = np.random.default_rng(rng_seed)
    out = []
    for lr, mu, seed in itertools.product([0.01, 0.03, 0.3, 1.0], [0.0, 0.5, 0.9], seeds):
        regime = "small-step" if lr < 0.1 else "large-step"
        eps = rng.normal(0, 0.02)
        if mode == "noise":
            final, acc = 0.4 + rng.normal(0, 0.1), 0.75 + rng.normal(0, 0.02)
        elif regime == "small-step":
            final = 0.5 + {"paper": -0.3, "reversed": 0.3}[mode] * mu + eps
            acc = {"paper": 0.70, "reversed": 0.85}[mode] + eps / 2
        else:
            final = 0.3 + eps
            acc = {"paper": 0.85, "reversed": 0.70}[mode] + eps / 2
        curves = {"train/loss": (EPOCH_STEPS, loss_curve(final, regime)),
                  "val/acc": (EPOCH_STEPS, np.linspace(0.3, acc, 10))}
        out.append({"params": {"optim.lr": lr, "optim.momentum": mu}, "seed": seed, "curves": curves})
    for s in range(diverged):
        out.append({"params": {"optim.lr": 3.0, "optim.momentum": 0.9}, "seed": s,
                    "status": "diverged",
                    "curves": {"train/loss": (EPOCH_STEPS[:3], [2.3, 50.0, np.nan]),
                               "val/acc": (EPOCH_STEPS[:3], [0.1, 0.1, 0.1])}})
    return out


def test_classify_regimes():
    t = make_table(regime_trials("paper", diverged=2))
    reg = regimes.classify_regimes(t)
    lr = t.runs.set_index("run_id")["optim.lr"]
    assert (reg[lr < 0.1] == "small-step").all()
    assert (reg[(lr > 0.1) & (lr < 2)] == "large-step").all()
    assert (reg[lr == 3.0] == "diverged").sum() == 2
    assert regimes.classify_loss_curve([3, 2, 1.0]) == "small-step"
    assert regimes.classify_loss_curve([3, 2, 2.5, 1.0], min_decrease_frac=0.9) == "large-step"
    assert regimes.classify_loss_curve([3, 2, 2.5, 1.0], min_decrease_frac=0.6) == "small-step"
    assert regimes.classify_loss_curve([3, np.inf]) == "diverged"


def stuck_trials(n_per_cell: int = 2, dataset: str | None = "mnist1d") -> list[dict]:
    """Large η/(1−μ): neither diverged nor trained, loss wobbling at ln 10, accuracy at chance."""
    e = np.arange(1, 11)
    out = []
    for lr, mu, seed in itertools.product([0.3, 1.0], [0.5, 0.9], range(n_per_cell)):
        params = {"optim.lr": lr, "optim.momentum": mu}
        if dataset:
            params["data.dataset"] = dataset
        out.append({"params": params, "seed": seed,
                    "curves": {"train/loss": (EPOCH_STEPS, np.log(10) + 0.05 * (-1.0) ** e),
                               "val/acc": (EPOCH_STEPS, np.full(10, 0.1))}})
    return out


def with_dataset(trials: list[dict], dataset: str = "mnist1d") -> list[dict]:
    for t in trials:
        t["params"]["data.dataset"] = dataset
    return trials


def test_non_training_class():
    chance = np.log(10)
    assert regimes.classify_loss_curve([2.3, 2.25, 2.31, 2.28], chance_loss=chance) == "non-training"
    assert regimes.classify_loss_curve([2.3, 2.25, 2.31, 2.28]) == "large-step"   # C unknown: rule off
    assert regimes.classify_loss_curve([2.3, 2.25, 2.31, 2.28], chance_loss=chance,
                                       nontrain_frac=None) == "large-step"
    # learned, then fell back to chance: non-training at the end
    assert regimes.classify_loss_curve([2.0, 1.4, 1.5, 2.3], chance_loss=chance) == "non-training"
    assert regimes.classify_loss_curve([2.3, 1.0, 1.2, 0.8], chance_loss=chance) == "large-step"
    # consistently decreasing stays small-step even near chance (slow, but training)
    assert regimes.classify_loss_curve([2.30, 2.29, 2.28], chance_loss=chance) == "small-step"
    assert regimes.classify_loss_curve([2.3, 2.2, 2.25, 2.1], chance_loss=chance,
                                       nontrain_frac=0.95) == "large-step"
    t = make_table(with_dataset(regime_trials("paper", diverged=2)) + stuck_trials())
    reg = regimes.classify_regimes(t)
    assert (reg == "non-training").sum() == 8 and (reg == "diverged").sum() == 2
    assert (reg == "large-step").sum() == 18 and (reg == "small-step").sum() == 18
    # no dataset column: n_classes gives C
    t2 = make_table(regime_trials("paper") + stuck_trials(dataset=None))
    assert (regimes.classify_regimes(t2) == "non-training").sum() == 0
    assert (regimes.classify_regimes(t2, n_classes=10) == "non-training").sum() == 8


def schedule_trials(two_stage_acc: dict[int, float], base_acc: float = 0.80, sd: float = 0.003,
                    seeds=range(6), rng_seed: int = 0, diverged: int = 0) -> list[dict]:
    rng = np.random.default_rng(rng_seed)
    out = []
    for s in seeds:
        acc = base_acc + rng.normal(0, sd)
        out.append({"params": {"optim.schedule.kind": "step", "optim.schedule.milestones": "[0.5, 0.75]",
                               "optim.schedule.stage1_epochs": 0}, "seed": s,
                    "curves": {"val/acc": (EPOCH_STEPS, np.linspace(0.3, acc, 10))}})
        for T, mean in two_stage_acc.items():
            acc = mean + rng.normal(0, sd)
            out.append({"params": {"optim.schedule.kind": "two_stage",
                                   "optim.schedule.milestones": "[0.5, 0.75]",
                                   "optim.schedule.stage1_epochs": T}, "seed": s,
                        "curves": {"val/acc": (EPOCH_STEPS, np.linspace(0.3, acc, 10))}})
    for s in range(diverged):
        out.append({"params": {"optim.schedule.kind": "two_stage", "optim.schedule.milestones": "[0.5]",
                               "optim.schedule.stage1_epochs": 2}, "seed": s, "status": "diverged",
                    "curves": {"val/acc": (EPOCH_STEPS[:2], [0.1, 0.1])}})
    return out


def test_two_stage_verdicts():
    """One non-inferiority verdict per stage-1 T; Holm over the Ts (family regimes.two_stage).
    Paired by seed: 8 seeds, so that the exact p (2/2^8) passes Holm over 2."""
    table = make_table(schedule_trials({2: 0.70, 5: 0.805}, diverged=2, seeds=range(8)))
    t2, t5 = regimes.two_stage(table, **FAST)
    assert (t2.name, t5.name) == ("regimes.two_stage[T=2]", "regimes.two_stage[T=5]")
    assert t5.verdict == "supported" and t2.verdict == "refuted", (t5.summary(), t2.summary())
    assert t5.details["stage1_epochs"] == 5 and t5.details["n_T_tried"] == 2
    assert t5.details["excluded_diverged"] == 2 and t5.n == 16 and t5.details["margin"] == 0.02
    assert t5.details["n_seeds"] == 8 and "within seed blocks" in t5.details["test"]
    adj = experiments.evaluate(["regimes.two_stage"], table, {"regimes.two_stage": FAST})
    assert [v.n_family for v in adj] == [2, 2] and adj[1].p_adjusted == pytest.approx(2 * t5.p_raw)
    assert [v.verdict for v in adj] == ["refuted", "supported"]
    rev = regimes.two_stage(make_table(schedule_trials({2: 0.70, 5: 0.72})), **FAST)
    assert [v.verdict for v in rev] == ["refuted", "refuted"]
    noisy = regimes.two_stage(make_table(schedule_trials({5: 0.79}, sd=0.03, seeds=range(3))), **FAST)[0]
    assert noisy.verdict == "underpowered" and "n=6 < min 10" in noisy.reason, noisy.summary()
    fixed = regimes.two_stage(make_table(schedule_trials({2: 0.70, 5: 0.805})), stage1_epochs=2, **FAST)
    assert [v.verdict for v in fixed] == ["refuted"]


# ----------------------------------------------------------------- large LR
def large_lr_trials(mode: str, seeds=range(8), rng_seed: int = 0, diverged: int = 0) -> list[dict]:
    rng = np.random.default_rng(rng_seed)
    e = np.arange(1, 11)
    out = []
    arms = {"large": {"optim.lr": 0.1, "optim.schedule.kind": "step",
                      "optim.schedule.milestones": "[0.5]", "optim.schedule.factor": 0.04,
                      "model.preact_noise": 0.0, "train.epochs": 10, "data.patch.fraction": 0.8},
            "small": {"optim.lr": 0.004, "optim.schedule.kind": "constant",
                      "optim.schedule.milestones": "[0.5, 0.75]", "optim.schedule.factor": 0.1,
                      "model.preact_noise": 0.0, "train.epochs": 10, "data.patch.fraction": 0.8},
            "noise": {"optim.lr": 0.004, "optim.schedule.kind": "constant",
                      "optim.schedule.milestones": "[0.5, 0.75]", "optim.schedule.factor": 0.1,
                      "model.preact_noise": 0.1, "optim.schedule.noise_off_epoch": 5,
                      "train.epochs": 10, "data.patch.fraction": 0.8}}
    for arm, params in arms.items():
        for s in seeds:
            j = rng.normal(0, 0.01)
            if mode == "noise":
                acc = 0.6 + 0.02 * e / 10 + rng.normal(0, 0.02, 10)
            elif (arm == "large") == (mode == "paper"):
                acc = np.where(e <= 5, 0.45, 0.82) + j        # large LR: worse then better
            else:
                acc = np.where(e <= 5, 0.62, 0.72) + j        # small LR: better then worse
            patch = np.where(e <= 5, 0.2 if arm == "large" else 0.9, 0.9)
            out.append({"params": params, "seed": s,
                        "curves": {"val/acc": (EPOCH_STEPS, acc), "patch/acc": (EPOCH_STEPS, patch),
                                   "train/loss": (EPOCH_STEPS, loss_curve(0.2, "small-step"))}})
    for s in range(diverged):
        out.append({"params": arms["large"], "seed": 100 + s, "status": "diverged",
                    "curves": {"val/acc": (EPOCH_STEPS[:1], [0.1])}})
    return out


def test_large_lr_arms_and_epoch():
    t = make_table(large_lr_trials("paper"))
    arms = t.runs.apply(large_lr.lr_arm, axis=1)
    assert (arms.value_counts() == 8).all() and set(arms) == {"large-anneal", "small", "small+noise"}
    assert large_lr.anneal_epoch(t.runs) == 5
    s = pd.Series(np.arange(11.0))      # evaluation at init + 10 epochs
    assert large_lr.value_at_epoch(s, 5, 10) == 5.0
    assert large_lr.value_at_epoch(s.iloc[1:], 5, 10) == 5.0


def test_anneal_crossover_verdicts():
    v = large_lr.anneal_crossover(make_table(large_lr_trials("paper", diverged=2)), **FAST)[0]
    assert v.verdict == "supported", v.summary()
    assert v.details["before_minus"] == pytest.approx(0.17, abs=0.02)     # before: small - large
    assert v.details["after_minus"] == pytest.approx(-0.10, abs=0.02)     # after: small - large
    # intersection-union: the smaller signed difference, the larger part p
    assert v.statistic == pytest.approx(0.10, abs=0.02)
    assert v.p_raw == max(p["p_value"] for p in v.details["parts"])
    assert v.details["excluded_diverged"] == 2 and v.details["anneal_epoch"] == 5
    assert all(c["passed"] for c in v.details["checks"].values())
    rev = large_lr.anneal_crossover(make_table(large_lr_trials("reversed")), **FAST)[0]
    assert rev.verdict == "refuted"
    # 8 per arm with 0.02 noise per epoch: two accuracy points are out of reach
    noise = large_lr.anneal_crossover(make_table(large_lr_trials("noise", rng_seed=4)), **FAST)[0]
    assert noise.verdict == "underpowered", noise.summary()


def test_anneal_crossover_manipulation_checks():
    """The small arm must fit the training set at least as fast and learn the patch first."""
    trials = large_lr_trials("paper")
    for t in trials:
        if t["params"]["optim.schedule.kind"] == "constant":    # small arms learn the patch late
            t["curves"]["patch/acc"] = (EPOCH_STEPS, np.full(10, 0.1))
    v = large_lr.anneal_crossover(make_table(trials), **FAST)[0]
    assert v.verdict == "invalid_protocol" and "small_learns_patch" in v.reason, v.summary()
    for t in trials:
        t["curves"]["patch/acc"] = (EPOCH_STEPS, np.full(10, 0.9 if t["params"]["optim.lr"] < 0.01
                                                         else 0.2))
        if t["params"]["optim.schedule.kind"] == "constant":    # small arms fit slowly
            t["curves"]["train/loss"] = (EPOCH_STEPS, loss_curve(1.5, "small-step"))
    v = large_lr.anneal_crossover(make_table(trials), **FAST)[0]
    assert v.verdict == "invalid_protocol" and "small_fits_as_fast" in v.reason, v.summary()
    for t in trials:
        del t["curves"]["patch/acc"]
    v = large_lr.anneal_crossover(make_table(trials), **FAST)[0]
    assert v.verdict == "invalid_protocol" and v.details["checks"]["small_learns_patch"][
        "detail"] == "patch/acc not logged in both arms"


# ------------------------------------------------------ registry and helpers
def test_registry():
    assert set(experiments.conjecture_names()) >= set(BE) | {
        "regimes.momentum_matched", "regimes.large_step_generalizes", "regimes.two_stage",
        "large_lr.anneal_crossover", "stiffness.near_zero_after_onset",
        "stiffness.within_exceeds_between", "stiffness.xi_vs_lr", "frequency.low_first"}
    with pytest.raises(KeyError, match="valid names: .*breakeven.c1_lr"):
        experiments.get_conjecture("breakeven.c3")
    with pytest.raises(KeyError):
        experiments.evaluate(["breakeven.c1_lr", "nope"], make_table(breakeven_trials("paper")))
    out = experiments.evaluate(["breakeven.c1_lr", "breakeven.c2_lr"],
                               make_table(breakeven_trials("paper")),
                               options={"breakeven.c1_lr": FAST, "breakeven.c2_lr": FAST})
    assert [v.name for v in out] == ["breakeven.c1_lr[hessian/top]", "breakeven.c1_lr[gradcov/top]",
                                     "breakeven.c2_lr[gradcov/trace_over_top]",
                                     "breakeven.c2_lr[gradcov/trace]"]
    # Holm within each family (two tests of conjecture 1 and two of conjecture 2 judged)
    assert [(v.family, v.n_family) for v in out] == [("breakeven.c1", 2)] * 2 + [("breakeven.c2", 2)] * 2
    assert all(v.p_adjusted >= v.p_raw and not v.exploratory for v in out)
    d = out[0].to_dict()
    import json
    json.dumps(d)                       # JSON-safe for MLflow
    assert "SUPPORTED" in out[0].summary()


def test_verdict_validation_and_decide():
    with pytest.raises(ValueError):
        Verdict("x", "s", "maybe")
    assert decide(0.01, -0.3, -1) == "supported"
    assert decide(0.01, 0.3, -1) == "refuted"
    assert decide(0.2, -0.3, -1) == "inconclusive"
    assert decide(float("nan"), -0.3, -1) == "inconclusive"


def test_trend_test_properties():
    x = np.repeat([1.0, 2.0, 3.0], 4)
    r = trend_test(x, x * 2 + 0.01 * np.arange(12), n_perm=999, n_boot=200)
    assert r.statistic > 0.9 and r.p_value < 0.01
    # effect is the tested rho; the extreme levels' difference is only described
    assert r.effect == r.statistic and r.details["effect_units"] == pytest.approx(4.08)
    assert r.ci_low <= r.statistic <= r.ci_high and r.ci_level == 0.95
    # deterministic under a fixed seed
    r2 = trend_test(x, x * 2 + 0.01 * np.arange(12), n_perm=999, n_boot=200)
    assert (r.p_value, r.ci_low) == (r2.p_value, r2.ci_low)
    # strata with opposite trends cancel
    strata = np.r_[["a"] * 12, ["b"] * 12]
    r3 = trend_test(np.r_[x, x], np.r_[x, -x], strata, n_perm=999, n_boot=200)
    assert abs(r3.statistic) < 1e-9 and r3.p_value > 0.5
    # a stratum with one level carries no information
    r4 = trend_test(np.ones(5), np.arange(5.0))
    assert np.isnan(r4.p_value) and r4.n == 0


def test_compare_groups():
    a, b = np.r_[1.0, 1.1, 0.9, 1.05, 0.95], np.r_[0.0, 0.1, -0.1, 0.05, -0.05]
    r = compare_groups(a, b, n_perm=999, n_boot=200)
    assert r.statistic == pytest.approx(1.0) and r.p_value < 0.02 and r.ci_low > 0.8
    assert compare_groups(b, a, shift=2.0, alternative="greater", n_perm=999).p_value < 0.02
    assert np.isnan(compare_groups([1.0], b).p_value)


def test_detectors_are_the_probes_rules():
    """One rule in one place: the service's detectors are dynamics_core.probes'."""
    from dynamics_core.probes import saturation_breakeven, stability_breakeven
    flat_start = np.r_[5.0, 4.9, 5.0, 4.95, 5.1, 7.0, 12.0, 18.0, 20.0, 20.5, 20.6, 15.0, 10.0]
    cases = [(STEPS, hump(1.0)), (STEPS, hump(1.0, t_peak=1e4)), (STEPS, hump(2.0, 250.0)),
             (LOG_STEPS[:13], flat_start), (np.arange(6), np.full(6, 3.0))]
    for s, v in cases:
        step, reached = saturation_breakeven(list(s), v)
        got = breakeven.saturation_step(s, v)
        assert (np.isnan(got) and not reached) or got == step
    # flat start on log-spaced probes: the rise saturates at step 34, not at step 0
    assert breakeven.saturation_step(LOG_STEPS[:13], flat_start) == 34
    lam = np.r_[1, 5, 19, 21, 30.0]
    assert breakeven.stability_step(np.arange(5), lam, 0.1) == stability_breakeven(range(5), lam, 0.1) == 3


# ---------------------------------------- conjecture 2 after the break-even
LOG_STEPS = np.array([0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1600])


def conditioning_trials(rng_seed: int = 0, flat: int = 0) -> list[dict]:
    """Tr(K)/λ_K¹ is largest at init (≈ 9, the same for every trial: isotropic
    covariance), falls during the rise of λ_K¹, then peaks again after the
    break-even point at a height that rises with η (the paper's direction).
    `flat` extra trials have a λ_K¹ that never rises: no break-even step."""
    rng = np.random.default_rng(rng_seed)
    out = []
    for lr, bs, seed in itertools.product([0.01, 0.03, 0.1], [32, 128], range(3)):
        a, b = np.log10(lr / 0.01), np.log2(bs / 32)
        top = 1.0 + hump(3.0 * np.exp(-0.8 * a + 0.4 * b), 100.0, LOG_STEPS)
        late = hump(4.0 * np.exp(0.4 * a - 0.2 * b) * np.exp(rng.normal(0, 0.03)), 400.0, LOG_STEPS)
        ratio = 9.0 * np.exp(rng.normal(0, 0.05)) * np.exp(-LOG_STEPS / 8.0) + late
        trace = hump(40.0 * np.exp(-0.5 * a + 0.3 * b) * np.exp(rng.normal(0, 0.03)), 150.0, LOG_STEPS)
        out.append({"params": {"optim.lr": lr, "train.batch_size": bs}, "seed": seed,
                    "curves": {"gradcov/top": (LOG_STEPS, top), "gradcov/trace": (LOG_STEPS, trace),
                               "gradcov/trace_over_top": (LOG_STEPS, ratio)}})
    for s in range(flat):
        out.append({"params": {"optim.lr": 0.1, "train.batch_size": 32}, "seed": 10 + s,
                    "curves": {"gradcov/top": (LOG_STEPS, np.full(LOG_STEPS.size, 2.0)),
                               "gradcov/trace": (LOG_STEPS, hump(40.0, 150.0, LOG_STEPS)),
                               "gradcov/trace_over_top": (LOG_STEPS, 9.0 * np.exp(-LOG_STEPS / 8.0)
                                                          + hump(1.0, 400.0, LOG_STEPS))}})
    return out


def test_c2_max_after_breakeven_not_at_init():
    t = make_table(conditioning_trials(flat=2))
    for f in (breakeven.c2_lr, breakeven.c2_batch):
        v = {x.details["metric"]: x for x in f(t, **FAST)}
        ratio = v["gradcov/trace_over_top"]
        assert ratio.verdict == "supported", ratio.summary()
        assert ratio.details["window"] == "after_breakeven"
        assert ratio.details["detector"] == "saturation"
        assert ratio.details["breakeven_key"] == "gradcov/top"
        assert ratio.details["excluded_no_breakeven"] == 2 and ratio.n == 18
        assert "break-even" in ratio.statement
        # after the break-even the ratio's maxima are the late peaks (≈ 4-6), not the init 9
        assert max(ratio.details["mean_max_by_level"].values()) < 7
    # the whole-run max is the value at init (≈ 9 in every trial): no dependence on η
    plans = experiments.plans_for("breakeven.c2_lr", {"window": "whole_run"})
    whole = {x.details["metric"]: x for x in breakeven.c2_lr(t, plans=plans, **FAST)}
    ratio = whole["gradcov/trace_over_top"]
    assert ratio.verdict in ("inconclusive", "underpowered") and ratio.p_raw > 0.05
    # the two flat trials are alone in their seed blocks: no within-seed comparison
    assert ratio.n == 18 and ratio.details["n_dropped_small_strata"] == 2 and ratio.exploratory
    assert "excluded_no_breakeven" not in ratio.details
    with pytest.raises(ValueError):
        experiments.plans_for("breakeven.c2_lr", {"window": "sometimes"})


def test_c1_window_ends_at_train_accuracy():
    """Registered window: up to the first probe with probe/acc ≥ 0.65; no probe/acc, no window."""
    t = make_table(conditioning_trials(flat=2))
    for v in breakeven.c1_lr(t, **FAST):
        assert v.details["window"] == "until_probe/acc>=0.65"
        assert v.details["excluded_window_not_reached"] == 20 and v.verdict == "underpowered"
    trials = breakeven_trials("paper")
    for tr in trials:       # accuracy 0.65 at step 40, before the peaks at 100: maxima at step 40
        tr["curves"]["probe/acc"] = (STEPS, np.where(STEPS >= 40, 0.7, 0.3))
    m = breakeven.trial_maxima(make_table(trials), "gradcov/top",
                               to_step={f"r{i:03d}": 40 for i in range(len(trials))})
    assert (m["argmax_step"] == 40).all()
    for v in breakeven.c1_lr(make_table(trials), **FAST):
        assert v.verdict == "supported" and v.details["excluded_window_not_reached"] == 0


def test_trial_maxima_window():
    t = make_table(conditioning_trials())
    be = breakeven.saturation_steps(t)
    assert be.notna().all() and (be > 3).all()
    m = breakeven.trial_maxima(t, "gradcov/trace_over_top", from_step=be.to_dict())
    assert (m["argmax_step"] >= be.reindex(m.index)).all()
    assert len(breakeven.trial_maxima(t, "gradcov/trace_over_top", from_step={})) == 0


def test_every_conjecture_on_every_table_never_raises():
    """A conjecture on a sweep that lacks its data says inconclusive, it does not crash."""
    tables = [make_table(breakeven_trials("paper") + diverged_trials(1)),
              make_table(regime_trials("paper", diverged=1)),
              make_table(schedule_trials({3: 0.8})),
              make_table(large_lr_trials("paper", diverged=1))]
    for table in tables:
        out = experiments.evaluate(experiments.conjecture_names(), table,
                                   options={n: FAST for n in experiments.conjecture_names()})
        assert len(out) >= len(experiments.conjecture_names())
        for v in out:
            assert v.reason, v
            if v.verdict == "inconclusive" and v.n == 0:
                assert v.details.get("reason"), v
