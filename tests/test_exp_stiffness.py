"""Stiffness experiment on constructed tables whose answer is known: within-class
stiffness that rises to the onset of overfitting and then decays to 0 ->
supported, the reverse -> refuted, metrics absent -> underpowered with the
reason; ξ at the registered level only; the stopper against its baselines
read off the same series; the stopper rule on synthetic series; the specs
(pilot and confirmatory run on disjoint seeds, the stopper's rule the plan's)
and, slow, a `--smoke` run of the confirmatory spec end to end."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from sweeps import experiments
from sweeps.experiments import stiffness as S
from sweeps.experiments.stiffness.plans import (ES_PATIENCE, FIXED_EPOCH, STOPPER_RULE, TT_SIGN_WITHIN,
                                                XI_LEVEL, XI_LEVEL_FIELD)
from sweeps.spec import load_spec
from test_conjectures import make_table      # the shared constructed-table builder

FAST = dict(n_perm=999, n_boot=300)
EPOCHS, PER_EPOCH = 40, 10
STEPS = np.arange(1, EPOCHS + 1) * PER_EPOCH     # epoch-end steps
SPECS = Path(__file__).resolve().parents[1] / "sweeps" / "specs"
TV_COS_WITHIN = STOPPER_RULE["metric"]


def trial(lr: float, seed: int, mode: str = "paper", onset: int = 10, rng=None,
          xi: float | None = None, drop_keys: tuple[str, ...] = (), level: float = XI_LEVEL) -> dict:
    """One trial: U-shaped val loss with its minimum at epoch `onset`.
    Within-class sign stiffness (train–val and train–train) rises from 0.3
    to 0.8 up to the onset, then decays toward 0 (paper), or falls to the
    onset and stays at 0.8 after (reversed); between-class train–train 0.35
    below it (paper) or above; within-class train–val cosine 0.6 up to the onset and 0 after
    (the stopper's metric drops at the onset); all-pairs train–val −0.3."""
    rng = rng or np.random.default_rng(seed)
    ep = np.arange(1, EPOCHS + 1, dtype=float)
    noise = lambda s=0.01: rng.normal(0, s, EPOCHS)      # noqa: E731
    val_loss = 1.0 + 0.01 * (ep - onset) ** 2 / onset
    val_acc = 0.8 - 0.002 * np.abs(ep - onset)
    after = np.clip(ep - onset, 0, None)
    up = 0.3 + 0.5 * np.clip((ep - 1) / (onset - 1), 0, 1)
    if mode == "paper":
        stiff = np.where(ep <= onset, up, 0.8 * np.exp(-after / 3.0))
    else:
        stiff = np.where(ep <= onset, 1.1 - up, 0.8)
    gap = -0.35 if mode == "paper" else 0.35     # between-class = within-class + gap
    curves = {"train/epoch": (STEPS, ep), "val/loss": (STEPS, val_loss), "val/acc": (STEPS, val_acc),
              "train/loss": (STEPS, 1.0 / ep), S.TV_SIGN: (STEPS, -0.3 + noise()),
              S.TV_SIGN_WITHIN: (STEPS, stiff + noise()), TT_SIGN_WITHIN: (STEPS, stiff + noise()),
              TV_COS_WITHIN: (STEPS, np.where(ep <= onset, 0.6, 0.0)),
              S.between_key("train_train"): (STEPS, stiff + gap + noise())}
    if xi is not None:
        curves[S.XI] = (STEPS, np.full(EPOCHS, xi))
    for k in drop_keys:
        curves.pop(k)
    return {"params": {"optim.lr": lr, XI_LEVEL_FIELD: level}, "seed": seed, "curves": curves}


def sweep(mode: str = "paper", seeds=range(4), **kw) -> list[dict]:
    """12 trials (the plans' minimum), onsets at epochs 8–17."""
    rng = np.random.default_rng(0)
    return [trial(lr, s, mode, onset=8 + 2 * s + int(lr * 10), rng=rng, **kw)
            for lr, s in itertools.product([0.03, 0.1, 0.3], seeds)]


def verdict_of(name, table, **kw):
    (v,) = experiments.get_conjecture(name)(table, **FAST, **kw)
    return v


def run(name, table):
    return experiments.get_conjecture(name)(table, **FAST)


# ------------------------------------------------------------ conjectures
@pytest.mark.parametrize("mode,expected", [("paper", "supported"), ("reversed", "refuted")])
def test_rises_during_training(mode, expected):
    (v,) = run("stiffness.rises_during_training", make_table(sweep(mode)))
    assert v.name == f"stiffness.rises_during_training[{TT_SIGN_WITHIN}]"
    assert v.verdict == expected and v.n == 12 and v.details["excluded_no_onset"] == 0
    if mode == "paper":
        assert v.details["mean_early"] < 0.4 < 0.7 < v.details["mean_late"]


@pytest.mark.parametrize("mode,expected", [("paper", "supported"), ("reversed", "refuted")])
def test_near_zero_after_onset(mode, expected):
    vs = run("stiffness.near_zero_after_onset", make_table(sweep(mode)))
    assert [v.name for v in vs] == [f"stiffness.near_zero_after_onset[{k}]"
                                    for k in (S.TV_SIGN_WITHIN, TT_SIGN_WITHIN)]
    for v in vs:
        assert v.verdict == expected and v.n == 12, v.summary()
        assert v.details["band"] == 0.1 and v.details["lag"] == 10
    if mode == "paper":     # 0.8 e^(-10/3) ≈ 0.03 from 10 epochs after the onset
        assert vs[0].details["mean_abs_after"] < 0.06 and vs[0].details["mean_before"] > 0.7


def test_near_zero_counts_trials_without_onset_or_lag():
    trials = sweep("paper")
    late = trial(0.1, 9, onset=EPOCHS)                  # val loss still falling at the end
    short = trial(0.1, 8, onset=EPOCHS - 8)             # onset seen, but the run ends before lag 10
    div = trial(0.3, 9, mode="reversed")
    div["status"] = "diverged"
    v, _ = run("stiffness.near_zero_after_onset", make_table(trials + [late, short, div]))
    assert v.verdict == "supported" and v.n == 12
    assert v.details["excluded_no_onset"] == 1 and v.details["excluded_short"] == 1
    assert v.details["excluded_diverged"] == 1


def test_missing_metric_is_underpowered_with_reason():
    t = make_table(sweep(drop_keys=(S.TV_SIGN_WITHIN,)))
    missing, tt = run("stiffness.near_zero_after_onset", t)
    assert missing.verdict == "underpowered" and S.TV_SIGN_WITHIN in missing.reason and missing.n == 0
    assert tt.verdict == "supported"


def test_too_few_trials_is_underpowered():
    (v,) = run("stiffness.rises_during_training", make_table(sweep("paper", seeds=[0, 1])))
    assert v.verdict == "underpowered" and "n=6 < min 12" in v.reason


def test_plans_registered_and_verdicts_under_them():
    exp = experiments.get("stiffness")
    assert set(exp.plans) == set(S.PLANS) and len(S.PLANS) == 11
    assert {p.conjecture for p in S.PLANS.values()} == set(exp.conjectures)
    families = {p.family for p in S.PLANS.values()}
    assert families == {"stiffness", "stiffness_stopper"}
    rng = np.random.default_rng(1)
    trials = [trial(lr, s, onset=8 + 2 * s + int(lr * 10), rng=rng,
                    xi=0.5 - 0.1 * np.log10(lr) + rng.normal(0, 0.005))
              for lr, s in itertools.product([0.03, 0.1, 0.3], range(4))]
    names = list(exp.conjectures)
    vs = experiments.evaluate(names, make_table(trials), {n: FAST for n in names})
    got = {v.name: v for v in vs}
    assert set(got) == set(S.PLANS)
    assert all(v.plan_hash == S.PLANS[v.name].hash() for v in vs)
    # Holm over every registered test of a family: the 2 pair sets not logged count as p = 1
    assert {v.n_family for v in vs if v.family == "stiffness"} == {7}
    assert {v.n_family for v in vs if v.family == "stiffness_stopper"} == {4}
    for k in (f"stiffness.rises_during_training[{TT_SIGN_WITHIN}]",
              f"stiffness.near_zero_after_onset[{S.TV_SIGN_WITHIN}]",
              "stiffness.within_exceeds_between[train_train]", "stiffness.xi_vs_lr",
              "stiffness.stopper_vs_baselines[fixed_epoch/error]"):
        assert got[k].verdict == "supported" and got[k].p_adjusted > got[k].p_raw, got[k].summary()
    assert got["stiffness.within_exceeds_between[val_val]"].verdict == "underpowered"


@pytest.mark.parametrize("mode,expected", [("paper", "supported"), ("reversed", "refuted")])
def test_within_exceeds_between(mode, expected):
    vs = experiments.get_conjecture("stiffness.within_exceeds_between")(make_table(sweep(mode)), **FAST)
    # one verdict per planned pair set; the table logs only train–train
    assert [v.name for v in vs] == [f"stiffness.within_exceeds_between[{p}]" for p in S.PAIRS]
    assert vs[0].verdict == expected and vs[0].n == 12
    assert [v.verdict for v in vs[1:]] == ["underpowered"] * 2
    assert all("were not logged" in v.details["reason"] for v in vs[1:])


def test_within_between_missing_is_underpowered_with_reason():
    drop = (S.within_key("train_train"), S.between_key("train_train"))
    vs = experiments.get_conjecture("stiffness.within_exceeds_between")(
        make_table(sweep(drop_keys=drop)), **FAST)
    assert all(v.verdict == "underpowered" and "sign_within" in v.details["reason"] for v in vs)


@pytest.mark.parametrize("sign,direction", [(-1, "decreases"), (+1, "increases")])
def test_xi_vs_lr_reports_the_direction(sign, direction):
    rng = np.random.default_rng(1)
    trials = [trial(lr, s, xi=0.5 + sign * 0.1 * np.log10(lr) + rng.normal(0, 0.005))
              for lr, s in itertools.product([0.03, 0.1, 0.3], range(4))]
    v = verdict_of("stiffness.xi_vs_lr", make_table(trials))
    assert v.verdict == "supported" and v.details["direction"] == f"ξ {direction} with η"
    # the tested effect is |rho| (direction reported, not predicted); the signed rho is kept
    signed = v.details["signed_statistic"]
    assert v.statistic == pytest.approx(abs(signed)) and abs(signed) > 0.9   # tied η: max 0.949
    assert np.sign(signed) == sign and v.ci_low >= 0
    assert v.p_raw < 0.01 and v.details["xi_level"] == XI_LEVEL


def test_xi_vs_lr_noise_is_never_refuted():
    # 12 trials cannot detect |rho| 0.5 with 80 % power: underpowered, not inconclusive
    rng = np.random.default_rng(2)
    trials = [trial(lr, s, xi=rng.normal(0.5, 0.1))
              for lr, s in itertools.product([0.03, 0.1, 0.3], range(4))]
    v = verdict_of("stiffness.xi_vs_lr", make_table(trials))
    assert v.verdict == "underpowered" and v.details["direction"] == "none found"


def test_xi_vs_lr_missing_metric_is_underpowered_with_reason():
    v = verdict_of("stiffness.xi_vs_lr", make_table(sweep()))
    assert v.verdict == "underpowered" and S.XI in v.details["reason"] and v.n == 0


def test_xi_logged_at_another_level_is_refused():
    # ξ at the probe's default level 0 is not the registered ξ: no test, the reason says so
    trials = [trial(lr, s, xi=0.5 - 0.1 * np.log10(lr), level=0.0)
              for lr, s in itertools.product([0.03, 0.1, 0.3], range(4))]
    v = verdict_of("stiffness.xi_vs_lr", make_table(trials))
    assert v.verdict == "underpowered" and v.n == 0 and XI_LEVEL_FIELD in v.details["reason"]


# ---------------------------------------------------------------- stopper
@pytest.mark.parametrize("series,expected", [
    ([0.3, 0.3, 0.2, 0.04, 0.03, 0.02, 0.01], 5),         # armed, then 3 low in a row
    ([0.0, 0.0, 0.0, 0.3, 0.01, 0.01, 0.01], 6),          # low values before arming do not count
    ([0.3, 0.01, 0.01, 0.2, 0.01, 0.01, 0.01], 6),        # a high value restarts the count
    ([0.3, 0.01, np.nan, 0.01, 0.01, 0.01], 5),           # NaN breaks a run of low values
    ([0.01, 0.02, 0.03, 0.01], None),                     # never above: never armed
    ([0.3, 0.2, 0.01, 0.01], None),                       # not patient enough yet
])
def test_stiffness_stop_epoch(series, expected):
    assert S.stiffness_stop_epoch(series, threshold=0.05, patience=3) == expected


def test_stop_epoch_patience_one():
    assert S.stiffness_stop_epoch([0.3, 0.2, 0.01], threshold=0.05, patience=1) == 2


def test_stop_epoch_relative_to_running_peak():
    series = [0.6, 0.9, 1.0, 0.8, 0.45, 0.4, 0.3, 0.2]     # half of the peak 1.0 is 0.5
    assert S.stiffness_stop_epoch(series, threshold=0.5, patience=3, relative=True) == 6
    assert S.stiffness_stop_epoch(series, threshold=0.1, patience=3) is None


def test_evaluate_stopper_against_true_onset():
    ep = np.arange(1, 21, dtype=float)
    steps = ep * 10
    tv = np.where(ep <= 12, 0.9, 0.0)                      # low from epoch 13 -> stop at epoch 15
    val_acc = 0.9 - 0.01 * np.abs(ep - 10)                 # best 0.9 at epoch 10; 0.85 at 15
    curves = {"train/epoch": (steps, ep), "val/loss": (steps, 1 + 0.01 * (ep - 10) ** 2),
              "val/acc": (steps, val_acc), S.TV_SIGN_WITHIN: (steps, tv)}
    flat = dict(curves, **{S.TV_SIGN_WITHIN: (steps, np.full(20, 0.9))})   # never stops
    t = make_table([{"params": {"optim.lr": 0.1}, "seed": 0, "curves": curves},
                    {"params": {"optim.lr": 0.1}, "seed": 1, "curves": flat},
                    {"params": {"optim.lr": 0.1}, "seed": 2, "curves": curves}])
    df, summary = S.evaluate_stopper(t, threshold=0.5, patience=3, run_ids=["r000", "r001"])
    assert list(df["run_id"]) == ["r000", "r001"]
    row = df.iloc[0]
    assert row["onset_epoch"] == 10 and row["stop_epoch"] == 15 and row["abs_error_epochs"] == 5
    assert row["acc_given_up"] == pytest.approx(0.05)
    assert summary["n_stopped"] == 1 and summary["n_never_stopped"] == 1
    assert summary["mean_abs_error_epochs"] == 5 and summary["mean_acc_given_up"] == pytest.approx(0.05)


STOPPER_PLAN = S.PLANS["stiffness.stopper_vs_baselines[fixed_epoch/error]"]


def test_es_stop_epoch():
    # the running minimum at index 2; 3 epochs later without a new minimum: stop at index 5
    assert S.es_stop_epoch([3.0, 2.0, 1.0, 1.5, 1.2, 1.1, 0.9], patience=3) == 5
    assert S.es_stop_epoch([3.0, 2.0, 1.0, 1.5, 0.5, 1.1, 0.9], patience=3) is None   # new minimum


def test_baselines_are_read_off_the_same_series():
    """The stopper's cosine drops below 0.45 × its peak from the epoch after
    the onset: with patience 5 it stops 5 epochs after the onset, as val-loss
    patience 5 does; the fixed epoch is |FIXED_EPOCH − onset| away."""
    assert STOPPER_PLAN.options["stopper"] == STOPPER_RULE and S.stopper_of(STOPPER_PLAN.options) == \
        S.StiffnessStopper(), "the stopper's defaults are the registered rule"
    t = make_table(sweep("paper"))
    b = S.baselines_table(t, STOPPER_PLAN.options).set_index("run_id")
    onset = b["onset_epoch"].to_numpy()
    np.testing.assert_array_equal(b["stopper_epoch"], onset + STOPPER_RULE["patience"])
    np.testing.assert_array_equal(b["patience_epoch"], onset + ES_PATIENCE)
    np.testing.assert_array_equal(b["fixed_epoch_error"], np.abs(FIXED_EPOCH - onset))
    np.testing.assert_allclose(b["stopper_acc"], 0.002 * STOPPER_RULE["patience"])
    np.testing.assert_allclose(b["fixed_epoch_acc"], 0.002 * np.abs(FIXED_EPOCH - onset))
    vs = {v.name.split("[")[1][:-1]: v for v in run("stiffness.stopper_vs_baselines", t)}
    assert vs["fixed_epoch/error"].verdict == "supported"
    assert vs["fixed_epoch/error"].effect == pytest.approx(np.mean(np.abs(FIXED_EPOCH - onset) - 5))
    assert vs["patience/error"].verdict != "supported" and vs["patience/error"].effect == 0


def test_a_stopper_that_never_fires_trains_to_the_end():
    flat = sweep("paper")
    for tr in flat:
        steps, _ = tr["curves"][TV_COS_WITHIN]
        tr["curves"][TV_COS_WITHIN] = (steps, np.full(len(steps), 0.6))
    b = S.baselines_table(make_table(flat), STOPPER_PLAN.options)
    assert (b["stopper_epoch"] == EPOCHS).all() and not b["stopper_fired"].any()
    np.testing.assert_array_equal(b["stopper_error"], EPOCHS - b["onset_epoch"])
    vs = {v.name.split("[")[1][:-1]: v for v in run("stiffness.stopper_vs_baselines", make_table(flat))}
    assert vs["fixed_epoch/error"].verdict == "refuted" and vs["fixed_epoch/error"].details[
        "stopper_never_fired"] == 12


# ------------------------------------------------------- figures, tables
class ArraySources:
    def __init__(self, arrays):
        self.arrays = arrays

    def probe_arrays(self, run_id, name):
        return self.arrays.get(name, {})


def test_figures_and_table():
    t = make_table(sweep())
    assert isinstance(S.fig_dynamics(t), Figure)
    assert S.fig_class_matrices(t, None) is None and S.fig_distance(t, ArraySources({})) is None
    mats = {s: np.eye(10) * 0.5 for s in (0, 100, 200, 300)}
    dist = {300: np.array([[0.1, 0.3, 0.5], [0.4, 0.1, -0.2], [0.3, 0.1, -0.1]])}
    src = ArraySources({"stiffness_train_train": mats, S.DISTANCE_ARTIFACT: dist})
    assert isinstance(S.fig_class_matrices(t, src), Figure)
    assert isinstance(S.fig_distance(t, src), Figure)
    df = S.onsets_table(t)
    assert len(df) == 12 and {"onset_epoch", "tv_sign_before", "tv_sign_within_after", "xi",
                              "stop_epoch"} <= set(df)
    assert isinstance(S.fig_baselines(t), Figure)
    bare = make_table([{"params": {"optim.lr": 0.1}, "seed": 0, "curves": {"train/loss": ([1], [1.0])}}])
    assert S.fig_dynamics(bare) is None and S.onsets_table(bare) is None


@pytest.mark.parametrize("name", experiments.get("stiffness").specs)
def test_specs_validate(name):
    spec = load_spec(SPECS / name)
    assert set(spec.conjectures) <= set(experiments.get("stiffness").conjectures)
    assert spec.base.probes.stiffness and spec.base.probes.schedule.kind == "epoch"


def test_pilot_and_confirmatory_specs():
    """The confirmatory run is the pilot's design on fresh seeds (ξ at the
    level registered after the pilot); the stopper spec runs the registered
    rule in Tune on some of the confirmatory seeds."""
    pilot, held, stopped = (load_spec(SPECS / f"{n}.yaml") for n in
                            ("stiffness", "stiffness_heldout", "stiffness_stopper"))
    assert not set(pilot.seeds) & set(held.seeds) and set(stopped.seeds) <= set(held.seeds)
    assert len(held.trials()) >= 48 and set(held.conjectures) == set(experiments.get("stiffness").conjectures)
    level = held.base.probes.stiffness_xi_level
    assert level == XI_LEVEL and pilot.base.probes.stiffness_xi_level != level
    for spec in (held, stopped):
        assert spec.base == pilot.base.model_copy(update={"probes": held.base.probes})
        assert spec.grid == pilot.grid
    assert held.base.data.label_noise > 0 and held.base.train.epochs >= 36 + 10 + 3   # the latest pilot onset
    assert held.stopper is None and stopped.stopper == S.StiffnessStopper(**STOPPER_RULE)


# ------------------------------------------------------------ end to end
@pytest.mark.slow
def test_smoke_run_yields_every_registered_verdict(tmp_path):
    from test_sweeps import cli, uri

    res = cli(["run", str(SPECS / "stiffness_heldout.yaml"), "--smoke", "--storage", str(tmp_path / "ray"),
               "--tracking-uri", uri(tmp_path)], tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(cli(["conjectures", "stiffness_heldout-smoke", "--json", "--tracking-uri",
                          uri(tmp_path)], tmp_path).stdout)
    assert {v["name"] for v in out["verdicts"]} == set(S.PLANS)
    assert all(v["reason"] for v in out["verdicts"])
