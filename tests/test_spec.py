"""Spec validation: a corpus of bad specs, each exit code 2 naming the field; good ones expand right."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sweeps import cli
from sweeps.spec import SpecError, load_spec, parse_spec, smoke, trial_name

GOOD = """
name: tiny
base:
  data: {dataset: mnist1d}
  model: {name: mlp}
  optim: {name: sgd, lr: 0.1, momentum: 0.0}
  train: {epochs: 2, batch_size: 100}
grid:
  optim.lr: [0.01, 0.1]
  train.batch_size: [32, 128]
seeds: [0, 1]
"""

BAD = {
    "yaml_error": ("name: x\nbase: {data: [", "YAML error"),
    "missing_name": ("base: {}", "name"),
    "unknown_top_key": ("name: x\ngird: {}", "gird"),
    "unknown_nested_key": ("name: x\nbase: {optim: {lrr: 0.1}}", "base.optim.lrr"),
    "wrong_type": ("name: x\nbase: {train: {epochs: many}}", "base.train.epochs"),
    "lr_not_positive": ("name: x\nbase: {optim: {lr: 0}}", "base.optim.lr"),
    "negative_momentum": ("name: x\nbase: {optim: {momentum: -0.5}}", "base.optim.momentum"),
    "empty_grid_axis": ("name: x\ngrid: {optim.lr: []}", "grid"),
    "grid_path_missing": ("name: x\ngrid: {optim.learning_rate: [0.1]}", "grid.optim.learning_rate"),
    "grid_value_out_of_range": ("name: x\ngrid: {optim.lr: [0.1, -1]}", "grid.optim.lr[1]"),
    "unknown_model": ("name: x\nbase: {model: {name: vgg99}}", "base.model.name"),
    "unknown_dataset": ("name: x\nbase: {data: {dataset: imagenet}}", "base.data.dataset"),
    "unknown_probe": ("name: x\nbase: {probes: {hessain: true}}", "base.probes.hessain"),
    "optuna_with_grid": ("name: x\ngrid: {optim.lr: [0.1]}\nsearch: {kind: optuna, space: "
                         "{optim.momentum: {kind: uniform, low: 0, high: 0.9}}}", "grid"),
    "optuna_bad_space_path": ("name: x\nsearch: {kind: optuna, space: {optim.lrr: "
                              "{kind: loguniform, low: 0.001, high: 1}}}", "search.space.optim.lrr"),
    "optuna_bad_bounds": ("name: x\nsearch: {kind: optuna, space: {optim.lr: "
                          "{kind: loguniform, low: 1, high: 0.1}}}", "search.space.optim.lr"),
    "bad_scheduler": ("name: x\nscheduler: {kind: hyperband}", "scheduler.kind"),
    "bad_search_metric": ("name: x\nsearch: {kind: optuna, metric: hessian/top, space: "
                          "{optim.lr: {kind: loguniform, low: 0.01, high: 1}}}", "search.metric"),
    "bad_resources": ("name: x\nresources: {cpus_per_trial: 0}", "resources.cpus_per_trial"),
    "unknown_conjecture": ("name: x\nconjectures: [breakeven.c9]", "conjectures[0]"),
    "bad_name": ("name: 'my sweep!'", "name"),
    "deficit_window": ("name: x\nbase: {data: {deficit: {kind: blur, start_epoch: 5, end_epoch: 2}}}",
                       "base.data.deficit"),
    "duplicate_seeds": ("name: x\nseeds: [1, 1]", "seeds"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_spec_exits_2_naming_file_and_field(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text, field = BAD[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    for command in (["validate", str(path)], ["run", str(path)]):
        assert cli.main(command) == 2
        message = capsys.readouterr().err.replace("\n", "")
        assert str(path.name) in message and field in message, message
    assert not (tmp_path / "runs").exists(), "nothing may start before the spec validates"


def test_missing_spec_file_exits_2(tmp_path, capsys):
    assert cli.main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "no such spec file" in capsys.readouterr().err


def test_missing_dataset_root_warns_on_validate_and_fails_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "cifar.yaml"
    path.write_text("name: c\nbase: {data: {dataset: cifar10, root: /nonexistent/data}, "
                    "model: {name: simple_cnn}}\n")
    assert cli.main(["validate", str(path)]) == 0
    assert "/nonexistent/data" in capsys.readouterr().err
    assert cli.main(["run", str(path)]) == 2
    assert "/nonexistent/data" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "ray").exists()


def test_only_name_is_required_and_defaults_are_sensible():
    spec = parse_spec({"name": "defaults"})
    assert spec.search.kind == "grid" and spec.scheduler.kind == "fifo"
    assert spec.seeds == [0] and spec.resources.cpus_per_trial == 1 and spec.conjectures == []
    (trial,) = spec.trials()
    probes = trial.probes          # the product's default measurement
    assert probes.hessian and probes.gradcov and probes.stiffness and probes.schedule.kind == "log"


def test_grid_expands_to_cartesian_product_times_seeds(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(textwrap.dedent(GOOD))
    spec = load_spec(path)
    trials = spec.trials()
    assert len(trials) == 2 * 2 * 2 == spec.n_trials()
    combos = {(t.optim.lr, t.train.batch_size, t.seed) for t in trials}
    assert combos == {(lr, b, s) for lr in (0.01, 0.1) for b in (32, 128) for s in (0, 1)}
    names = [trial_name(t) for t in trials]
    assert len(set(names)) == len(names)
    assert names == [trial_name(t) for t in load_spec(path).trials()], "names are deterministic"
    # seeds share a run hash: the hash addresses the config, the seed is a replicate
    assert len({t.run_hash() for t in trials}) == 4


def test_smoke_shrinks_the_sweep(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(textwrap.dedent(GOOD))
    small = smoke(load_spec(path))
    (t, *_) = small.trials()
    assert t.train.epochs == 1 and t.data.train_size == 500 and small.seeds == [0]
    assert len(small.trials()) == 4


def test_spec_errors_are_spec_errors():
    with pytest.raises(SpecError, match="grid.optim.lr"):
        parse_spec({"name": "x", "grid": {"optim.lr": [0.1, 0.0]}})


@pytest.mark.parametrize("spec_file", sorted((Path(__file__).parents[1] / "sweeps" / "specs").glob("*.yaml")))
def test_shipped_specs_validate(spec_file):
    load_spec(spec_file)


def _smoke_by_field_names(spec):
    """`smoke` as it was when it named each field (before the config sections
    declared their own rules): the reference the declared rules must match."""
    from dynamics_core.config import TrialConfig, flatten, unflatten

    shrink = {"pruning.levels": lambda v: min(v, 2), "pruning.rewind_step": lambda v: min(v, 2),
              "optim.schedule.restart_epoch": lambda v: min(v, 1)}

    def small(path, value):
        return shrink[path](value) if path in shrink and isinstance(value, int) else value

    flat = flatten(spec.base.model_dump(mode="json"))
    flat.update({"train.epochs": 1, "data.train_size": 500, "data.test_size": 200,
                 "probes.probe_size": 64, "probes.val_probe_size": 32,
                 "probes.schedule.points": 4, "probes.gradcov_minibatch": 16,
                 "probes.gradcov_mb_size": 16})
    if flat.get("optim.schedule.stage1_epochs"):
        flat["optim.schedule.stage1_epochs"] = 0
    if flat.get("optim.schedule.noise_off_epoch") is not None:
        flat["optim.schedule.noise_off_epoch"] = 0
    if flat.get("data.deficit.kind", "none") != "none":
        flat["data.deficit.start_epoch"], flat["data.deficit.end_epoch"] = 0, 1
    flat = {p: small(p, v) for p, v in flat.items()}
    grid = {p: list(dict.fromkeys(small(p, x) for x in v))[:2] for p, v in spec.grid.items()
            if p not in ("train.epochs", "optim.schedule.stage1_epochs")}
    variants = [{p: (0 if p in ("optim.schedule.stage1_epochs", "optim.schedule.noise_off_epoch")
                     and v is not None else small(p, v))
                 for p, v in variant.items() if p != "train.epochs"} for variant in spec.variants]
    variants = [v for i, v in enumerate(variants) if v not in variants[:i]]
    search = spec.search.model_copy(update={"num_samples": min(2, spec.search.num_samples)})
    return spec.model_copy(update={"base": TrialConfig.model_validate(unflatten(flat)), "grid": grid,
                                   "variants": variants, "seeds": spec.seeds[:1], "search": search})


EDGES_BASE = """
name: edges
base:
  data: {deficit: {kind: blur, start_epoch: 2, end_epoch: 5}}
  model: {preact_noise: 0.1}
  optim: {schedule: {kind: two_stage, stage1_epochs: 3, lr2: 0.01, noise_off_epoch: 4}}
  train: {epochs: 8}
  pruning: {levels: 4, rewind_step: 7}
