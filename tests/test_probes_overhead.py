"""What probing costs a trial: `time/train_s` and `time/probe_s` are logged at
every epoch end and in the summary, grow, are zero for probes when no probe
runs, continue across a resume, and stay out of the run hash."""
import io

import pytest
import torch

from dynamics_core import train as train_module
from dynamics_core.config import TrialConfig
from dynamics_core.measure import default_hooks
from dynamics_core.sink import MemorySink
from dynamics_core.train import RunEnv, is_wall_clock, reproducible

pytestmark = pytest.mark.usefixtures("single_thread")

PROBES_OFF = {k: False for k in ("hessian", "hessian_trace", "gradcov", "stiffness",
                                 "fisher", "frequency", "timeline")}
BASE = {
    "data": {"train_size": 400, "test_size": 200},
    "model": {"width": 16},
    "train": {"epochs": 3, "batch_size": 64, "device": "cpu"},
    "probes": {"probe_size": 32, "val_probe_size": 16, "schedule": {"points": 5}},
}
KEYS = ("time/train_s", "time/probe_s")


def trial(**over) -> TrialConfig:
    tree = {k: {**v, **over.get(k, {})} for k, v in BASE.items()}
    return TrialConfig.model_validate(tree)


def run(cfg, cache, **kw):
    sink = MemorySink()
    result = train_module.run(cfg, sink, RunEnv(cache_dir=cache), hooks=default_hooks, **kw)
    assert result.status == "finished"
    return sink


def test_train_and_probe_seconds_are_logged_each_epoch_and_in_the_summary(mnist1d_cache):
    sink = run(trial(), mnist1d_cache)
    epochs = [s for s, _ in sink.series("train/epoch")]
    for key in KEYS:
        series = sink.series(key)
        assert [s for s, _ in series] == epochs                       # at each epoch end
        values = [v for _, v in series]
        assert values[0] > 0 and values == sorted(values)             # cumulative
    assert sink.summary["final/time_train_s"] >= sink.series("time/train_s")[-1][1] > 0
    assert sink.summary["final/time_probe_s"] >= sink.series("time/probe_s")[-1][1] > 0
    # a probe round (K, stiffness, λ_H¹ …) costs more than one small SGD step
    rounds = len(sink.series("hessian/top"))
    steps = sink.summary["final/steps"]
    assert sink.summary["final/time_probe_s"] / rounds > sink.summary["final/time_train_s"] / steps


def test_probes_off_cost_no_probe_time(mnist1d_cache):
    sink = run(trial(probes=PROBES_OFF), mnist1d_cache)
    assert not any(k.startswith("probe/") for _, k, _ in sink.metrics)
    assert all(v == 0.0 for _, v in sink.series("time/probe_s")) and sink.series("time/probe_s")
    assert sink.summary["final/time_probe_s"] == 0.0
    assert sink.summary["final/time_train_s"] > 0


def test_times_continue_across_a_resume_and_are_no_part_of_the_hash(mnist1d_cache):
    cfg = trial()
    full = run(cfg, mnist1d_cache)
    step, _, _, state = full.checkpoints[0]
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    train_s, probe_s = loaded["time"]
    assert train_s > 0 and probe_s > 0
    resumed = run(cfg, mnist1d_cache, resume=loaded)
    assert resumed.summary["final/time_train_s"] > train_s
    assert resumed.summary["final/time_probe_s"] > probe_s
    assert resumed.series("time/train_s")[0][1] > train_s             # counts on, not from 0
    # everything but the wall-clock keys is as in the uninterrupted run
    assert reproducible(resumed.summary) == reproducible(full.summary)
    assert is_wall_clock("level/1/final/time_probe_s") and not is_wall_clock("final/train_loss")
    assert not any(is_wall_clock(k) or k.endswith("_s") for k in cfg.flat())   # not in the config or hash
