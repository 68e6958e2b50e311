"""The hook plugin points: probes from the registry (a plugin adds one
without editing dynamics_core), one shared per-step cache, a training hook
under its contract, process-wide settings restored, secure checkpoints."""
import importlib
import io
import textwrap

import pytest
import torch

from dynamics_core import measure, probes
from dynamics_core import train as train_module
from dynamics_core.config import ProbesConfig, TrialConfig
from dynamics_core.hooks import Schedule
from dynamics_core.measure import registry
from dynamics_core.sink import MemorySink
from dynamics_core.train import RunEnv, reproducible

pytestmark = pytest.mark.usefixtures("single_thread")

OFF = {f: False for f in measure.flags()}
BASE = {"data": {"train_size": 200, "test_size": 100}, "model": {"width": 16},
        "optim": {"lr": 0.05, "momentum": 0.9}, "train": {"epochs": 2, "batch_size": 50, "device": "cpu"},
        "probes": {**OFF, "probe_size": 16, "val_probe_size": 16, "schedule": {"kind": "every", "every": 2}}}
TOTAL = 8


def trial(probes=None, **over) -> TrialConfig:
    tree = {**BASE, **over, "probes": {**BASE["probes"], **(probes or {})}}
    return TrialConfig.model_validate(tree)


def run(cfg, cache, hooks=measure.default_hooks, **kw):
    sink = MemorySink()
    result = train_module.run(cfg, sink, RunEnv(cache_dir=cache), hooks=hooks, **kw)
    return result, sink


