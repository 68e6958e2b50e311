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


# -------------------------------------------------------- registry, specs
def test_registered():
    e = experiments.get("early_phase")
    assert set(e.conjectures) == {"early_phase.rewind_beats_init",
                                  "early_phase.signs_and_magnitudes_needed",
                                  "early_phase.shuffling_fails"}
    assert {p.family for p in ep.PLANS.values()} == set(e.conjectures)


@pytest.mark.parametrize("name", experiments.get("early_phase").specs)
def test_specs_validate(name):
    spec = load_spec(SPECS / name)
    assert set(spec.conjectures) <= set(experiments.get("early_phase").conjectures)
    assert smoke(spec).trials()
    trials = spec.trials()
    ks = {t.pruning.rewind_step for t in trials}
    assert 0 in ks and len(ks) >= 3 and len({t.optim.lr for t in trials}) >= 2
    assert {t.pruning.ablation for t in trials} == set(ep.ABLATIONS_RUN)
    assert all(t.pruning.levels >= 5 for t in trials) and len(spec.seeds) >= 3


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