seeds: [0, 1, 2]
"""
EDGES = {"grid": """
grid:
  pruning.levels: [3, 5, 1]
  optim.schedule.noise_off_epoch: [2, 6]
  train.epochs: [4, 8]
  optim.schedule.stage1_epochs: [1, 2]
""", "variants": """
variants:
  - {train.epochs: 6, pruning.rewind_step: 9, optim.schedule.stage1_epochs: 2}
  - {train.epochs: 7, pruning.rewind_step: 11, optim.schedule.stage1_epochs: 4, optim.schedule.noise_off_epoch: 5}
"""}


@pytest.mark.parametrize("spec_file", sorted((Path(__file__).parents[1] / "sweeps" / "specs").glob("*.yaml"))
                         + list(EDGES))
def test_smoke_by_declared_rules_is_the_smoke_by_field_names(spec_file, tmp_path):
    """Each config section declares how --smoke shrinks it (`config.Smoke`);
    the result is the spec the field-naming `smoke` made, for every shipped
    spec and for one that sweeps the fields with rules for swept values."""
    if spec_file in EDGES:
        text, spec_file = EDGES_BASE + EDGES[spec_file], tmp_path / "edges.yaml"
        spec_file.write_text(text)
    spec = load_spec(spec_file)
    new, old = smoke(spec), _smoke_by_field_names(spec)
    assert new.model_dump(mode="json") == old.model_dump(mode="json")
    assert [t.run_hash() for t in new.trials()] == [t.run_hash() for t in old.trials()]
