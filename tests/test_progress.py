"""The sweep progress line: each trial's own epoch budget in the ETA."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sweeps.tune.progress import Progress
from sweeps.context import TRIAL_KEY

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
    from sweeps.context import PACK_KEY

    members = [{"name": f"lr={lr}", "overrides": {"optim.lr": lr, "train.batch_size": 128}} for lr in (0.1, 0.2)]
    pack = FakeTrial("pack0-lr=0.1", {PACK_KEY: {"name": "pack0-lr=0.1", "members": members}})
    p = _progress(total=1)
    p.on_trial_result(0, [pack], pack, {"epoch": 1.0, "step": 32.0})
    assert p._eta([pack])[0] == "1/94 epochs, "



def test_a_pack_of_members_of_their_own_length_plans_its_longest():
    from sweeps.context import PACK_KEY

    members = [{"name": f"ep={e}", "overrides": {"train.epochs": e}} for e in (3, 7, 5)]
    pack = FakeTrial("pack0-ep=3", {PACK_KEY: {"name": "pack0-ep=3", "members": members}})
    p = _progress(total=1)
    p.on_trial_result(0, [pack], pack, {"epoch": 1.0, "step": 32.0})
    assert p._eta([pack])[0] == "1/7 epochs, "


def _failed_trial(tmp_path, error: BaseException, checkpoint: str | None, epoch: float | None = None):
    """A trial as Tune hands it to `on_trial_recover`: its error pickled beside it."""
    import cloudpickle
    from types import SimpleNamespace

    (tmp_path / "error.pkl").write_bytes(cloudpickle.dumps(error))
    latest = None if checkpoint is None else SimpleNamespace(
        checkpoint=SimpleNamespace(path=f"/runs/ray/sw/s0/{checkpoint}"), metrics={"epoch": epoch})
    trial = FakeTrial("s0")
    trial.pickled_error_file = str(tmp_path / "error.pkl")
    trial.max_failures = 2
    trial.run_metadata = SimpleNamespace(num_failures=1,
                                         checkpoint_manager=SimpleNamespace(latest_checkpoint_result=latest))
    return trial


def test_a_retried_trial_says_why_from_where_and_which_retry(tmp_path):
    lines = []
    p = _progress(total=1)
    p._print = lines.append
    trial = _failed_trial(tmp_path, ValueError("Traceback …\nloss is nan at [step 3]"), "checkpoint_000002", 3.0)
    p.on_trial_recover(0, [trial], trial)
    # the message's last line, escaped: rich prints `[step 3]` and takes it for no markup
    assert lines[-1].endswith("s0 failed (ValueError: loss is nan at \\[step 3]); retrying from "
                              "checkpoint_000002 (epoch 3) (retry 1 of 2)[/yellow]")
    fresh = _failed_trial(tmp_path, RuntimeError("boom"), None)
    p.on_trial_recover(0, [fresh], fresh)
    assert "retrying from its start (no checkpoint yet) (retry 1 of 2)" in lines[-1]


def test_the_progress_line_shows_the_probes_headline_columns():
    import pickle

    a = FakeTrial("a")
    lines = []
    p = Progress(1, 10, every_s=0.0, columns=(("hessian/top", "λ_H¹"), ("toy/top", "toy¹")))
    p._print = lines.append
    p.on_trial_result(0, [a], a, {"epoch": 1.0, "step": 10.0, "val/acc": 0.5, "hessian/top": 12.345,
                                  "gradcov/top": 3.0, "toy/top": 2.0})
    assert lines[-1].endswith("a epoch 1 val/acc 0.5 λ_H¹ 12.3 toy¹ 2")     # gradcov/top: not a column
    assert pickle.loads(pickle.dumps(p)).columns == p.columns
    bare = Progress(1, 10, every_s=0.0)          # pickled before the columns existed: val/acc alone
    bare.__setstate__({"total": 1, "epochs": 10, "every_s": 0.0})
    bare._print = lines.append
    bare.on_trial_result(0, [a], a, {"epoch": 1.0, "step": 10.0, "val/acc": 0.5, "hessian/top": 1.0})
    assert lines[-1].endswith("a epoch 1 val/acc 0.5")
