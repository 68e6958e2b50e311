"""Training numerics pinned bit for bit: a tiny trial of every model family the
shipped specs use (mlp, cnn1d, simple_cnn, resnet20, allcnn), trained through
`dynamics_core.train.run`, must give exactly the metrics recorded in
`tests/golden/numerics.json` (float64 as float.hex).

A change that moves them changes what every sweep computes: regenerate the
file with `DYNSWEEP_UPDATE_GOLDEN=1 pytest tests/test_golden_numerics.py`, and
in the same change list the docs/results.md sections it makes stale and rerun
them (README, Development).

The trials run in a fresh interpreter with the CPU kernels pinned to one
instruction set (`numerics.PINNED_ENV`; without it an AVX-512 and an AVX2 machine
give different bits) and one thread. The file records the torch and numpy
versions it was made with; the test compares whatever the versions, and a
mismatch names both, since a new torch is the usual cause."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from golden.numerics import FAMILIES, PINNED_ENV

ROOT = Path(__file__).parents[1]
GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDEN = GOLDEN_DIR / "numerics.json"
UPDATE_ENV = "DYNSWEEP_UPDATE_GOLDEN"


def _train(cache_dir: str, image_root: Path) -> dict:
    env = {**os.environ, **PINNED_ENV, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(GOLDEN_DIR / "numerics.py"), cache_dir,
                           str(image_root)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_every_family_trains_to_the_recorded_bits(mnist1d_cache, tmp_path):
    got = _train(mnist1d_cache, tmp_path)
    assert got["cpu_capability"] == "DEFAULT", "the pinned kernels did not take effect"
    assert set(got["families"]) == set(FAMILIES) == {"mlp", "cnn1d", "simple_cnn", "resnet20",
                                                     "allcnn"}
    if os.environ.get(UPDATE_ENV) == "1":
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"\nrewrote {GOLDEN.relative_to(ROOT)} (torch {got['torch']})")
    want = json.loads(GOLDEN.read_text())
    moved = [f"{fam} {key}: {value} != recorded {want['families'].get(fam, {}).get(key)}"
             for fam, metrics in got["families"].items() for key, value in metrics.items()
             if want["families"].get(fam, {}).get(key) != value]
    missing = [f"{fam} {key}: recorded, not computed" for fam, metrics in want["families"].items()
               for key in metrics if key not in got["families"].get(fam, {})]
    versions = (f"recorded with torch {want['torch']}, numpy {want['numpy']}; "
                f"this is torch {got['torch']}, numpy {got['numpy']}")
    assert not moved and not missing, (
        f"training numerics moved ({versions}):\n  " + "\n  ".join((moved + missing)[:20])
        + f"\nIf intended: {UPDATE_ENV}=1 pytest tests/test_golden_numerics.py, and list the "
          "docs/results.md sections this makes stale (and rerun them).")
