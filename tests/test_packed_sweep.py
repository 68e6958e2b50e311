"""`resources.pack` in a sweep: the grid's trials grouped into packs, spec
errors that name the field, and — through the real `dynsweep` CLI on a local
Ray with a sqlite MLflow store — every member its own MLflow trial whose
records equal the unpacked sweep's bit for bit (MLP on CPU), a member that
diverges recorded as data, and a packed sweep killed mid-way resuming to the
unpacked result (plain, with deficits and with IMP levels)."""
from __future__ import annotations

import pytest
import yaml

from pathlib import Path

from dynamics_core.pack_rules import pack_compatible
from sweeps import tracking
from sweeps.context import pack_values, trial_names
from sweeps.spec import SpecError, parse_spec, read_yaml, with_overrides
from sweeps.tracking import Store
from test_interrupts import (assert_same_as_reference, kill_driver_when, newest_checkpoint,  # noqa: F401
                             reference, resume)
from test_sweeps import SLOW, TINY_BASE, cli, histories, slow_spec, uri


def spec(pack=4, **fields):
    return parse_spec({"name": "p", "base": TINY_BASE, "resources": {"pack": pack}, **fields})


# ---------------------------------------------------------------- grouping
def test_packs_share_what_they_must_and_keep_the_unpacked_names():
    s = spec(pack=3, grid={"optim.lr": [0.05, 0.1], "train.batch_size": [50, 100]}, seeds=[0, 1])
    packs = pack_values(s)
    names = trial_names(s.overrides())
    assert sorted(m["name"] for p in packs for m in p["members"]) == sorted(names)
    assert [len(p["members"]) for p in packs] == [2, 2, 2, 2]      # 4 trials per batch size, K = 3: even
    for p in packs:
        assert len({m["overrides"]["train.batch_size"] for m in p["members"]}) == 1
    assert packs[0]["name"] == "pack0-lr=0.05,bs=50,s0"
    assert len({p["name"] for p in packs}) == len(packs)


def test_late_momentum_members_get_their_own_packs():
    two_stage = {"kind": "two_stage", "stage1_epochs": 1, "momentum2": 0.9}
    s = spec(pack=4, base={**TINY_BASE, "optim": {"lr": 0.1, "momentum": 0.0, "schedule": two_stage}},
             grid={"optim.momentum": [0.0, 0.5]})
    assert [[m["overrides"]["optim.momentum"] for m in p["members"]] for p in pack_values(s)] == [[0.0], [0.5]]


@pytest.mark.parametrize("name, sizes", [
    ("critical_periods", [16] * 11),                # deficits, lengths, schedules differ per member
    ("early_phase", [14, 14, 14, 12, 12, 11]),      # one rewind step per pack, paired apart
])
def test_the_science_specs_pack(name, sizes):
    raw = read_yaml(Path(__file__).parents[1] / "sweeps" / "specs" / f"{name}.yaml")
    s = parse_spec({**raw, "resources": {**raw["resources"], "pack": 16}}, source=f"{name}.yaml")
    packs = pack_values(s)
    assert [len(p["members"]) for p in packs] == sizes
    base = s.base.model_dump(mode="json")
    for p in packs:
        assert pack_compatible([with_overrides(base, m["overrides"]) for m in p["members"]]) is None


# ---------------------------------------------------------------- the spec
@pytest.mark.parametrize("fields, field", [
    ({"resources": {"pack": 0}}, "resources.pack"),
    ({"search": {"kind": "optuna", "space": {"optim.lr": {"kind": "loguniform", "low": 0.01, "high": 1}}}},
     "resources.pack: search.kind: optuna"),
    ({"scheduler": {"kind": "asha"}}, "resources.pack: scheduler.kind: asha"),
    ({"resources": {"pack": 4, "workers_per_trial": 2}}, "resources.pack: resources.workers_per_trial: 2"),
    ({"grid": {"model.dropout": [0.0, 0.1]}}, "resources.pack: model.dropout: .* \\(at grid.model.dropout\\[1\\]\\)"),
    ({"variants": [{"model.dropout": 0.1}]}, "resources.pack: model.dropout: .* \\(at variants\\[0\\]\\)"),
    ({"base": {**TINY_BASE, "probes": {"stiffness": True, "schedule": {"kind": "epoch"}}},
      "stopper": {"kind": "stiffness"}}, "resources.pack: stopper.kind: stiffness"),
])
def test_a_spec_that_cannot_be_packed_is_refused_in_one_line_naming_the_field(fields, field):
    raw = {"name": "p", "base": TINY_BASE, "resources": {"pack": 4}, **fields}
    with pytest.raises(SpecError, match=f"^p.yaml: {field}") as err:
        parse_spec(raw, source="p.yaml")
    assert "\n" not in str(err.value)


def test_pack_one_is_an_unpacked_sweep_and_packs_allow_any_probe():
    assert parse_spec({"name": "p", "scheduler": {"kind": "asha"}}).resources.pack == 1
    probes = {"hessian": True, "hessian_trace": True, "gradcov": True, "stiffness": True,
              "fisher": True, "frequency": True, "timeline": True}
    assert spec(base={**TINY_BASE, "probes": probes}).resources.pack == 4


def test_validate_counts_trials_and_packs(tmp_path, capsys):
    from sweeps import cli as dynsweep

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "base": TINY_BASE, "resources": {"pack": 3},
                                    "grid": {"optim.lr": [0.05, 0.1], "train.batch_size": [50, 100]},
                                    "seeds": [0, 1]}))
    assert dynsweep.main(["validate", str(path)]) == 0
    assert "8 trial(s) in 4 pack(s) of up to 3" in capsys.readouterr().out


