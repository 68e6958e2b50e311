"""Trial names: the swept values, deterministic, unique, filesystem-safe."""
from __future__ import annotations

from pathlib import Path

from sweeps.spec import load_spec
from sweeps.context import NAME_LIMIT, trial_label, trial_names

SPECS = sorted((Path(__file__).parents[1] / "sweeps" / "specs").glob("*.yaml"))


def test_names_carry_the_swept_values_with_short_aliases():
    assert trial_label({"optim.lr": 0.2, "train.batch_size": 32, "seed": 0}) == "lr=0.2,bs=32,s0"
    assert trial_label({"optim.momentum": 0.9, "model.name": "mlp", "seed": 3}) == "mom=0.9,name=mlp,s3"
    assert trial_label({"optim.schedule.milestones": [0.5, 0.75], "seed": 1}) == "milestones=0.5+0.75,s1"


def test_every_shipped_grid_gets_unique_deterministic_safe_names():
    for path in SPECS:
        spec = load_spec(path)
        names = trial_names(spec.overrides())
        assert len(set(names)) == len(names), path.name
        assert names == trial_names(load_spec(path).overrides()), "deterministic: resume relies on it"
        for name in names:
            assert len(name) <= NAME_LIMIT + 7 and "/" not in name and " " not in name, name


def test_names_that_would_clash_get_a_short_hash():
    swept = [{"optim.schedule.kind": "step", "seed": 0},      # both read kind=step,s0
             {"probes.schedule.kind": "step", "seed": 0},
             {"optim.lr": 0.1, "seed": 0}]
    names = trial_names(swept)
    assert names[2] == "lr=0.1,s0"
    assert names[0] != names[1] and all(n.startswith("kind=step,s0-") for n in names[:2])