@pytest.fixture
def clean_registry(monkeypatch):
    """Probes registered by a test vanish after it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


# ------------------------------------------------------------------ registry
def test_every_flag_has_a_probe_and_a_true_flag_runs_it(mnist1d_cache):
    assert measure.flags() == ["hessian", "hessian_trace", "gradcov", "stiffness", "fisher",
                               "frequency", "timeline", "snapshots", "gradcov_mb", "sgd_noise"]
    assert set(measure.flags()) <= set(measure.names())
    cfg = trial({"timeline": True})
    assert [h.name for h in measure.default_hooks(cfg, _data(cfg, mnist1d_cache))] == \
        ["probes.loss", "probes.timeline"]
    assert measure.default_hooks(trial(), _data(cfg, mnist1d_cache)) == []   # nothing on: no probe set


def test_a_flag_without_probe_is_an_error_not_silence(clean_registry, mnist1d_cache):
    del registry._REGISTRY["fisher"]
    with pytest.raises(RuntimeError, match="fisher"):
        measure.enabled(ProbesConfig())


def test_registry_errors_name_the_valid_choices(clean_registry):
    with pytest.raises(KeyError, match="valid: fisher, frequency, gradcov"):
        measure.get("nope")
    with pytest.raises(KeyError, match="unknown probe 'nope'"):
        measure.enabled(ProbesConfig(extra=("nope",)))
    with pytest.raises(ValueError, match="ProbesConfig field"):
        measure.enabled(ProbesConfig(extra=("hessian",)))
    with pytest.raises(ValueError, match="not a flag"):
        measure.register_probe("probe_size", lambda cfg, ps: None)
    with pytest.raises(ValueError, match="already registered"):
        measure.register_probe("hessian", lambda cfg, ps: None)


class ToyProbe:
    """A plugin probe: the probe-set loss times two, from the shared round."""

    name = "toy"

    def __init__(self, cfg, probe_set):
        self.probes = probe_set
        self.schedule = measure.probe_schedule(cfg)

    def __call__(self, ctx):
        return {"toy/grad_rows": float(self.probes.at(ctx).grads.shape[0])}


def test_a_plugin_probe_runs_through_the_public_plugin_point(clean_registry, mnist1d_cache):
    measure.register_probe("toy", ToyProbe)
    _, sink = run(trial({"extra": ["toy"]}), mnist1d_cache)
    assert sink.series("toy/grad_rows") == [(s, 16.0) for s in range(0, TOTAL + 1, 2)]
    assert [s for s, _ in sink.series("probe/loss")] == list(range(0, TOTAL + 1, 2))


def test_a_plugin_module_registers_its_probe_on_import(clean_registry, mnist1d_cache,
                                                       tmp_path, monkeypatch):
    (tmp_path / "toy_plugin_mod.py").write_text(textwrap.dedent('''
        from dynamics_core.measure import probe_schedule, register_probe

        class Norm:
            name = "weight_norm"
            def __init__(self, cfg, probe_set):
                self.schedule = probe_schedule(cfg)
            def __call__(self, ctx):
                return {"weight_norm/total": float(sum(p.detach().norm() ** 2 for p in ctx.model.parameters()))}

        register_probe("weight_norm", Norm)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = trial({"extra": ["weight_norm"]})
    with pytest.raises(KeyError, match="unknown probe 'weight_norm'"):
        run(cfg, mnist1d_cache)
    importlib.import_module("toy_plugin_mod")     # what a spec's `plugins:` does in each trial process
    _, sink = run(cfg, mnist1d_cache)
    assert [s for s, _ in sink.series("weight_norm/total")] == list(range(0, TOTAL + 1, 2))


def test_the_probes_share_one_gradient_computation_per_step(mnist1d_cache, monkeypatch):
    calls = []

    def counting(real):
        def wrapped(model, loss_fn, inputs, targets, **kw):
            calls.append((real.__name__, len(inputs)))
            return real(model, loss_fn, inputs, targets, **kw)
        return wrapped

    for name in ("per_example_gradients", "per_example_gram"):
        monkeypatch.setattr(probes, name, counting(getattr(probes, name)))
    cfg = trial({"gradcov": True, "stiffness": True, "timeline": True})
    _, sink = run(cfg, mnist1d_cache)
    steps = [s for s, _ in sink.series("gradcov/top")]
    assert steps == list(range(0, TOTAL + 1, 2))
    assert len(sink.series("stiffness/train_val/cos")) == len(sink.series("timeline/grad_norm")) == len(steps)
    # one Gram over the train and validation probe sets (16 + 16) per step, for K, stiffness and timeline
    assert calls == [("per_example_gram", 32)] * len(steps)


def _data(cfg, cache):
    from dynamics_core.data import load
    return load(cfg.data, torch.device("cpu"), cache)


# ------------------------------------------------------------ training hooks
class KeepZero:
    """Zeroes a fixed half of the output weights after every optimizer step."""

    name = "keep_zero"
    changes_training = True

    def __init__(self):
        self.schedule = Schedule(kind="every", every=1)
        self.mask: torch.Tensor | None = None
        self.started = 0

    def start(self, ctx):
        self.started += 1

    def state_dict(self):
        return {"mask": self.mask}

    def load_state_dict(self, state):
        self.mask = state["mask"]

    def __call__(self, ctx):
        w = ctx.model.out.weight
        if self.mask is None:
            self.mask = (torch.arange(w.numel()) % 2).reshape(w.shape).float()
        w.mul_(self.mask)
        return {"keep_zero/nonzero": float((w != 0).sum())}


def test_a_training_hook_changes_training_and_probes_see_it(mnist1d_cache):
    cfg = trial({"snapshots": True})
    hook = KeepZero()
    _, masked = run(cfg, mnist1d_cache, hooks=lambda c, d: [*measure.default_hooks(c, d), hook])
    _, plain = run(cfg, mnist1d_cache)
    assert hook.started == 1
    assert [s for s, _ in masked.series("keep_zero/nonzero")] == list(range(TOTAL + 1))
    final = masked.checkpoints[-1][3]
    w = final["model"]["out.weight"]
    assert torch.all(w[final["hooks"]["keep_zero"]["mask"] == 0] == 0)
    assert not torch.equal(w, plain.checkpoints[-1][3]["model"]["out.weight"])
    # probes run after the training hook: the snapshot at every step holds the zeros
    n_out = w.numel()
    for step, name, flat in masked.artifacts:
        assert (flat[-n_out - 10:-10].reshape(w.shape)[final["hooks"]["keep_zero"]["mask"] == 0] == 0).all(), step


def test_a_training_hook_resumes_bitwise(mnist1d_cache):
    cfg = trial()
    _, full = run(cfg, mnist1d_cache, hooks=[KeepZero()])
    state = full.checkpoints[0][3]
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    again = KeepZero()
    _, resumed = run(cfg, mnist1d_cache, hooks=[again], resume=torch.load(buf, weights_only=True))
    assert again.started == 1 and again.mask is not None
    assert reproducible(resumed.metrics) == reproducible([m for m in full.metrics if m[0] > state["step"]])
    a, b = full.checkpoints[-1][3], resumed.checkpoints[-1][3]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_hook_names_must_be_unique(mnist1d_cache):
    with pytest.raises(ValueError, match="keep_zero"):
        run(trial(), mnist1d_cache, hooks=[KeepZero(), KeepZero()])


# ------------------------------------------------- process-wide torch settings
class Witness:
    name = "witness"
    schedule = Schedule(kind="steps", steps=(0,))

    def __init__(self):
        self.seen = None

    def __call__(self, ctx):
        self.seen = torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("deterministic", [True, False])
def test_process_settings_are_per_trial_and_restored(mnist1d_cache, deterministic):
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    torch.use_deterministic_algorithms(not deterministic)      # a worker left in the other state
    try:
        w = Witness()
        run(trial(train={**BASE["train"], "deterministic": deterministic}), mnist1d_cache, hooks=[w])
        assert w.seen is deterministic                         # set for the trial ...
        assert torch.are_deterministic_algorithms_enabled() is (not deterministic)   # ... and undone

        class Boom(Witness):
            def __call__(self, ctx):
                torch.set_num_threads(3)
                raise RuntimeError("boom")

        threads = torch.get_num_threads()
        with pytest.raises(RuntimeError, match="boom"):
            run(trial(train={**BASE["train"], "deterministic": deterministic}), mnist1d_cache, hooks=[Boom()])
        assert torch.are_deterministic_algorithms_enabled() is (not deterministic)   # also after an error
        assert torch.get_num_threads() == threads
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.set_num_threads(before[1])


# ------------------------------------------------------------ checkpoints
def test_checkpoints_hold_only_weights_only_types(mnist1d_cache, tmp_path):
    cfg = trial({"hessian": True, "timeline": True}, model={"width": 16, "dropout": 0.3})
    _, sink = run(cfg, mnist1d_cache)
    state = sink.checkpoints[0][3]
    torch.save(state, tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=True)
    assert loaded["hooks"]["probes.hessian"]["v0"] is not None
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    _, resumed = run(cfg, mnist1d_cache, resume=loaded)
    assert reproducible(resumed.summary) == reproducible(sink.summary)


def test_the_sweeps_trial_loads_checkpoints_weights_only(mnist1d_cache, tmp_path, monkeypatch):
    from sweeps import trial as sweeps_trial

    cfg = trial({"hessian": True}, model={"width": 16, "dropout": 0.3})
    _, sink = run(cfg, mnist1d_cache)
    torch.save(sink.checkpoints[0][3], tmp_path / sweeps_trial.STATE_FILE)
    (tmp_path / sweeps_trial.RUN_IDS_FILE).write_text('{"t0": "abc"}')
    seen = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: seen.append(kw) or real_load(*a, **kw))
    state, run_ids = sweeps_trial.load_checkpoint(str(tmp_path))
    assert run_ids == {"t0": "abc"} and seen == [{"weights_only": True}]
    assert state["step"] == sink.checkpoints[0][0]


def test_stiffness_and_frequency_outputs_each_probe_step(mnist1d_cache):
    """What the stiffness and frequency experiments read: ξ and the
    distance-binned artifact (3, bins), the class matrices as (2, C, C)
    arrays (stored as .npy), e_low/e_high per kernel width and the tracked
    frequencies, at every probe step."""
    import numpy as np
    cfg = trial({"stiffness": True, "frequency": True, "stiffness_bins": 4,
                 "frequency_widths": [1.0, 4.0]})
    _, sink = run(cfg, mnist1d_cache)
    steps = list(range(0, TOTAL + 1, 2))
    for key in ("freq/e_low_w0", "freq/e_high_w1", "freq/k0"):
        assert [s for s, _ in sink.series(key)] == steps, key
    assert not sink.series("freq/e_low_w2")
    arts = {}
    for step, name, value in sink.artifacts:
        arts.setdefault(name, []).append((step, value))
    assert set(arts) == {"stiffness_train_train", "stiffness_train_val", "stiffness_val_val",
                         "stiffness_distance"}
    assert all([s for s, _ in v] == steps for v in arts.values())
    assert all(isinstance(a, np.ndarray) and a.shape == (2, 10, 10)
               for name, v in arts.items() if name != "stiffness_distance" for _, a in v)
    assert all(a.shape == (3, 4) for _, a in arts["stiffness_distance"])
    # ξ at every step where the binned within-class sign stiffness reaches 0, only there
    xi = dict(sink.series("stiffness/train_train/xi"))
    assert all(np.isfinite(v) for v in xi.values())
    assert sorted(xi) == [s for s, a in arts["stiffness_distance"] if (a[1] <= 0).any()]
