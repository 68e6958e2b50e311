"""benchmarks/gpu_check.py starts: its CPU fallback (tiny sizes, no CUDA) runs
every section in a subprocess, prints the one table with a row per section
and exits 0; a section that needs something absent says "skipped: reason"."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROWS = ["bf16 train", "fp32 probes", "pergrad", "share 0.25", "share 1", "packed K=1,4",
        "packed critical_periods", "packed early_phase", "packed two_regimes", "science 0.25", "ddp gloo"]

pytestmark = pytest.mark.slow


def test_cpu_fallback_prints_every_row(mnist1d_cache):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu",
                          "--threads", "1", "--cache", mnist1d_cache, "--packed-k", "1", "4"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table = res.stdout[res.stdout.index("| check | device | result | seconds |"):]
    rows = {line.split(" | ")[0].lstrip("| ").strip(): line for line in table.splitlines()[2:] if line}
    assert list(rows) == ROWS, table
    for name, line in rows.items():
        result = line.split(" | ")[2]
        assert result.startswith(("ok:", "skipped:")), line
    assert rows["bf16 train"].split(" | ")[2].startswith("skipped: bf16 autocast is CUDA-only")
    assert "backend gloo" in rows["ddp gloo"]
