"""The sweep progress line: each trial's own epoch budget in the ETA."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sweeps.runner import Progress
from sweeps.trial import TRIAL_KEY

BASE = {"train": {"epochs": 96, "batch_size": 32, "max_steps": 3000}}


@dataclass
class FakeTrial:
    name: str
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "RUNNING"

    def __str__(self) -> str:
        return self.name


def _progress(base=BASE, total=2):
    p = Progress(total, base["train"]["epochs"], base=base)
    p._print = lambda line: None
    return p


def test_max_steps_cut_each_trials_budget():
    # 125 steps per epoch at bs 32, 32 at bs 128: 3000 steps are 24 and 94 epochs
    small = FakeTrial("bs=32", {TRIAL_KEY: {"train.batch_size": 32}})
    large = FakeTrial("bs=128", {TRIAL_KEY: {"train.batch_size": 128}})
    p = _progress()
    p.on_trial_result(0, [small, large], small, {"epoch": 1.0, "step": 125.0})
    p.on_trial_result(0, [small, large], large, {"epoch": 2.0, "step": 64.0})
    text, _ = p._eta([small, large])
    assert text == "3/118 epochs, "          # 24 + ceil(3000 / 32) = 24 + 94


def test_without_base_or_max_steps_the_spec_epochs_count():
    a, b = FakeTrial("a"), FakeTrial("b")
    p = Progress(3, 10)
    p._print = lambda line: None
    p.on_trial_result(0, [a, b], a, {"epoch": 4.0, "step": 40.0})
    assert p._eta([a, b])[0] == "4/30 epochs, "       # the third trial is not seen yet
    no_cut = _progress({"train": {"epochs": 10, "batch_size": 32}}, total=1)
    no_cut.on_trial_result(0, [a], a, {"epoch": 1.0, "step": 125.0})
    assert no_cut._eta([a])[0] == "1/10 epochs, "


def test_a_trial_that_ended_early_needs_no_more_epochs():
    a = FakeTrial("a", {TRIAL_KEY: {"train.batch_size": 32}})
    p = _progress(total=1)
    p.on_trial_result(0, [a], a, {"epoch": 5.0, "step": 625.0})
    a.status = "TERMINATED"                            # e.g. ASHA stopped it at epoch 5
    assert p._eta([a])[0] == "5/5 epochs, "


def test_progress_survives_pickling_with_its_base():
    import pickle

    p = pickle.loads(pickle.dumps(_progress()))
    assert p.base == BASE and p.total == 2 and p.epochs == 96


def test_a_pack_counts_its_members_shared_budget():
    from sweeps.packs import PACK_KEY

    members = [{"name": f"lr={lr}", "overrides": {"optim.lr": lr, "train.batch_size": 128}} for lr in (0.1, 0.2)]
    pack = FakeTrial("pack0-lr=0.1", {PACK_KEY: {"name": "pack0-lr=0.1", "members": members}})
    p = _progress(total=1)
    p.on_trial_result(0, [pack], pack, {"epoch": 1.0, "step": 32.0})
    assert p._eta([pack])[0] == "1/94 epochs, "
