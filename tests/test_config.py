"""TrialConfig: unknown keys and bad values name their field, frozen objects,
content-addressed run hashes (golden values), flat()/unflatten round trip."""
import hashlib

from typing import get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

from dynamics_core.config import (HASH_EXCLUDED, DeficitConfig, TrialConfig, flatten,
                                  non_default_fields, unflatten)


def cfg(**tree) -> TrialConfig:
    return TrialConfig.model_validate(tree)


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("tree, loc", [
    ({"optim": {"lrr": 0.1}}, ("optim", "lrr")),
    ({"optim": {"schedule": {"kindd": "step"}}}, ("optim", "schedule", "kindd")),
    ({"data": {"deficit": {"strat_epoch": 1}}}, ("data", "deficit", "strat_epoch")),
    ({"tran": {"epochs": 3}}, ("tran",)),
])
def test_unknown_key_is_an_error_naming_its_path(tree, loc):
    with pytest.raises(ValidationError) as err:
        TrialConfig.model_validate(tree)
    errors = err.value.errors()
    assert [e["loc"] for e in errors] == [loc]
    assert errors[0]["type"] == "extra_forbidden"
    assert ".".join(loc) in str(err.value)


@pytest.mark.parametrize("tree, loc", [
    ({"optim": {"lr": -0.1}}, ("optim", "lr")),
    ({"optim": {"momentum": 1.0}}, ("optim", "momentum")),
    ({"model": {"name": "vgg"}}, ("model", "name")),
    ({"data": {"label_noise": 1.5}}, ("data", "label_noise")),
    ({"train": {"epochs": 0}}, ("train", "epochs")),
    ({"probes": {"schedule": {"kind": "cosine"}}}, ("probes", "schedule", "kind")),
])
def test_bad_value_names_its_field(tree, loc):
    with pytest.raises(ValidationError) as err:
        TrialConfig.model_validate(tree)
    assert [e["loc"] for e in err.value.errors()] == [loc]


