"""Large initial learning rate on constructed tables whose answer is known:
the calibration rule and its verdict, the crossover and the no-patch
control judged on paired seeds when the manipulation checks pass and
`invalid_protocol` (with the failed check in its reason) when they do not;
the patch noise; the specs; a `--smoke` run of each spec end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dynamics_core.config import PatchConfig
from dynamics_core.data.transforms import add_patches
from sweeps import experiments
from sweeps.experiments import large_lr
from sweeps.spec import load_spec, smoke
from sweeps.tracking import Store

from test_conjectures import FAST, make_table      # the shared constructed-table builder

SPECS = Path(__file__).parents[1] / "sweeps" / "specs"
E = np.arange(1, 11)
STEPS = 125 * E                                     # 125 optimizer steps per epoch


# ------------------------------------------------------------- calibration
def cal_trial(lr: float, seed: int, hit_epoch: int | None, final_loss: float,
              status: str = "finished") -> dict:
    """Train accuracy crosses 0.85 at `hit_epoch` (never: None); loss falls to `final_loss`."""
    acc = (np.full(10, 0.1) if hit_epoch is None
           else np.where(E < hit_epoch, 0.5 + 0.3 * E / hit_epoch, 0.9))
    loss = final_loss + (2.3 - final_loss) * np.exp(-E / 2) - (2.3 - final_loss) * np.exp(-5)
    return {"params": {"optim.lr": lr, "optim.schedule.kind": "constant", "train.epochs": 10},
            "seed": seed, "status": status,
            "curves": {"train/acc": (STEPS, acc), "train/loss": (STEPS, loss),
                       "val/acc": (STEPS, acc - 0.05), "train/epoch": (STEPS, E)}}


def calibration_table(small_hit: int = 4, small_loss: float = 0.12, top_trains: bool = False,
                      seeds=range(6)):
    """η 0.01 never trains, 0.1 hits at `small_hit`, 0.3 at 4, 1.0 (the edge) at 6, 3.0 does
    not train and 10.0 diverges (or, with `top_trains`, 3.0 trains, hitting at 8, and is the
    largest η)."""
    rng = np.random.default_rng(0)
    out = []
    for s in seeds:
        j = lambda: float(rng.normal(0, 0.005))  # noqa: E731
        out += [cal_trial(0.01, s, None, 1.5 + j()),
                cal_trial(0.1, s, small_hit, small_loss + j()),
                cal_trial(0.3, s, 4, 0.15 + j()),
                cal_trial(1.0, s, 6, 0.25 + j()),
                cal_trial(3.0, s, 8 if top_trains else None, 0.4 if top_trains else 2.3 + j())]
    if not top_trains:
        out.append(cal_trial(10.0, 99, None, 1e4, status="diverged"))
    return make_table(out)


def test_calibration_picks_the_edge_and_a_faster_small_lr():
    v, = large_lr.calibration(calibration_table(), **FAST)
    assert (v.details["lr_large"], v.details["lr_small"]) == (1.0, 0.1)
    assert v.verdict == "supported", v.summary()
    assert v.statistic == pytest.approx(0.12 - 0.25, abs=0.01) and v.n == 12
    assert v.details["steps_to_target"] == {"small": 500.0, "large": 750.0}
    assert v.details["excluded_diverged"] == 1
    assert all(c["passed"] for c in v.details["checks"].values())
    table = large_lr.calibration_table(calibration_table())
    assert list(table["lr"]) == [0.01, 0.1, 0.3, 1.0, 3.0, 10.0]
    assert list(table["trains"]) == [False, True, True, True, False, False]
    assert table.loc[table["lr"] == 10.0, "n_diverged"].item() == 1


def test_calibration_without_the_edge_is_an_invalid_protocol():
    v, = large_lr.calibration(calibration_table(top_trains=True), **FAST)
    assert v.verdict == "invalid_protocol" and "edge_bracketed" in v.reason, v.summary()
    assert "largest η of the grid" in v.reason


def test_calibration_without_a_fast_small_lr_is_an_invalid_protocol():
    v, = large_lr.calibration(calibration_table(small_hit=8, small_loss=0.3), **FAST)
    assert v.verdict == "invalid_protocol" and "small_lr_found" in v.reason, v.summary()
    assert v.details["lr_small"] is None and v.details["lr_large"] == 1.0


def test_calibration_small_lr_that_fits_slower_in_loss_is_refuted():
    """Reaches the target as early, but ends with the higher train loss: the test says so."""
    v, = large_lr.calibration(calibration_table(small_loss=0.40), **FAST)
    assert v.verdict == "refuted", v.summary()


def test_calibration_with_few_seeds_is_underpowered():
    v, = large_lr.calibration(calibration_table(seeds=range(3)), **FAST)
    assert v.verdict == "underpowered" and "n=6 < min 12" in v.reason, v.summary()


# ------------------------------------------------------ crossover, control
LARGE = {"optim.lr": 1.0, "optim.schedule.kind": "step", "optim.schedule.milestones": "[0.5]",
         "optim.schedule.factor": 0.04, "train.epochs": 10}
SMALL = {"optim.lr": 0.1, "optim.schedule.kind": "constant",
         "optim.schedule.milestones": "[0.5, 0.75]", "train.epochs": 10}


def arm_trial(params: dict, patch: bool, seed: int, before: float, after: float, loss: float,
              patch_acc: float, rng) -> dict:
    """Accuracy `before` for epochs 1-5 and `after` from 6 on; train loss `loss` at epoch 5."""
    j = float(rng.normal(0, 0.005))
    acc = np.where(E <= 5, before, after) + j
    curves = {"val/acc": (STEPS, acc), "train/epoch": (STEPS, E),
              "train/loss": (STEPS, loss * np.exp(-(E - 5) / 5)),
              "final/val_acc": (STEPS[-1:], acc[-1:])}
    if patch:
        curves["patch/acc"] = (STEPS, np.full(10, patch_acc))
    return {"params": {**params, "data.patch.fraction": 0.8 if patch else 0.0}, "seed": seed,
            "curves": curves}


def main_table(*, small_loss: float = 0.12, small_patch: float = 0.45, after_small: float = 0.85,
               before_small: float = 0.82, control: bool = True, seeds=range(8)):
    """The shipped design: large-anneal and small on patch data and without it.
    Defaults follow the paper: small better before (0.82 vs 0.78), worse after
    (0.85 vs 0.90); without the patch the small arm loses only 0.01 after."""
    rng = np.random.default_rng(1)
    out = []
    for s in seeds:
        out.append(arm_trial(LARGE, True, s, 0.78, 0.90, 0.25, 0.34, rng))
        out.append(arm_trial(SMALL, True, s, before_small, after_small, small_loss, small_patch, rng))
        if control:
            out.append(arm_trial(LARGE, False, s, 0.90, 0.96, 0.25, 0, rng))
            out.append(arm_trial(SMALL, False, s, 0.92, 0.95, 0.10, 0, rng))
    return make_table(out)


def test_crossover_supported_when_the_checks_pass():
    v, = large_lr.anneal_crossover(main_table(), **FAST)
    assert v.verdict == "supported", v.summary()
    assert v.details["before_minus"] == pytest.approx(0.04, abs=0.01)
    assert v.details["after_minus"] == pytest.approx(-0.05, abs=0.01)
    assert v.statistic == pytest.approx(0.04, abs=0.01) and v.n == 16
    assert v.details["excluded_no_patch"] == 16 and v.details["anneal_epoch"] == 5
    assert v.details["no_patch_after_minus"] == pytest.approx(-0.01, abs=0.01)
    assert all("within seed blocks" in p["test"] for p in v.details["parts"])
    assert all(c["passed"] for c in v.details["checks"].values())


def test_crossover_invalid_when_the_small_lr_fits_slower():
    v, = large_lr.anneal_crossover(main_table(small_loss=0.9), **FAST)
    assert v.verdict == "invalid_protocol", v.summary()
    assert v.reason.startswith("manipulation check small_fits_as_fast failed: train/loss small")
    assert "\n" not in v.reason


def test_crossover_invalid_when_the_small_lr_ignores_the_patch():
    v, = large_lr.anneal_crossover(main_table(small_patch=0.2), **FAST)
    assert v.verdict == "invalid_protocol" and "small_learns_patch failed" in v.reason, v.summary()
    assert "patch/acc small 0.2 vs large 0.34" in v.reason


def test_crossover_without_the_first_half_is_refuted():
    """Small worse before annealing as well: the before part reverses significantly."""
    v, = large_lr.anneal_crossover(main_table(before_small=0.70), **FAST)
    assert v.verdict == "refuted", v.summary()


def test_patch_hurts_small_supported_and_refuted():
    v, = large_lr.patch_hurts_small(main_table(), **FAST)
    assert v.verdict == "supported", v.summary()
    # (0.85 - 0.95) - (0.90 - 0.96) = -0.04
    assert v.statistic == pytest.approx(-0.04, abs=0.01) and v.n == 8
    assert v.details["patch_cost_small"] == pytest.approx(-0.10, abs=0.01)
    rev, = large_lr.patch_hurts_small(main_table(after_small=0.99), **FAST)
    assert rev.verdict == "refuted", rev.summary()


def test_patch_hurts_small_needs_the_control_and_the_patch_check():
    v, = large_lr.patch_hurts_small(main_table(control=False), **FAST)
    assert v.verdict != "supported" and "no seed holds all four arms" in v.reason, v.summary()
    v, = large_lr.patch_hurts_small(main_table(small_patch=0.2), **FAST)
    assert v.verdict == "invalid_protocol" and "small_learns_patch" in v.reason


def test_family_holm_over_crossover_and_control():
    names = ["large_lr.anneal_crossover", "large_lr.patch_hurts_small"]
    vs = experiments.evaluate(names, main_table(), {n: FAST for n in names})
    assert [v.family for v in vs] == ["large_lr", "large_lr"] and [v.n_family for v in vs] == [2, 2]
    assert [v.verdict for v in vs] == ["supported", "supported"]
    assert all(v.p_adjusted >= v.p_raw for v in vs)


def test_figures_and_tables():
    fig = large_lr.fig_large_lr(main_table())
    assert fig is not None and len(fig.axes) == 3       # test acc, patch acc, train loss
    labels = {t.get_text() for t in fig.axes[0].get_legend().get_texts()}
    assert "small no patch (n=8)" in labels and "large-anneal (n=8)" in labels
    assert large_lr.fig_calibration(main_table()) is None
    assert large_lr.calibration_table(main_table()) is None
    cal = large_lr.fig_calibration(calibration_table())
    assert cal is not None and len(cal.axes) == 2


# --------------------------------------------------------------- patch data
def test_patch_noise_is_per_example_and_off_by_default():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 40, generator=g), torch.arange(10).repeat(20)
    clean, only = add_patches(x, y, 10, PatchConfig(fraction=0.5, scale=2.0, zeta=0.25), seed=0)
    noisy, only_n = add_patches(x, y, 10, PatchConfig(fraction=0.5, scale=2.0, zeta=0.25,
                                                       noise=0.1), seed=0)
    assert torch.equal((clean != x).any(1), (noisy != x).any(1))   # the same examples carry it
    xi = only_n[:, :4] - only[:, :4]
    assert 0.05 < xi.norm(dim=1).mean() < 0.15                     # |xi_i| about `noise`
    assert len({tuple(r.tolist()) for r in only_n[y == 0, :4]}) == 20   # one patch per example
    assert not only_n[:, 4:].any()
    carriers = (noisy != x).any(1)
    assert torch.equal(noisy[carriers, :4], only_n[carriers, :4])


# -------------------------------------------------------------------- specs
@pytest.mark.parametrize("name", experiments.get("large_lr").specs)
def test_specs_validate(name):
    spec = load_spec(SPECS / name)
    assert set(spec.conjectures) <= set(experiments.get("large_lr").conjectures)
    assert smoke(spec).trials()


def test_main_spec_arms_are_paired_and_use_the_calibrated_pair():
    spec = load_spec(SPECS / "large_lr.yaml")
    trials = [t.flat() for t in spec.trials()]
    cells = {(large_lr.lr_arm(t), t["data.patch.fraction"] > 0) for t in trials}
    assert cells == {("large-anneal", True), ("small", True), ("large-anneal", False), ("small", False)}
    assert len(trials) == 4 * len(spec.seeds) and len(spec.seeds) >= 7
    lrs = {large_lr.lr_arm(t): t["optim.lr"] for t in trials}
    assert lrs["large-anneal"] / lrs["small"] >= large_lr.PLANS[large_lr.CAL].options["min_ratio"]
    cal = load_spec(SPECS / "large_lr_calibration.yaml")
    assert {lrs["large-anneal"], lrs["small"]} <= set(cal.grid["optim.lr"])
    main, c = spec.base, cal.base
    assert (main.data, main.model, main.train.batch_size) == (c.data, c.model, c.train.batch_size)
    assert c.train.epochs == large_lr.anneal_epoch(
        __import__("pandas").DataFrame([t for t in trials if large_lr.lr_arm(t) == "large-anneal"]))


# ------------------------------------------------------------ end to end
@pytest.mark.slow
@pytest.mark.parametrize("name", ["large_lr_calibration", "large_lr"])
def test_smoke_run_logs_verdicts_figures_and_tables(name, tmp_path):
    from test_sweeps import cli, judged_run, uri

    res = cli(["run", str(SPECS / f"{name}.yaml"), "--smoke", "--storage", str(tmp_path / "ray"),
               "--tracking-uri", uri(tmp_path)], tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    tracker = Store(uri(tmp_path))
    _, run = judged_run(tracker, f"{name}-smoke")
    files = {a.path for a in tracker.client.list_artifacts(run.info.run_id)}
    assert {"verdicts.json", "verdicts.csv", "figures"} <= files
    figures = {a.path for a in tracker.client.list_artifacts(run.info.run_id, "figures")}
    want = {"large_lr_calibration": "large_lr_calibration.png", "large_lr": "large_lr_accuracy.png"}
    assert any(f.endswith(want[name]) for f in figures), figures
    if name == "large_lr_calibration":
        assert "large_lr_calibration.csv" in files
    verdicts = json.loads(cli(["conjectures", f"{name}-smoke", "--json", "--tracking-uri",
                               uri(tmp_path)], tmp_path).stdout)["verdicts"]
    assert {v["name"] for v in verdicts} == set(load_spec(SPECS / f"{name}.yaml").conjectures)
    assert all(v["reason"] for v in verdicts)