# ------------------------------------------------------ through real Ray
def run(dir, name, **fields):
    path = dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": TINY_BASE, **fields}))
    res = cli(["run", str(path), "--storage", str(dir / "ray"), "--tracking-uri", uri(dir)], dir)
    assert res.returncode == 0, res.stderr[-3000:]
    return res, Store(uri(dir))


@pytest.mark.slow
def test_packed_members_are_the_unpacked_trials_in_mlflow(tmp_path):
    """2 batch sizes × 2 learning rates (one diverges) × 2 seeds, packs of up
    to 3: four packs of 2 (4 trials per batch size, spread evenly), eight
    member runs equal to the eight unpacked ones."""
    grid = {"optim.lr": [0.05, 50.0], "train.batch_size": [50, 100]}
    (tmp_path / "solo").mkdir(), (tmp_path / "packed").mkdir()
    _, solo = run(tmp_path / "solo", "g", grid=grid, seeds=[0, 1])
    res, packed = run(tmp_path / "packed", "g", grid=grid, seeds=[0, 1], resources={"pack": 3})

    assert sorted(p.name for p in (tmp_path / "packed" / "ray" / "g").iterdir() if p.is_dir()) == \
        ["pack0-lr=0.05,bs=50,s0", "pack1-lr=50,bs=50,s0", "pack2-lr=0.05,bs=100,s0", "pack3-lr=50,bs=100,s0"]
    runs = {r.trial_id: r for r in tracking.trial_runs(packed, "g")}
    alone = {r.trial_id: r for r in tracking.trial_runs(solo, "g")}
    assert runs.keys() == alone.keys() and len(runs) == 8
    parent = tracking.find_sweep(packed, "g")
    for name, r in runs.items():
        assert r.tags["mlflow.parentRunId"] == parent and r.tags["pack"].startswith("pack")
        assert packed.client.get_run(r.run_id).info.run_name == name
        assert r.params == alone[name].params
        assert r.status == alone[name].status == ("diverged" if name.startswith("lr=50") else "finished")
        for key in ("time/train_s", "time/probe_s", "final/time_train_s", "final/time_probe_s"):
            assert (key in r.metrics) == (key in alone[name].metrics), (name, key)
    assert "final/time_probe_s" in runs["lr=0.05,bs=50,s0"].metrics
    assert histories(packed, "g") == histories(solo, "g")          # every metric at every step, bit for bit
    assert "lr=0.05,bs=100,s1" in res.stdout and "diverged" in res.stdout     # one table row per member
    status = cli(["status", "g", "--storage", str(tmp_path / "packed" / "ray"), "--tracking-uri",
                  uri(tmp_path / "packed")], tmp_path / "packed")
    assert status.returncode == 0 and status.stdout.count("lr=") >= 8, status.stdout + status.stderr


@pytest.mark.slow
def test_a_killed_packed_sweep_resumes_to_the_unpacked_result(tmp_path, reference):
    """The two-seed sweep of test_interrupts as one pack, its driver killed
    after the pack's second checkpoint: `resume` ends with the records of the
    uninterrupted unpacked sweep, no step logged twice."""
    slow_spec(tmp_path, "ft", seeds=[0, 1])
    raw = yaml.safe_load((tmp_path / "ft.yaml").read_text())
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump({**raw, "resources": {"pack": 2}}))
    kill_driver_when(tmp_path, lambda: newest_checkpoint(tmp_path / "ray" / "ft") >= 1, "two checkpoints")
    runs = tracking.trial_runs(Store(uri(tmp_path)), "ft")
    assert any(r.status == "running" for r in runs), "the kill should interrupt the pack"
    res = resume(tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_as_reference(tmp_path, reference)


IMP = {"train.epochs": 2, "pruning.levels": 1, "pruning.rewind_step": 3}
SCIENCE = [   # a deficit pack (two lengths, two deficits) and an IMP pack (levels, two ablations)
    {"data.deficit.kind": "blur", "data.deficit.start_epoch": 0, "data.deficit.end_epoch": 2, "train.epochs": 4},
    {"data.deficit.kind": "noise", "data.deficit.start_epoch": 1, "data.deficit.end_epoch": 3},
    {**IMP, "optim.lr": 0.05, "pruning.ablation": "shuffle_layer"},
    {**IMP, "optim.lr": 0.1, "pruning.ablation": "reinit"},
]


@pytest.mark.slow
def test_a_killed_packed_science_sweep_resumes_to_the_unpacked_result(tmp_path):
    """The sweep `ft` unpacked and uninterrupted, then in its two packs (a
    deficit one, an IMP one) killed after a second checkpoint and resumed:
    the same records, no step logged twice."""
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    ref.mkdir(), cut.mkdir()
    raw = {"name": "ft", "base": {**TINY_BASE, **SLOW}, "variants": SCIENCE, "seeds": [0],
           "fault_tolerance": {"max_failures": 2, "checkpoint_every_epochs": 1}}
    assert [len(p["members"]) for p in pack_values(parse_spec({**raw, "resources": {"pack": 2}}))] == [2, 2]
    (ref / "ft.yaml").write_text(yaml.safe_dump(raw))
    done = cli(["run", str(ref / "ft.yaml"), "--storage", str(ref / "ray"), "--tracking-uri", uri(ref)], ref)
    assert done.returncode == 0, done.stderr[-3000:]
    (cut / "ft.yaml").write_text(yaml.safe_dump({**raw, "resources": {"pack": 2}}))
    kill_driver_when(cut, lambda: newest_checkpoint(cut / "ray" / "ft") >= 1, "two checkpoints")
    assert any(r.status == "running" for r in tracking.trial_runs(Store(uri(cut)), "ft"))
    res = resume(cut)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_as_reference(cut, histories(Store(uri(ref)), "ft"))
