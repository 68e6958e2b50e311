"""The early-phase experiment on constructed tables whose answer is known:
each conjecture supported / not supported, the manipulation checks, the
level rows of a table, figures and table, the specs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sweeps.conjectures.verdict import finalize

from sweeps import experiments
from sweeps.experiments import early_phase as ep
from sweeps.spec import load_spec, smoke

from test_conjectures import FAST, make_table      # the shared constructed-table builder

SPECS = Path(__file__).parents[1] / "sweeps" / "specs"
LEVELS, SPAN, DENSE = 7, 1001, 0.80
SEEDS = range(7)


# ------------------------------------------------------------------ builder
def chain_acc(imp_level: int, drop: float) -> float:
    """Dense accuracy up to IMP level 3 (78 % sparsity at rate 0.4), then `drop` per level."""
    return DENSE - drop * max(0, imp_level - 3)


def trial(lr: float, k: int, seed: int, drops: dict[str, float], ablation: str = "none",
          dense: float = DENSE, levels: int = LEVELS, sd: float = 0.002, rng=None,
          status: str = "finished") -> dict:
    """One IMP trial: loop levels as `dynamics_core.imp` logs them; with an ablation the
    unablated and ablated level of each IMP level in a row. drops: condition -> drop/level."""
    rng = rng if rng is not None else np.random.default_rng(seed)
    plan = [(0, False)] + [(L, ab) for L in range(1, levels + 1)
                           for ab in ((False, True) if ablation != "none" else (False,))]
    curves = {"timeline/dist_init": ([0, 1, 10, 100, 1000], [0, 0.1, 1, 3, 4]),
              "timeline/grad_norm": ([0, 1, 10, 100, 1000], [3, 2.5, 1.5, 1, 0.8]),
              "timeline/sign_flips": ([0, 1, 10, 100, 1000], [0, 0.01, 0.05, 0.1, 0.12]),
              "probe/acc": ([0, 1, 10, 100, 1000], [0.1, 0.12, 0.4, 0.7, dense])}
    for l, (L, ab) in enumerate(plan):
        cond = ablation if ab else "none"
        acc = (dense if L == 0 else chain_acc(L, drops.get(cond, 0.0))) + rng.normal(0, sd)
        start, end = l * SPAN + (0 if l == 0 else k), l * SPAN + SPAN - 1
        curves[f"level/{l}/imp/sparsity"] = ([start], [1 - 0.6 ** L])     # rate 0.4
        curves[f"level/{l}/imp/level"] = ([start], [L])
        curves[f"level/{l}/imp/ablated"] = ([start], [float(ab)])
        curves[f"level/{l}/final/val_acc"] = ([end], [acc])
    params = {ep.LR: lr, ep.K: k, ep.ABLATION: ablation}
    return {"params": params, "seed": seed, "status": status, "curves": curves}


def sweep(*, k0_drop: float = 0.05, k_drop: float = 0.0, low_k0_drop: float = 0.0,
          ablation_drops: dict[str, float] | None = None, dense: float = DENSE,
          levels: int = LEVELS, seeds=SEEDS) -> list[dict]:
    """High-η arm (0.1): k = 0 loses k0_drop per level past 50 % sparsity, k = 20, 200
    lose k_drop. Low-η arm (0.01): k = 0 loses low_k0_drop. Ablations at (0.1, 200)."""
    drops = {"random_magnitudes_kept_signs": 0.03, "kept_magnitudes_random_signs": 0.03,
             "shuffle_layer": 0.05, "shuffle_network": 0.05, "reinit": 0.05,
             **(ablation_drops or {})}
    rng = np.random.default_rng(0)
    out = []
    for s in seeds:
        for lr, first in ((0.1, k0_drop), (0.01, low_k0_drop)):
            for k in (0, 20, 200):
                out.append(trial(lr, k, s, {"none": first if k == 0 else k_drop}, dense=dense,
                                 levels=levels, rng=rng))
        for name, d in drops.items():
            out.append(trial(0.1, 200, s, {"none": k_drop, name: d}, name, dense=dense,
                             levels=levels, rng=rng))
    return out


def table(**kw):
    return make_table(sweep(**kw))


def by_arm(verdicts):
    return {v.name.split("[")[1].rstrip("]"): v for v in verdicts}


# -------------------------------------------------------------------- rows
def test_level_frame_rows():
    trials = sweep(seeds=range(1))
    trials.append(trial(0.1, 0, 9, {}, status="diverged"))
    df, excluded = ep.level_frame(make_table(trials))
    assert excluded["excluded_diverged"] == 1
    plain = df[(df["lr"] == 0.1) & (df["k"] == 0) & (df["ablation"] == "none")]
    assert list(plain["level"]) == list(range(LEVELS + 1)) == list(plain["imp_level"])
    assert plain["sparsity"].to_numpy() == pytest.approx([1 - 0.6 ** L for L in range(LEVELS + 1)])
    reinit = df[df["ablation"] == "reinit"]
    assert len(reinit) == 1 + 2 * LEVELS
    assert list(reinit["condition"][:4]) == ["none", "none", "reinit", "none"]
    assert list(reinit["imp_level"][:5]) == [0, 1, 1, 2, 2]
    high = ep.high_sparsity_acc(plain)
    assert high["acc"].iloc[0] == pytest.approx(np.mean([chain_acc(L, 0.05) for L in (3, 4, 5, 6, 7)]),
                                                abs=0.01)


# ------------------------------------------------------------ conjectures
def test_rewind_beats_init_at_high_lr_only():
    vs = by_arm(finalize(ep.rewind_beats_init(table(), **FAST), ep.PLANS.values()))   # Holm over the arms
    assert set(vs) == {"lr=0.1,k=200", "lr=0.01,k=200"}
    high, low = vs["lr=0.1,k=200"], vs["lr=0.01,k=200"]
    assert high.verdict == "supported" and high.effect == pytest.approx(0.10, abs=0.01)
    assert high.n == 14 and high.family == "early_phase.rewind_beats_init" and high.n_family == 2
    assert high.details["mean_by_k"][0] < high.details["mean_by_k"][20]
    assert low.verdict in ("inconclusive", "underpowered") and abs(low.effect) < 0.01
    assert high.plan_hash == ep.PLANS["early_phase.rewind_beats_init"].hash()


def test_rewind_worse_than_init_is_refuted():
    vs = by_arm(ep.rewind_beats_init(table(k0_drop=0.0, k_drop=0.05), **FAST))
    assert vs["lr=0.1,k=200"].verdict == "refuted"


def test_rewind_beats_init_takes_k():
    v = by_arm(ep.rewind_beats_init(table(), k=20, **FAST))["lr=0.1,k=20"]
    assert v.verdict == "supported"


def test_dense_that_does_not_learn_is_an_invalid_protocol():
    for f in (ep.rewind_beats_init, ep.signs_and_magnitudes_needed, ep.shuffling_fails):
        v = f(table(dense=0.3), **FAST)[0]
        assert v.verdict == "invalid_protocol" and "dense_learns" in v.reason


def test_too_few_levels_is_an_invalid_protocol():
    v = ep.rewind_beats_init(table(levels=2), **FAST)[0]
    assert v.verdict == "invalid_protocol" and "high_sparsity_reached" in v.reason


def test_signs_and_magnitudes_needed_supported():
    (v,) = ep.signs_and_magnitudes_needed(table(), **FAST)
    assert v.verdict == "supported" and v.name.endswith("[lr=0.1,k=200]")
    assert v.effect == pytest.approx(0.06, abs=0.01)            # 0.03 × (0 + 1 + 2 + 3 + 4) / 5 levels
    assert [p["predicted_sign"] for p in v.details["parts"]] == [-1, -1]


def test_one_harmless_ablation_is_not_support():
    (v,) = ep.signs_and_magnitudes_needed(
        table(ablation_drops={"kept_magnitudes_random_signs": 0.0}), **FAST)
    assert v.verdict in ("inconclusive", "underpowered")


def test_shuffling_fails_supported_and_refuted():
    (v,) = ep.shuffling_fails(table(), **FAST)
    assert v.verdict == "supported"
    (v,) = ep.shuffling_fails(table(ablation_drops={"shuffle_layer": -0.03}), **FAST)
    assert v.verdict == "refuted"


def test_without_trials_the_verdict_says_why():
    trials = [t for t in sweep(seeds=range(2)) if t["params"][ep.ABLATION] == "none"]
    (v,) = ep.shuffling_fails(make_table(trials), **FAST)
    assert v.verdict != "supported" and "no finished trials" in v.reason


# ---------------------------------------------------- tables and figures
def test_level_table_and_figures():
    t = table(seeds=range(2))
    rows = ep.level_table(t)
    assert {"sparsity", "acc", "level", "run_id"} <= set(rows.columns)
    assert len(rows) == 2 * (6 * (LEVELS + 1) + 5 * (1 + 2 * LEVELS))
    for name, fig in experiments.get("early_phase").figures.items():
        assert fig(t, None) is not None, name


# ====================================================== v2: constructed chains
T2, DENSE2 = 1200, 0.94
V2_SEEDS = range(200, 210)
PROBES = [0, 1, 2, 3, 5, 7, 10, 14, 20, 28, 40, 56, 80, 113, 160, 320, 640, 1200]


def chain(lr: float, k: int, seed: int, gap: float, *, ablation: str = "none",
          ablation_drop: float = 0.0, levels: int = 3, gain: float = 0.001,
          flips: str = "early", rng=None) -> dict:
    """One v2 IMP chain at rate 0.55: level 0 dense (accuracy DENSE2, its epoch-end val/acc
    gaining `gain` over the last quarter), IMP level 1 (55 %) at the dense accuracy, levels
    2 and 3 (79.75 %, 90.9 % sparsity) `gap` below or above it; with an ablation each IMP level twice,
    the ablated one `ablation_drop` lower. The dense level's timeline: distance rising,
    gradient norm falling, sign flips mostly before step 20 (`flips` "early") or linear."""
    rng = rng if rng is not None else np.random.default_rng(seed)
    noise = lambda: rng.normal(0, 0.002)                         # noqa: E731
    plan = [(0, False)] + [(L, ab) for L in range(1, levels + 1)
                           for ab in ((False, True) if ablation != "none" else (False,))]
    epochs = np.arange(40, T2 + 1, 40)
    rise = DENSE2 - 0.4 * np.exp(-epochs / 150.0)
    rise = rise - gain * np.clip((T2 - epochs) / (T2 / 4), 0, 1)
    dense = float(rise[-1]) + noise()
    st = np.array(PROBES, dtype=float)
    shape = (1 - np.exp(-st / 8.0)) if flips == "early" else st / T2
    curves = {"val/acc": (epochs, rise),
              "timeline/dist_init": (st, np.log1p(st) + rng.normal(0, 0.01, len(st))),
              "timeline/grad_norm": (st, 3.0 / (1 + st / 10.0) + rng.normal(0, 0.01, len(st))),
              "timeline/sign_flips": (st, 0.3 * shape + 0.02 * st / T2),
              "probe/acc": (st, 0.1 + 0.8 * st / T2)}
    for l, (L, ab) in enumerate(plan):
        acc = dense if L == 0 else (dense + (gap if L >= 2 else 0.0) + noise()
                                    - (ablation_drop if ab else 0.0))
        start, end = l * (T2 + 1) + (0 if l == 0 else k), l * (T2 + 1) + T2
        curves[f"level/{l}/imp/sparsity"] = ([start], [1 - 0.45 ** L])
        curves[f"level/{l}/imp/level"] = ([start], [L])
        curves[f"level/{l}/imp/ablated"] = ([start], [float(ab)])
        curves[f"level/{l}/final/val_acc"] = ([end], [acc])
    return {"params": {ep.LR: lr, ep.K: k, ep.ABLATION: ablation}, "seed": seed,
            "curves": curves}


def sweep_v2(*, gaps: dict[int, float] | None = None, low_gaps: dict[int, float] | None = None,
             drops: dict[str, float] | None = None, seeds=V2_SEEDS, **kw) -> list[dict]:
    """η 0.2: k = 0 ends 0.05 below dense, k = 5 0.03 below, k >= 10 matches (k* = 10);
    η 0.05: every k matches. The four ablations at (0.2, 40) lose 0.05."""
    gaps = {0: -0.05, 5: -0.03, 10: 0.0, 20: 0.0, 40: 0.0, **(gaps or {})}
    low = {k: 0.0 for k in gaps} | (low_gaps or {})
    drops = {a: 0.05 for a in ep.ABLATIONS_V2[1:]} | (drops or {})
    rng = np.random.default_rng(1)
    out = []
    for s in seeds:
        for lr, arm in ((0.2, gaps), (0.05, low)):
            out += [chain(lr, k, s, g, rng=rng, **kw) for k, g in arm.items()]
        out += [chain(0.2, ep.ABLATION_K, s, gaps[ep.ABLATION_K], ablation=a, ablation_drop=d,
                      rng=rng, **kw) for a, d in drops.items()]
    return out


def table_v2(**kw):
    return make_table(sweep_v2(**kw))


def one(f, t, **kw):
    return {v.name.split("[")[1].rstrip("]"): v for v in f(t, **FAST, **kw)}


def test_dense_gap_is_target_minus_dense_of_the_same_trial():
    t = table_v2(seeds=range(200, 202))
    df, _ = ep.level_frame(t)
    gaps = ep.dense_gap(df, ep.TARGET)
    assert len(gaps) == 2 * 2 * 5 and (gaps["level"] == 3).all()
    assert gaps["sparsity"].to_numpy() == pytest.approx(1 - 0.45 ** 3)
    row = gaps[(gaps["lr"] == 0.2) & (gaps["k"] == 0)].iloc[0]
    levels = df[df["run_id"] == row["run_id"]].set_index("level")["acc"]
    assert row["d"] == pytest.approx(levels[3] - levels[0]) and row["d"] < -0.04


def test_k_star_is_the_end_of_the_fixed_sequence():
    df, _ = ep.level_frame(table_v2())
    gaps = ep.dense_gap(df, ep.TARGET)
    ks = ep.k_star(gaps[gaps["lr"] == 0.2], ep.MARGIN, 0.05)
    assert (ks.k, ks.censored) == (10, False)
    assert ks.result.p_value == max(ks.by_k[k].p_value for k in (10, 20, 40))
    assert ks.by_k[5].statistic < 0 and ks.by_k[0].statistic < 0      # beyond the margin
    # a k that matches below a gap in the sequence does not count: the sequence stops at 20
    df, _ = ep.level_frame(table_v2(gaps={20: -0.04, 5: 0.0}))
    gaps = ep.dense_gap(df, ep.TARGET)
    assert ep.k_star(gaps[gaps["lr"] == 0.2], ep.MARGIN, 0.05).k == 40
    ci = ep.k_star_ci(gaps[gaps["lr"] == 0.2], ep.MARGIN, 0.05, n_boot=50)
    assert ci["ci_k_star"][1] in (40, "> 40")


def test_rewound_matches_dense_and_k_star_positive():
    t = table_v2()
    vs = one(ep.rewound_matches_dense, t)
    assert set(vs) == {f"lr={lr},sparsity={s}" for lr in (0.2, 0.05) for s in ("0.55", "0.80", "0.91")}
    high = vs["lr=0.2,sparsity=0.91"]
    assert high.verdict == "supported" and high.details["k_star"] == 10
    assert high.details["imp_level"] == 3 and abs(high.effect) < ep.MARGIN
    assert vs["lr=0.2,sparsity=0.55"].details["k_star"] == 0     # level 1 matches at every k
    low = vs["lr=0.05,sparsity=0.91"]
    assert low.details["k_star"] == 0 and low.verdict == "supported"
    vs = one(ep.k_star_positive, t)
    assert set(vs) == {"lr=0.2,sparsity=0.55", "lr=0.2,sparsity=0.80", "lr=0.2,sparsity=0.91"}
    assert vs["lr=0.2,sparsity=0.91"].verdict == "supported"
    assert vs["lr=0.2,sparsity=0.55"].verdict == "refuted"        # k = 0 matches there
    assert [p["predicted_sign"] for p in vs["lr=0.2,sparsity=0.91"].details["parts"]] == [1, -1]


def test_k_star_zero_refutes_k_star_positive():
    v = one(ep.k_star_positive, table_v2(gaps={0: 0.0, 5: 0.0}))["lr=0.2,sparsity=0.91"]
    assert v.details["k_star"] == 0 and v.verdict == "refuted"


def test_never_matching_is_censored_not_dropped():
    t = table_v2(gaps={k: -0.05 for k in (0, 5, 10, 20, 40)})
    v = one(ep.rewound_matches_dense, t)["lr=0.2,sparsity=0.91"]
    assert v.details["censored"] and v.details["k_star"] == 40 and v.verdict == "refuted"
    v = one(ep.k_star_positive, t)["lr=0.2,sparsity=0.91"]
    assert v.details["censored"] and v.verdict != "supported"


def test_dense_that_has_not_plateaued_is_an_invalid_protocol():
    t = table_v2(gain=0.02, seeds=range(200, 204))
    for f in (ep.rewound_matches_dense, ep.k_star_positive, ep.shuffling_at_k_star,
              ep.dist_init_rises, ep.sign_flips_before_k_star):
        v = f(t, **FAST)[0]
        assert v.verdict == "invalid_protocol" and "dense_plateaus" in v.reason, f
    gains = ep.plateau_gains(t, t.runs["run_id"][:1], 0.75)
    assert gains.iloc[0] == pytest.approx(0.02, abs=0.002)


def test_short_chains_are_an_invalid_protocol():
    t = table_v2(levels=2, seeds=range(200, 204))
    v = ep.rewound_matches_dense(t, **FAST)
    assert all(x.verdict != "supported" for x in v)
    v = ep.dist_init_rises(t, **FAST)[0]
    assert v.verdict == "invalid_protocol" and "target_reached" in v.reason


def test_ablations_at_k_star():
    t = table_v2()
    (v,) = ep.signs_and_magnitudes_at_k_star(t, **FAST)
    assert v.verdict == "supported" and v.name.endswith(f"[lr=0.2,k={ep.ABLATION_K}]")
    assert v.effect == pytest.approx(0.05, abs=0.01) and v.details["imp_level"] == 2
    (v,) = ep.shuffling_at_k_star(table_v2(drops={"shuffle_layer": 0.0}), **FAST)
    assert v.verdict in ("inconclusive", "underpowered")


def test_timeline_claims():
    t = table_v2()
    for f, sign in ((ep.dist_init_rises, 1), (ep.grad_norm_falls, -1)):
        (v,) = f(t, **FAST)
        assert v.verdict == "supported" and np.sign(v.effect) == sign and v.n == 10
    (v,) = ep.sign_flips_before_k_star(t, **FAST)
    assert v.verdict == "supported" and v.details["k_star"] == 10
    assert v.effect == pytest.approx(0.3 * (1 - np.exp(-10 / 8.0)) / 0.32 - 10 / T2, abs=0.02)
    (v,) = ep.sign_flips_before_k_star(table_v2(flips="linear"), **FAST)
    assert v.verdict != "supported"


def test_v2_figures_and_table():
    t = table_v2(seeds=range(200, 203))
    assert ep.fig_match(t, None) is not None and ep.fig_timeline_k_star(t, None) is not None
    rows = ep.gap_table(t)
    assert {"seed", "lr", "k", "imp_level", "dense", "acc", "d"} <= set(rows.columns)
    assert len(rows) == 3 * 2 * 5 * 3


# -------------------------------------------------------- registry, specs
def test_registered():
    e = experiments.get("early_phase")
    assert set(e.conjectures) == set(ep.V1_CONJECTURES) | set(ep.V2_CONJECTURES)
    assert set(ep.V1_CONJECTURES) == {"early_phase.rewind_beats_init",
                                      "early_phase.signs_and_magnitudes_needed",
                                      "early_phase.shuffling_fails"}
    assert {ep.PLANS[c].family for c in ep.V1_CONJECTURES} == set(ep.V1_CONJECTURES)
    assert {ep.PLANS[c].family for c in ep.V2_CONJECTURES} == {
        "early_phase.v2_match", "early_phase.v2_k_star", "early_phase.v2_signs",
        "early_phase.v2_shuffles", "early_phase.timeline"}
    for c in ep.V2_CONJECTURES:          # every v2 plan carries the plateau and target checks
        assert {k.name for k in ep.PLANS[c].checks} == {"dense_plateaus", "target_reached"}
    match = ep.PLANS["early_phase.rewound_matches_dense"]
    assert match.statistic == "equivalence" and match.effect_of_interest == ep.MARGIN


V1_SPECS = ("early_phase.yaml", "early_phase-cluster.yaml")
V2_SPECS = ("early_phase_v2_pilot.yaml", "early_phase_v2.yaml")


def test_specs_are_registered():
    assert set(experiments.get("early_phase").specs) == set(V1_SPECS) | set(V2_SPECS)


@pytest.mark.parametrize("name", V1_SPECS)
def test_v1_specs_validate(name):
    spec = load_spec(SPECS / name)
    assert set(spec.conjectures) == set(ep.V1_CONJECTURES)
    assert smoke(spec).trials()
    trials = spec.trials()
    ks = {t.pruning.rewind_step for t in trials}
    assert 0 in ks and len(ks) >= 3 and len({t.optim.lr for t in trials}) >= 2
    assert {t.pruning.ablation for t in trials} == set(ep.ABLATIONS_RUN)
    assert all(t.pruning.levels >= 5 for t in trials) and len(spec.seeds) >= 3


@pytest.mark.parametrize("name", V2_SPECS)
def test_v2_specs_validate(name):
    """The issue's design: IMP chains reaching >= 90 % sparsity (ablation trials the focus
    level), k = 0 and a geometric grid up to about 3 % of training, the judged ablations at
    the plan's k and the largest η, >= 4 seeds (pilot) / >= 8 (confirmatory), probes at
    every k of the grid."""
    spec = load_spec(SPECS / name)
    assert set(spec.conjectures) == set(ep.V2_CONJECTURES)
    assert smoke(spec).trials()
    imp = [t for t in spec.trials() if t.pruning.levels > 0]
    plain = [t for t in imp if t.pruning.ablation == "none"]
    ablated = [t for t in imp if t.pruning.ablation != "none"]
    reach = lambda t: 1 - (1 - t.pruning.rate) ** t.pruning.levels     # noqa: E731
    assert all(reach(t) >= ep.TARGET for t in plain) and all(reach(t) >= ep.FOCUS for t in ablated)
    steps = {t.train.epochs * 40 for t in imp}               # MNIST-1D: 4000 / batch 100
    assert len(steps) == 1 and {t.train.batch_size for t in imp} == {100}
    ks = sorted({t.pruning.rewind_step for t in plain})
    assert ks[0] == 0 and all(b == 2 * a for a, b in zip(ks[1:], ks[2:]))      # geometric
    assert len(ks) >= 4 and 0.025 <= ks[-1] / steps.pop() <= 0.035
    assert {t.pruning.ablation for t in imp} == set(ep.ABLATIONS_V2)
    assert {(t.optim.lr, t.pruning.rewind_step) for t in ablated} == {
        (max(t.optim.lr for t in plain), ep.ABLATION_K)}
    probe_steps = set(imp[0].probes.schedule.steps)
    assert set(ks) <= probe_steps and ep.EARLY_END in probe_steps
    assert len(spec.seeds) >= (8 if name == "early_phase_v2.yaml" else 4)


def test_v2_pilot_and_confirmatory_seeds_are_disjoint():
    pilot, main = (load_spec(SPECS / n) for n in V2_SPECS)
    assert not set(pilot.seeds) & set(main.seeds)
    assert pilot.base == main.base                           # the same design, other seeds
    arms = {(v["optim.lr"], v["pruning.rewind_step"], v.get("pruning.ablation"))
            for v in pilot.variants if "pruning.rewind_step" in v}
    assert all((v["optim.lr"], v["pruning.rewind_step"], v.get("pruning.ablation")) in arms
               for v in main.variants)


# ------------------------------------------- end to end: kill and resume (slow)
@pytest.mark.slow
def test_imp_sweep_killed_and_resumed_matches_the_uninterrupted_one(tmp_path):
    """A real sweep of IMP trials (one plain, one ablated), its driver killed once
    checkpoints exist, resumed: every level's metrics once and equal to the
    uninterrupted sweep, the masks of every level stored as artifacts."""
    import os
    import signal
    import subprocess

    import yaml

    from sweeps import tracking
    from sweeps.tracking import Store
    from test_sweeps import DYNSWEEP, TINY_BASE, _env, assert_no_step_logged_twice, \
        checkpoints, cli, histories, uri, wait_for

    base = {**TINY_BASE, "train": {"epochs": 4, "batch_size": 50},
            "probes": {"hessian": False, "gradcov": False, "stiffness": False, "timeline": True,
                       "probe_size": 32, "val_probe_size": 16, "schedule": {"kind": "log", "points": 5}},
            "pruning": {"levels": 3, "rewind_step": 3}}
    spec = {"name": "imp", "base": base, "seeds": [0],
            "variants": [{"pruning.ablation": "none"}, {"pruning.ablation": "shuffle_layer"}],
            "fault_tolerance": {"max_failures": 2, "checkpoint_every_epochs": 1}}
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    for d in (ref, cut):
        d.mkdir()
        (d / "imp.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    done = cli(["run", str(ref / "imp.yaml"), "--storage", str(ref / "ray"),
                "--tracking-uri", uri(ref)], ref)
    assert done.returncode == 0, done.stderr[-3000:]

    proc = subprocess.Popen(DYNSWEEP + ["run", str(cut / "imp.yaml"), "--storage", str(cut / "ray"),
                                        "--tracking-uri", uri(cut)], cwd=cut, env=_env(cut),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_for(lambda: len(checkpoints(cut / "ray" / "imp")) >= 3, 240, "three checkpoints")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    res = cli(["resume", "imp", "--storage", str(cut / "ray")], cut)
    assert res.returncode == 0, res.stderr[-3000:]
    tracker = Store(uri(cut))
    runs = tracking.trial_runs(tracker, "imp")
    assert len(runs) == 2 and {r.status for r in runs} == {"finished"}
    assert_no_step_logged_twice(tracker, "imp")
    assert histories(tracker, "imp") == histories(Store(uri(ref)), "imp")
    for run in runs:
        levels = 4 if run.params.get("pruning.ablation") == "none" else 7
        stored = {a.path.rsplit("/", 1)[-1] for a in tracker.client.list_artifacts(run.run_id, "probes/masks")}
        assert stored == {"layout", *(f"level_{L}" for L in range(levels))}