def _leaves(model, prefix: str = ""):
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _leaves(field.annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field.annotation


def _numeric(annotation) -> bool:
    return annotation in (int, float) or any(_numeric(a) for a in get_args(annotation))


def test_every_numeric_field_refuses_booleans_and_strings():
    """No number field takes a bool (YAML's yes/true/on) or a string ("0.1"),
    whatever its kind: int, float, optional, tuple element; found by type, so
    a new field declared `int` instead of `Int` fails here."""
    numeric = {path: ann for path, ann in _leaves(TrialConfig) if _numeric(ann)}
    assert {"train.epochs", "optim.lr", "train.max_steps", "optim.schedule.lr2", "optim.betas",
            "probes.frequency_widths", "probes.schedule.steps", "seed"} <= set(numeric)
    for path, annotation in numeric.items():
        for bad in (True, "1"):
            value = [bad] * len(get_args(annotation)) if get_origin(annotation) is tuple else bad
            with pytest.raises(ValidationError, match="Input should be a number, not the") as err:
                TrialConfig.model_validate(unflatten({path: value}))
            assert ".".join(map(str, err.value.errors()[0]["loc"])).startswith(path), path


def test_numbers_still_come_as_numbers_of_any_kind():
    """Ints where floats go (kept as floats, so hashes do not change), whole
    numbers from numpy (Tune's samplers), None for optional fields."""
    import numpy as np

    c = cfg(optim={"lr": 1, "schedule": {"lr2": None}}, train={"epochs": np.int64(3)}, seed=np.int64(2))
    assert c.optim.lr == 1.0 and isinstance(c.optim.lr, float) and c.train.epochs == 3 and c.seed == 2
    assert cfg(optim={"lr": 1}).run_hash() == cfg(optim={"lr": 1.0}).run_hash()


def test_deficit_window_must_be_nonempty():
    with pytest.raises(ValidationError, match="end_epoch must be greater"):
        DeficitConfig(kind="blur", start_epoch=3, end_epoch=3)
    assert DeficitConfig(kind="none", start_epoch=3, end_epoch=0).kind == "none"
    assert DeficitConfig(kind="blur", start_epoch=0, end_epoch=1).end_epoch == 1


def test_configs_are_frozen():
    c = cfg(optim={"lr": 0.05})
    with pytest.raises(ValidationError):
        c.seed = 3
    with pytest.raises(ValidationError):
        c.optim.lr = 0.2
    with pytest.raises(ValidationError):
        c.optim.schedule.kind = "step"
    assert c.optim.lr == 0.05 and c.seed == 0
    assert hash(c) == hash(cfg(optim={"lr": 0.05}))    # frozen models are hashable


def test_real_lists_not_comma_strings():
    c = cfg(optim={"schedule": {"milestones": [0.3, 0.6, 0.9]}}, probes={"schedule": {"steps": [0, 5]}})
    assert c.optim.schedule.milestones == (0.3, 0.6, 0.9)
    assert c.probes.schedule.steps == (0, 5)
    with pytest.raises(ValidationError):
        cfg(optim={"schedule": {"milestones": "0.3,0.6"}})


# -------------------------------------------------------------------- run hash
GOLDEN = {
    # A golden-hash regression test: if one of these changes, every stored run's
    # address changed with it (adding a field with a default must not do that).
    "default": "44136fa355b3678a",
    "lr0.05": "d618c49b2fc62539",
    "cnn1d_step": "2229208bb8978a19",
}


def test_run_hash_golden_values():
    assert TrialConfig().run_hash() == GOLDEN["default"]
    # the default config has no non-default fields: the hash of "{}"
    assert GOLDEN["default"] == hashlib.sha256(b"{}").hexdigest()[:16]
    assert cfg(optim={"lr": 0.05}).run_hash() == GOLDEN["lr0.05"]
    assert cfg(optim={"lr": 0.05, "schedule": {"kind": "step", "milestones": [0.5, 0.75]}},
               model={"name": "cnn1d", "width": 25}).run_hash() == GOLDEN["cnn1d_step"]


def test_run_hash_is_of_non_default_fields_only():
    # spelling a default out changes nothing; key order changes nothing
    assert cfg(optim={"lr": 0.1, "momentum": 0.0}, train={"epochs": 5}).run_hash() == GOLDEN["default"]
    a = TrialConfig.model_validate({"optim": {"lr": 0.05, "momentum": 0.9}, "model": {"width": 32}})
    b = TrialConfig.model_validate({"model": {"width": 32}, "optim": {"momentum": 0.9, "lr": 0.05}})
    assert a.run_hash() == b.run_hash()
    assert non_default_fields(a) == {"optim": {"lr": 0.05, "momentum": 0.9}, "model": {"width": 32}}


def test_run_hash_ignores_seed_and_environment_fields():
    base = cfg(optim={"lr": 0.05})
    for tree in ({"seed": 7}, {"data": {"root": "/somewhere"}}, {"data": {"download": True}},
                 {"train": {"device": "cuda:1"}}):
        merged = {"optim": {"lr": 0.05}, **tree}
        assert cfg(**merged).run_hash() == base.run_hash() == GOLDEN["lr0.05"], tree
    assert HASH_EXCLUDED == {"seed", "data.root", "data.download", "train.device"}


@pytest.mark.parametrize("tree", [
    {"data": {"data_seed": 1}}, {"model": {"init_seed": 0}}, {"optim": {"lr": 0.1000001}},
    {"train": {"epochs": 6}}, {"probes": {"hessian": False}}, {"data": {"deficit": {"kind": "blur", "end_epoch": 2}}},
    {"optim": {"schedule": {"milestones": [0.5]}}},
])
def test_run_hash_changes_with_what_is_computed(tree):
    assert cfg(**tree).run_hash() != GOLDEN["default"]


def test_distinct_configs_get_distinct_hashes():
    hashes = {cfg(optim={"lr": lr}, seed=s).run_hash() for lr in (0.01, 0.02, 0.05, 0.1, 0.2) for s in (0, 1)}
    assert len(hashes) == 5


# --------------------------------------------------------------------- flat()
def test_flat_unflatten_round_trip():
    c = cfg(optim={"lr": 0.05, "schedule": {"kind": "step", "milestones": [0.3, 0.9]}},
            data={"deficit": {"kind": "blur", "start_epoch": 1, "end_epoch": 3}, "root": "/d"},
            probes={"schedule": {"kind": "steps", "steps": [0, 4, 9]}}, seed=3)
    flat = c.flat()
    assert flat["optim.lr"] == 0.05
    assert flat["optim.schedule.kind"] == "step"
    assert flat["data.deficit.end_epoch"] == 3
    assert flat["seed"] == 3
    assert all(not isinstance(v, dict) for v in flat.values())
    assert len(flat) == len(TrialConfig().flat())
    back = TrialConfig.model_validate(unflatten(flat))
    assert back == c
    assert back.run_hash() == c.run_hash()
    assert flatten(unflatten(flat)) == flat
