"""Critical learning periods on constructed tables whose answer is known: the
schedule arms told apart from the config, each conjecture judged per arm and
paired by seed (supported / refuted / not supported where only one arm has the
effect), `invalid_protocol` when the manipulation check (the permanent blur
hurts) fails, the registered Tr F peak rule, the specs, and (slow) a smoke run
of the confirmatory spec that yields every registered verdict."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynamics_core.hooks import Schedule
from sweeps import experiments
from sweeps.experiments import critical_periods as cp
from sweeps.spec import load_spec, smoke

from test_conjectures import FAST, make_table      # the shared constructed-table builder

SPECS = Path(__file__).parents[1] / "sweeps" / "specs"
SPE = 32                                            # optimizer steps per epoch
CLEAN = 0.90
BUDGET, WINDOW, ONSET_RUN = 20, 10, 30
ARMS = ("exponential", "constant", "restart")


# ------------------------------------------------------------------ builder
def arm(kind: str = "none", start: int = 0, end: int = 0, epochs: int = BUDGET,
        schedule: str = "exponential") -> dict:
    """Config columns of one trial; `schedule` as the spec writes its arms."""
    restart = end if schedule == "restart" and kind != "none" and 0 < end < epochs else None
    return {cp.KIND: kind, cp.START: start, cp.END: end, cp.EPOCHS: epochs,
            cp.SCHED: "constant" if schedule == "constant" else "exponential",
            cp.RESTART: restart}


def hump_fisher(steps: np.ndarray, falls: bool = True) -> np.ndarray:
    """Tr F at the given steps: a rise to a peak at step 100 and a fall to a
    fifth of it (`falls`), or a rise that never stops."""
    t = np.maximum(steps, 1) / 100.0
    return 100 * t * np.exp(1 - t) + 5 if falls else 3 + 100 * np.log1p(t)


def trial(params: dict, acc: float, seed: int, fisher: np.ndarray | None = None,
          status: str = "finished") -> dict:
    epochs = params[cp.EPOCHS]
    steps = np.arange(epochs + 1) * SPE
    curves = {"final/val_acc": ([epochs * SPE], [acc]),
              "val/acc": (steps[1:], np.linspace(0.2, acc, epochs)),
              "train/epoch": (steps[1:], np.arange(1, epochs + 1))}
    if fisher is not None:
        log_steps = np.array(sorted(Schedule("log", points=40).resolve(epochs * SPE, SPE)))
        curves[cp.FISHER] = (log_steps, fisher(log_steps))
    return {"params": params, "seed": seed, "status": status, "curves": curves}


def sweep(*, blur_hurt: float = 0.6, removal: dict | None = None, onset: dict | None = None,
          control_drop: float = 0.0, noise_gap: float = 0.03, falls: dict | None = None,
          seeds: range = range(10), sd: float = 0.002, seed_sd: float = 0.0,
          rng_seed: int = 0) -> list[dict]:
    """The shipped spec's 22 arms per seed, with known effects per schedule arm:
    blur removed at N costs removal[arm] * N; a 10-epoch window at t0 costs
    onset[arm] * t0 / 10 less than the one at t0 = 0 (the removal at N = 10); noise
    ends noise_gap above blur at N = 10; the controls cost control_drop. Each seed
    has its own offset (sd seed_sd) shared by all its trials: pairing removes it."""
    removal = {**dict.fromkeys(ARMS, 0.003), **(removal or {})}
    onset = {**dict.fromkeys(ARMS, 0.05), **(onset or {})}
    falls = {"exponential": True, "constant": True, **(falls or {})}
    rng = np.random.default_rng(rng_seed)
    out = []
    for s in seeds:
        offset = rng.normal(0, seed_sd)

        def add(params, acc, fisher=None):
            out.append(trial(params, acc + offset + rng.normal(0, sd), s, fisher))

        for sched in ARMS:
            if sched != "restart":       # the restart arm shares the exponential clean runs
                add(arm(epochs=BUDGET, schedule=sched), CLEAN,
                    lambda st, f=falls[sched]: hump_fisher(st, f))
                add(arm(epochs=ONSET_RUN, schedule=sched), CLEAN)
            for n in (10, 20):
                add(arm("blur", 0, n, n + BUDGET, sched), CLEAN - removal[sched] * n)
            for t0 in (5, 10):
                add(arm("blur", t0, t0 + WINDOW, ONSET_RUN, sched),
                    CLEAN - removal[sched] * 10 + onset[sched] * t0 / 10)
            add(arm("noise", 0, 10, ONSET_RUN, sched), CLEAN - removal[sched] * 10 + noise_gap)
        add(arm("blur", 0, BUDGET, BUDGET), CLEAN - blur_hurt)
        for kind in cp.CONTROLS:
            add(arm(kind, 0, 10, ONSET_RUN), CLEAN - control_drop)
    return out


def table(**kw):
    return make_table(sweep(**kw))


def by_name(verdicts):
    return {v.name: v for v in verdicts}


def one(verdicts):
    (v,) = verdicts
    return v


# -------------------------------------------------------------------- arms
@pytest.mark.parametrize("row, expected", [
    (arm(epochs=30), cp.Arm("none", "clean", 0, 0, 30, "exponential")),
    (arm(epochs=30, schedule="constant"), cp.Arm("none", "clean", 0, 0, 30, "constant")),
    (arm("blur", 0, 30, 30), cp.Arm("blur", "permanent", 0, 30, 30, "exponential")),
    (arm("blur", 0, 60, 40), cp.Arm("blur", "permanent", 0, 40, 40, "exponential")),  # clipped
    (arm("blur", 0, 20, 50, "restart"), cp.Arm("blur", "removal", 0, 20, 50, "restart")),
    (arm("noise", 10, 30, 50, "constant"), cp.Arm("noise", "onset", 10, 30, 50, "constant")),
    ({**arm("blur", 0, 20, 50), cp.RESTART: 25}, cp.Arm("blur", "removal", 0, 20, 50, "other")),
    ({**arm("blur", 0, 20, 50), cp.RESTART: "None"}, cp.Arm("blur", "removal", 0, 20, 50, "exponential")),
    ({cp.EPOCHS: 30}, cp.Arm("none", "clean", 0, 0, 30, "constant")),   # the config's default
])
def test_arm_of_rows(row, expected):
    assert cp.arm_of(pd.Series(row)) == expected
    assert cp.arm_of(row) == expected


def test_arm_geometry_and_the_shared_restart_runs():
    a = cp.arm_of(arm("blur", 0, 20, 40, "restart"))
    assert (a.budget, a.window, a.label) == (20, 20, "restart:blur/[0,20)/40")
    df, _ = cp.arm_frame(table(seeds=range(2)))
    restart = cp.in_schedule(df, "restart")
    # its own 5 deficit runs per seed, plus the exponential clean (2) and permanent (1) runs
    assert len(restart) == 2 * 8 and set(restart["schedule"]) == {"restart", "exponential"}
    assert set(restart.loc[restart["schedule"] == "exponential", "sweep"]) == {"clean", "permanent"}
    assert len(cp.in_schedule(df, "constant")) == 2 * 7


def test_arm_frame_excludes_unfinished():
    trials = sweep(seeds=range(3))
    trials.append(trial(arm("blur", 0, 20, 40), float("nan"), 9, status="diverged"))
    df, excluded = cp.arm_frame(make_table(trials))
    assert len(df) == 3 * 22 and excluded["excluded_diverged"] == 1


# ---------------------------------------------------- manipulation check
def test_pilot_blur_hurts_supported_and_paired():
    v = one(cp.pilot_blur_hurts(table(), **FAST))
    assert v.verdict == "supported" and v.effect == pytest.approx(-0.6, abs=0.01)
    assert v.details["epochs"] == BUDGET and v.n == 20 and "seed blocks" in v.details["test"]


def test_pilot_blur_not_hurting_is_refuted():
    """The pilot tests H0: drop = min_drop: no drop at all is significantly less than that."""
    v = one(cp.pilot_blur_hurts(table(blur_hurt=0.0), **FAST))
    assert v.verdict == "refuted" and "fix" in v.details


GATED = [cp.removal_hurts, cp.early_onset_most_sensitive, cp.noise_hurts_less_than_blur,
         cp.controls_no_lasting_effect, cp.not_a_schedule_artefact]


@pytest.mark.parametrize("conjecture", GATED)
def test_invalid_protocol_when_blur_does_not_hurt(conjecture):
    vs = conjecture(table(blur_hurt=0.0, seeds=range(5)), **FAST)
    assert vs and all(v.verdict == "invalid_protocol" for v in vs)
    assert all(v.details["fix"] == cp.FIX and "does not hurt" in v.reason for v in vs)
    assert {v.name for v in vs} == set(conjecture.plans)        # every arm still has its verdict


# ------------------------------------------------------------ per arm
def test_removal_hurts_in_every_arm():
    vs = by_name(cp.removal_hurts(table(), **FAST))
    assert set(vs) == {f"critical_periods.removal_hurts[{a}]" for a in ARMS}
    for a, v in vs.items():
        assert v.verdict == "supported" and v.statistic < -0.8 and v.n == 30, a
        assert sorted(v.details["mean_acc_by_N"]) == [0, 10, 20] and v.details["budget"] == 20


def test_removal_only_under_the_decay_is_not_supported_at_a_constant_rate():
    """The schedule confound: no cost at a constant rate leaves that arm unsupported."""
    vs = by_name(cp.removal_hurts(table(removal={"constant": 0.0, "restart": 0.0}), **FAST))
    assert vs["critical_periods.removal_hurts[exponential]"].verdict == "supported"
    assert vs["critical_periods.removal_hurts[constant]"].verdict != "supported"
    assert vs["critical_periods.removal_hurts[restart]"].verdict != "supported"
    means = vs["critical_periods.removal_hurts[constant]"].details["mean_acc_by_N"]
    assert abs(means[20] - means[0]) < 0.01


def test_early_onset_most_sensitive_per_arm_with_seed_baselines():
    vs = by_name(cp.early_onset_most_sensitive(table(onset={"restart": -0.05}), **FAST))
    exp = vs["critical_periods.early_onset_most_sensitive[exponential]"]
    assert exp.verdict == "supported" and (exp.details["window"], exp.details["epochs"]) == (10, 30)
    assert sorted(exp.details["mean_sensitivity_by_t0"]) == [0, 5, 10]
    assert vs["critical_periods.early_onset_most_sensitive[restart]"].verdict == "refuted"


def test_noise_versus_blur_is_paired_by_seed():
    """A gap of 0.03 under a seed-to-seed spread of 0.05: the paired test sees it."""
    vs = by_name(cp.noise_hurts_less_than_blur(table(noise_gap=0.03, seed_sd=0.05), **FAST))
    for v in vs.values():
        assert v.verdict == "supported" and v.effect == pytest.approx(0.03, abs=0.003)
        assert "within seed blocks" in v.details["test"] and v.details["N"] == [10]
    worse = by_name(cp.noise_hurts_less_than_blur(table(noise_gap=-0.05), **FAST))
    assert {v.verdict for v in worse.values()} == {"refuted"}


def test_controls_paired_non_inferiority():
    v = one(cp.controls_no_lasting_effect(table(seed_sd=0.05), **FAST))
    assert v.verdict == "supported" and set(v.details["controls"]) == set(cp.CONTROLS)
    assert all(c["N"] == [10] and c["n_control"] == 10 for c in v.details["controls"].values())
    v = one(cp.controls_no_lasting_effect(table(control_drop=0.06), **FAST))
    assert v.verdict == "refuted" and v.effect == pytest.approx(-0.04, abs=0.01)


# ------------------------------------------------------ schedule artefact
def test_not_a_schedule_artefact_supported_when_the_constant_arm_shows_both():
    v = one(cp.not_a_schedule_artefact(table(), **FAST))
    assert v.verdict == "supported" and v.details["schedule"] == "constant"
    assert (v.details["N"], v.details["t0"]) == (20, [0, 10])
    assert v.details["by_arm"]["constant"]["removal_cost"] == pytest.approx(-0.06, abs=0.01)
    assert v.details["by_arm"]["exponential"]["onset_contrast"] == pytest.approx(-0.05, abs=0.01)


def test_an_artefact_of_the_decay_is_refuted():
    """At a constant rate the late removal helps and the late onset hurts more: refuted."""
    v = one(cp.not_a_schedule_artefact(table(removal={"constant": -0.002},
                                             onset={"constant": -0.05}), **FAST))
    assert v.verdict == "refuted"
    assert v.details["by_arm"]["exponential"]["removal_cost"] < 0 < \
        v.details["by_arm"]["constant"]["removal_cost"]


# ------------------------------------------------------------- Fisher
def test_peak_rule():
    steps = np.array(sorted(Schedule("log", points=40).resolve(BUDGET * SPE, SPE)))
    assert cp.rises_then_falls(hump_fisher(steps))
    assert not cp.rises_then_falls(hump_fisher(steps, falls=False))          # keeps rising
    assert not cp.rises_then_falls(hump_fisher(steps)[steps >= 150])         # peak at the start
    rebound = hump_fisher(steps).copy()
    rebound[-6:] = 0.9 * rebound.max()                                        # a second rise
    assert not cp.rises_then_falls(rebound)
    plateau = 100 + np.random.default_rng(0).normal(0, 8, 34)                 # noise, no fall
    assert not cp.rises_then_falls(np.r_[3, plateau])
    p = cp.peak_shape(hump_fisher(steps))
    assert p.interior and steps[p.index] == pytest.approx(100, rel=0.3) and p.fall > 0.7


def test_fisher_per_arm_with_seeds_as_units():
    vs = by_name(cp.fisher_rises_then_falls(table(falls={"constant": False})))
    exp = vs["critical_periods.fisher_rises_then_falls[exponential]"]
    const = vs["critical_periods.fisher_rises_then_falls[constant]"]
    assert exp.verdict == "supported" and exp.n == 10 and exp.p_raw == pytest.approx(2 / 1024)
    assert const.verdict == "refuted" and const.statistic == 0.0
    seed0 = exp.details["per_seed"]["0"]
    assert seed0["rises_then_falls"] and seed0["measurements"] >= 24
    assert seed0["peak_step"] == pytest.approx(100, rel=0.3)


def test_fisher_too_few_seeds_is_underpowered_and_not_gated():
    vs = cp.fisher_rises_then_falls(table(seeds=range(4), blur_hurt=0.0))
    assert {v.verdict for v in vs} == {"underpowered"} and {v.n for v in vs} == {4}


# ---------------------------------------------------- tables and figures
def test_arm_table_and_figures():
    tab = table(seeds=range(3))
    t = cp.arm_table(tab)
    assert len(t) == 22 and (t["n"] == 3).all() and set(t["schedule"]) == set(ARMS)
    assert cp.fig_accuracy(tab) is not None and cp.fig_fisher(tab) is not None
    assert cp.fig_accuracy(make_table([trial(arm(), 0.9, 0)])) is None


# -------------------------------------------------------- registry, specs
def test_registered():
    exp = experiments.get("critical_periods")
    assert len(exp.conjectures) == 7 and len(exp.plans) == 14
    vs = experiments.evaluate(list(exp.conjectures), table(), {n: FAST for n in exp.conjectures})
    assert {v.name for v in vs} == set(exp.plans)
    assert {v.verdict for v in vs} == {"supported"}
    families = {v.name: (v.family, v.n_family) for v in vs}
    assert families["critical_periods.removal_hurts[constant]"] == ("critical_periods.constant", 3)
    assert families["critical_periods.controls_no_lasting_effect"] == ("critical_periods.exponential", 4)
    assert families["critical_periods.not_a_schedule_artefact"] == ("critical_periods.artefact", 1)
    assert families["critical_periods.fisher_rises_then_falls[constant]"] == ("critical_periods.fisher", 2)
    assert all(v.plan_hash == exp.plans[v.name].hash() for v in vs)


@pytest.mark.parametrize("name", experiments.get("critical_periods").specs)
def test_specs_validate(name):
    spec = load_spec(SPECS / name)
    assert set(spec.conjectures) <= set(experiments.get("critical_periods").conjectures)
    assert smoke(spec).trials()


def test_pilot_and_confirmatory_specs():
    pilot, main = (load_spec(SPECS / f) for f in ("critical_periods_pilot.yaml", "critical_periods.yaml"))
    assert not set(pilot.seeds) & set(main.seeds) and len(main.seeds) >= 8
    for spec in (pilot, main):      # one protocol; the confirmatory grid is the pilot's
        assert spec.base.model == main.base.model and spec.base.data == main.base.data
        assert spec.base.optim == main.base.optim and spec.base.probes == main.base.probes
    assert set(main.conjectures) == set(experiments.get("critical_periods").conjectures)
    trials = main.trials()
    arms = [cp.arm_of(t.flat()) for t in trials]
    assert len(trials) == 22 * len(main.seeds) and {a.schedule for a in arms} == set(ARMS)
    for sched in ARMS:
        mine = cp.in_schedule(pd.DataFrame([a.__dict__ for a in arms]).assign(seed=0), sched)
        assert sorted(set(mine.loc[mine["sweep"] == "removal", "end"])) == [10, 20], sched
        assert sorted(set(mine.loc[mine["deficit"] == "blur", "start"])) == [0, 10, 20], sched
    unseeded = lambda spec: {frozenset((k, str(v)) for k, v in t.flat().items() if k != "seed")  # noqa: E731
                             for t in spec.trials()}
    assert unseeded(pilot) == unseeded(main)       # the same arms, on other seeds
    for t, a in zip(trials, arms):      # a restart exactly where the deficit ends
        if a.schedule == "restart":
            assert t.optim.schedule.restart_epoch == t.data.deficit.end_epoch
        # Tr F on the clean 30-epoch runs only, at >= 24 log-spaced steps
        assert t.probes.fisher == (a.sweep == "clean" and a.epochs == 30)
        if t.probes.fisher:
            s = t.probes.schedule
            assert s.kind == "log" and len(Schedule("log", points=s.points).resolve(30 * 32, 32)) >= 24


# ---------------------------------------------- end to end (slow, smoke)
@pytest.mark.slow
def test_smoke_run_yields_every_registered_verdict(tmp_path):
    """The confirmatory spec (it registers every verdict; the pilot's grid is the
    same protocol and smoke-validates above)."""
    from test_sweeps import cli, uri

    name = "critical_periods"

    res = cli(["run", str(SPECS / f"{name}.yaml"), "--smoke", "--storage", str(tmp_path / "ray"),
               "--tracking-uri", uri(tmp_path)], tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    res = cli(["conjectures", f"{name}-smoke", "--json", "--tracking-uri", uri(tmp_path)],
              tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    names = {v["name"] for v in json.loads(res.stdout)["verdicts"]}
    wanted = {n for n in experiments.get("critical_periods").plans
              if n.split("[")[0] in load_spec(SPECS / f"{name}.yaml").conjectures}
    assert names == wanted
