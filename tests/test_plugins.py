"""Plugin points, used as a user outside the project would: a module named in
a spec's `plugins:` registers an experiment; a real sweep (local Ray, sqlite
MLflow, the real CLI) runs it and `dynsweep conjectures` judges it."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sweeps import tracking
from sweeps.tracking import Store
from test_sweeps import DYNSWEEP, _env, judged_run, uri, write_spec

pytestmark = pytest.mark.slow
PLUGINS = Path(__file__).parent / "plugins"


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The real CLI, with the plugin folder importable (as a user's PYTHONPATH would)."""
    env = _env(cwd)
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), env["PYTHONPATH"]])
    return subprocess.run(DYNSWEEP + args, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_toy_probe_and_experiment_run_in_a_sweep_and_in_conjectures(tmp_path):
    spec = write_spec(tmp_path, "toy", plugins=["toy_plugin"], conjectures=["toy.loss_falls"],
                      grid={"optim.lr": [0.05, 0.1], "probes.extra": [["toy_grad_norm"]]})
    res = cli(["run", str(spec), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri(tmp_path)],
              tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "toy.loss_falls" in res.stdout and "toy_first_last.csv" in res.stdout

    store = Store(uri(tmp_path))
    table = tracking.load_table(store, "toy")
    steps = table.metrics[table.metrics["key"] == "toy/grad_norm"].groupby("run_id")["step"].apply(list)
    probe_steps = table.metrics[table.metrics["key"] == "timeline/grad_norm"].groupby("run_id")["step"].apply(list)
    assert len(steps) == 2 and steps.to_dict() == probe_steps.to_dict()   # on the probe schedule
    # the toy probe (the round's shared gradients) and the built-in timeline
    # (the round's shared float64 Gram) measure the same mean gradient
    both = table.metrics[table.metrics["key"].isin(["toy/grad_norm", "timeline/grad_norm"])]
    pivot = both.pivot_table(index=["run_id", "step"], columns="key", values="value")
    assert np.allclose(pivot["toy/grad_norm"], pivot["timeline/grad_norm"], rtol=1e-5, atol=0)
    # what the toy probe declared: its summary at each trial's end, its column in the manifest
    for run in tracking.trial_runs(store, "toy"):
        series = pivot.loc[run.run_id, "toy/grad_norm"]
        assert run.metrics["toy/grad_norm_max"] == pytest.approx(series.max())
        assert run.metrics["toy/grad_norm_argmax_step"] == series.idxmax()
        assert run.metrics["hessian/top_max"] > 0       # beside the built-in probes' summaries
    from sweeps.storage import MANIFEST
    manifest = json.loads((tmp_path / "ray" / "toy" / MANIFEST).read_text())
    assert manifest["context"]["columns"] == [["hessian/top", "λ_H¹"], ["gradcov/top", "λ_K¹"],
                                              ["toy/grad_norm", "|ḡ|"]]
    _, judged = judged_run(store, "toy")
    files = {a.path for a in store.client.list_artifacts(judged.info.run_id)}
    assert {"toy_first_last.csv", "verdicts.json", "figures"} <= files
    assert judged.data.tags["verdict.toy.loss_falls"] == "supported"

    # a fresh process judges it again: the plugin is loaded from the parent run's tags
    again = cli(["conjectures", "toy", "--json", "--tracking-uri", uri(tmp_path)], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [v["name"] for v in json.loads(again.stdout)["verdicts"]] == ["toy.loss_falls"]
    _, judged = judged_run(store, "toy")
    assert judged.data.tags["dynsweep.judgement_version"] == "2"


def test_a_plugin_that_cannot_be_imported_is_a_spec_error(tmp_path):
    spec = write_spec(tmp_path, "bad", plugins=["no_such_plugin_module"])
    res = cli(["validate", str(spec)], tmp_path)
    assert res.returncode == 2
    assert "plugins[0]" in res.stderr and "no_such_plugin_module" in res.stderr
