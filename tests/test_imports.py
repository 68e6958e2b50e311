"""`dynsweep validate`, `list` and `status` import neither Ray nor torch.

Each command runs in a fresh interpreter, which then says what it loaded:
they read a spec, a storage folder and Tune's saved state as plain files.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_sweeps import _env, cli, uri, write_spec

SPECS = Path(__file__).parents[1] / "sweeps" / "specs"

LOADED = """
import json, sys
from sweeps import cli
code = cli.main(json.loads(sys.argv[1]))
print(json.dumps({"code": code, "ray": "ray" in sys.modules, "torch": "torch" in sys.modules}))
"""


def loaded(argv: list[str], cwd: Path) -> dict:
    """`dynsweep ARGV` in a fresh interpreter: its exit code, and whether it imported ray and torch."""
    res = subprocess.run([sys.executable, "-c", LOADED, json.dumps(argv)], cwd=cwd, capture_output=True,
                         text=True, timeout=120, env=_env(cwd))
    assert res.returncode == 0, res.stderr[-3000:]
    return {**json.loads(res.stdout.strip().splitlines()[-1]), "stdout": res.stdout}


@pytest.mark.parametrize("spec", ["quickstart.yaml", "breakeven-cifar.yaml", "stiffness_stopper.yaml"])
def test_validate_imports_neither_ray_nor_torch(spec, tmp_path):
    got = loaded(["validate", str(SPECS / spec)], tmp_path)
    assert got["code"] == 0 and "valid" in got["stdout"]
    assert (got["ray"], got["torch"]) == (False, False)


def test_validate_of_a_packed_spec_imports_neither_ray_nor_torch(tmp_path):
    spec = write_spec(tmp_path, "packed", grid={"optim.lr": [0.05, 0.1]}, resources={"pack": 2})
    got = loaded(["validate", str(spec)], tmp_path)
    assert got["code"] == 0 and "1 pack(s)" in got["stdout"]
    assert (got["ray"], got["torch"]) == (False, False)


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> Path:
    """One tiny sweep run to its end (two one-epoch trials): its folder and store."""
    root = tmp_path_factory.mktemp("finished")
    spec = write_spec(root, "tiny", grid={"optim.lr": [0.05, 0.1]},
                      base={"data": {"dataset": "mnist1d", "train_size": 200, "test_size": 100},
                            "model": {"name": "mlp", "width": 8}, "train": {"epochs": 1, "batch_size": 50},
                            "probes": {"probe_size": 16, "val_probe_size": 8,
                                       "schedule": {"kind": "log", "points": 2}}})
    res = cli(["run", str(spec), "--storage", str(root / "ray"), "--tracking-uri", uri(root)], root)
    assert res.returncode == 0, res.stderr[-3000:]
    return root


@pytest.mark.slow
def test_list_imports_neither_ray_nor_torch(finished_sweep):
    got = loaded(["list", "--storage", str(finished_sweep / "ray")], finished_sweep)
    assert got["code"] == 0 and "tiny" in got["stdout"]
    assert (got["ray"], got["torch"]) == (False, False)


@pytest.mark.slow
def test_status_imports_neither_ray_nor_torch(finished_sweep):
    got = loaded(["status", "tiny", "--storage", str(finished_sweep / "ray")], finished_sweep)
    assert got["code"] == 0 and got["stdout"].count("TERMINATED") == 2
    assert "lr=0.05,s0" in got["stdout"] and "finished" in got["stdout"]
    assert (got["ray"], got["torch"]) == (False, False)


@pytest.mark.slow
def test_status_shows_the_headline_columns_the_probes_declared(finished_sweep):
    """The driver records the probes' headline columns in the manifest at launch;
    status reads them back (no torch); a manifest without them (a sweep stored
    before) gives the generic columns only."""
    from dataclasses import replace

    from sweeps.status import status_rows
    from sweeps.storage import read_manifest

    exp = str(finished_sweep / "ray" / "tiny")
    _, ctx = read_manifest(exp, uri(finished_sweep))
    assert ctx.columns == (("hessian/top", "λ_H¹"), ("gradcov/top", "λ_K¹"))
    rows = status_rows(exp, ctx)
    assert len(rows) == 2 and all(list(r)[-3:] == ["λ_H¹", "λ_K¹", "mlflow run"] for r in rows)
    assert all(isinstance(r["λ_H¹"], float) and isinstance(r["λ_K¹"], float) for r in rows)
    old = status_rows(exp, replace(ctx, columns=()))
    assert all("λ_H¹" not in r and list(r)[-1] == "mlflow run" for r in old)
