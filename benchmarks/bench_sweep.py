"""What the sweep service costs over a plain loop, side by side in one run.

The same trial configs — a 16-trial MNIST-1D MLP grid (η × S × 2 seeds,
10 epochs by default) — are trained twice, each way as its own process so
that imports and start-up count:

  plain:   one Python process that builds every trial config from the spec and
           calls `dynamics_core.train.run` on each in turn, with a memory sink
           (no Ray, no MLflow, no checkpoints on disk);
  dynsweep: `dynsweep run SPEC` on a fresh local Ray and a fresh sqlite MLflow
           store (Tune, trial actors, MLflow runs, checkpoints, progress).

Both with probes off and with the default probe set. Prints wall seconds and
the ratio dynsweep / plain (target ≤ 1.0 on 2 cores), and, from the MLflow
store, the share of trial time spent probing (`time/probe_s` over
`time/train_s + time/probe_s`) where the trials log it.

    python benchmarks/bench_sweep.py                 # 16 trials, 10 epochs
    python benchmarks/bench_sweep.py --epochs 3 --seeds 1
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

PLAIN = r"""
import sys, time
t0 = time.perf_counter()
from dynamics_core.sink import MemorySink
from dynamics_core.measure import default_hooks
from dynamics_core.train import RunEnv, run
from sweeps.spec import load_spec
spec = load_spec(sys.argv[1])
env = RunEnv(cache_dir=sys.argv[2], checkpoint_every_epochs=0)
for cfg in spec.trials():
    run(cfg, MemorySink(), env, hooks=default_hooks)
print(f"plain-inner {time.perf_counter() - t0:.2f}")
"""


def write_spec(folder: Path, name: str, epochs: int, seeds: int, probes: bool) -> Path:
    spec = {
        "name": name,
        "base": {
            "data": {"dataset": "mnist1d"},
            "model": {"name": "mlp", "width": 128, "depth": 2},
            "optim": {"name": "sgd", "lr": 0.1},
            "train": {"epochs": epochs, "batch_size": 32},
            "probes": ({"schedule": {"kind": "log", "points": 12}} if probes else
                       {"hessian": False, "gradcov": False, "stiffness": False, "timeline": False}),
        },
        "grid": {"optim.lr": [0.02, 0.05, 0.1, 0.2], "train.batch_size": [32, 128]},
        "seeds": list(range(seeds)),
        "resources": {"cpus_per_trial": 1},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def timed(argv: list[str], cwd: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    t0 = time.perf_counter()
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}… failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return wall


def probe_share(uri: str, name: str) -> float | None:
    from sweeps import tracking
    from sweeps.tracking import Store

    train = probe = 0.0
    for run in tracking.trial_runs(Store(uri), name):
        train += run.metrics.get("time/train_s", 0.0)
        probe += run.metrics.get("time/probe_s", 0.0)
    return probe / (train + probe) if train + probe > 0 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        tmp = Path(tmp)
        cache = tmp / "data"
        for probes in (False, True):
            name = f"bench-{'probes' if probes else 'plain'}"
            spec = write_spec(tmp, name, args.epochs, args.seeds, probes)
            plain = timed([sys.executable, "-c", PLAIN, str(spec), str(cache)], ROOT)
            uri = f"sqlite:///{tmp / name / 'mlflow.db'}"
            (tmp / name).mkdir()
            service = timed([sys.executable, "-m", "sweeps.cli", "run", str(spec), "--storage",
                             str(tmp / name / "ray"), "--tracking-uri", uri], tmp / name)
            rows.append((name, plain, service, probe_share(uri, name)))
    print(f"{'probes':<8} {'plain s':>8} {'dynsweep s':>10} {'ratio':>6} {'probe share':>12}")
    for name, plain, service, share in rows:
        share_txt = "-" if share is None else f"{share:.0%}"
        print(f"{'on' if 'probes' in name else 'off':<8} {plain:8.1f} {service:10.1f} "
              f"{service / plain:6.2f} {share_txt:>12}")


if __name__ == "__main__":
    main()
