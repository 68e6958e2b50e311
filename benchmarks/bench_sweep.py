"""What the sweep service costs over a plain loop, side by side in one run.

The same trial configs — a 16-trial MNIST-1D MLP grid (η × S × 2 seeds,
10 epochs by default) — are trained twice, each way as its own process so
that imports and start-up count:

  plain:    one Python process that builds every trial config from the spec and
            calls `dynamics_core.train.run` on each in turn, with a memory sink
            (no Ray, no MLflow, no checkpoints on disk), one torch thread as a
            trial worker has (`--plain-threads 0`: torch's default; on a loaded
            2-core machine two threads spin and made the loop many times slower);
  dynsweep: `dynsweep run SPEC` on a fresh local Ray and a fresh sqlite MLflow
            store (Tune, trial actors, MLflow runs, checkpoints, progress, the
            result table at the end).

Both with probes off and with the default probe set (at 12 log-spaced
points). Both read the same data cache, generated before anything is timed
(`DYNSWEEP_CACHE`), and dynsweep the same empty MLflow store to copy
(`DYNSWEEP_SCHEMA_CACHE`, made before anything is timed), as a sweep on a
machine that has run one before does. `--one-trial` drops the grid (one
trial per seed): with `--epochs 1 --seeds 1` the column `fixed` (dynsweep's
wall minus the plain process's) is the service's fixed cost. Unless
`--one-trial` or `--no-fixed`, every repeat also runs that 1-trial, 1-epoch
pair (probes off, rows "fixed"), and the run ends with one summary line per
tree: the grid's ratio with probes off beside the fixed cost.
Prints wall seconds and the ratio dynsweep / plain (target ≤ 0.7 on 2 cores
with probes off at 60 epochs, where two trials at once make ≈ 0.5 the limit),
the share of trial time spent probing (`time/probe_s` over `time/train_s +
time/probe_s`, from MLflow), and where a dynsweep run's wall time went, from
the MLflow store's timestamps:

  start     process start → the sweep's parent run exists (imports, the MLflow
            store, Ray's start)
  launch    parent run → the first trial's run exists (Tune's set-up, trial
            actors started, their imports)
  trials    first trial run → last trial run ended, split into
              compute: Σ trials' time/train_s + time/probe_s, over the slots
              in trial: Σ (run end − run start) − compute (data, model, epoch
                        evaluation, checkpoints, MLflow writes, reports)
              between:  slots × span − Σ run durations (a slot without a
                        trial's run: Tune's scheduling, actor reuse, a
                        trial opening its run)
            (a pack is one run here: its members' first start to last end;
            its members' time/train_s are shares that add up to its own)
  end       last trial run ended → process exit (Tune's end, the result
            table, Ray's shutdown)

`--pack K...` also runs the grid packed (`resources.pack: K`; rows
"pack K"; the grid makes one pack per batch size).

`--ray-head` also runs every tree joined to one local Ray head started before
the runs (`ray start --head`, `dynsweep run --address auto`; rows "+ head"),
which pays Ray's start and shutdown once instead of per sweep.

`--src A B` runs `dynsweep` from several source trees (each a directory
holding `sweeps/` and `dynamics_core/`, e.g. an older commit exported with
`git archive`), in turn within every repeat, so that background load hits
them alike; the plain loop runs from the last tree.

    python benchmarks/bench_sweep.py                          # 16 trials, 10 epochs
    python benchmarks/bench_sweep.py --epochs 60 --probes off --repeats 3   # ratio and fixed cost
    python benchmarks/bench_sweep.py --epochs 3 --seeds 1 --probes off
    python benchmarks/bench_sweep.py --src /tmp/old . --repeats 2
    python benchmarks/bench_sweep.py --probes off --ray-head --repeats 2
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

PLAIN = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
if int(sys.argv[3]):
    torch.set_num_threads(int(sys.argv[3]))
from dynamics_core.sink import MemorySink
from dynamics_core.measure import default_hooks
from dynamics_core.train import RunEnv, run
from sweeps.spec import load_spec
imports = time.perf_counter() - t0
spec = load_spec(sys.argv[1])
env = RunEnv(cache_dir=sys.argv[2], checkpoint_every_epochs=0)
compute = 0.0
for cfg in spec.trials():
    sink = MemorySink()
    run(cfg, sink, env, hooks=default_hooks)
    compute += sink.summary["final/time_train_s"] + sink.summary["final/time_probe_s"]
print(json.dumps({"imports": imports, "compute": compute, "inner": time.perf_counter() - t0}))
"""

WARM = "import sys; from dynamics_core.data import load; from dynamics_core.config import DataConfig; " \
       "load(DataConfig(dataset='mnist1d'), 'cpu', sys.argv[1])"


def write_spec(folder: Path, name: str, epochs: int, seeds: int, probes: bool,
               checkpoint_every: int | None = None, one_trial: bool = False, pack: int = 1) -> Path:
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
        "grid": {} if one_trial else {"optim.lr": [0.02, 0.05, 0.1, 0.2], "train.batch_size": [32, 128]},
        "seeds": list(range(seeds)),
        "resources": {"cpus_per_trial": 1, "pack": 1 if one_trial else pack},
    }
    if checkpoint_every is not None:
        spec["fault_tolerance"] = {"checkpoint_every_epochs": checkpoint_every}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def timed(argv: list[str], cwd: Path, src: Path, cache: Path,
          extra_env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(start as epoch seconds, wall seconds, stdout) of one process."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update(PYTHONPATH=str(src), DYNSWEEP_CACHE=str(cache), **(extra_env or {}))
    start, t0 = time.time(), time.perf_counter()
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}… failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return start, wall, res.stdout


class RayHead:
    """`ray start --head --block` started once, in its own process group and
    temp dir: `dynsweep run --address auto` with the same RAY_TMPDIR (`env`)
    joins it, and nothing else on the machine sees it."""

    def __init__(self, cpus: int):
        self.tmpdir = tempfile.mkdtemp(prefix="bsr", dir="/tmp")     # short: Ray's socket paths
        self.env = {"RAY_TMPDIR": self.tmpdir}
        ports = {k: str(free_port()) for k in ("port", "client", "agent", "metrics1", "metrics2")}
        env = {**os.environ, **self.env, "AUTOSCALER_METRIC_PORT": ports["metrics1"],
               "DASHBOARD_METRIC_PORT": ports["metrics2"]}
        env.pop("RAY_ADDRESS", None)
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--num-cpus", str(cpus),
             "--port", ports["port"], "--ray-client-server-port", ports["client"],
             "--dashboard-agent-listen-port", ports["agent"], "--include-dashboard", "false",
             "--disable-usage-stats"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        ready = Path(self.tmpdir) / "ray" / "ray_current_cluster"
        deadline = time.monotonic() + 180
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("ray start --head did not come up")
            time.sleep(0.5)
        time.sleep(2)                                              # its raylet registers after the file

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def breakdown(uri: str, name: str, start: float, wall: float, slots: int) -> dict[str, float]:
    """Where one dynsweep run's wall time went, from its MLflow store (see the docstring)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = [r for r in runs if r.data.tags.get("dynsweep.kind") == "sweep"][0]
    trials = [r for r in runs if r.data.tags.get("dynsweep.kind") == "trial"]
    units: dict[str, list] = {}              # a pack's members run at once: one unit, first start to last end
    for r in trials:
        units.setdefault(r.data.tags.get("pack", r.info.run_id), []).append(r)
    begin = [min(r.info.start_time for r in rs) / 1e3 for rs in units.values()]
    end = [max(r.info.end_time for r in rs) / 1e3 for rs in units.values()]
    in_runs = sum(e - b for b, e in zip(begin, end))
    compute = sum(r.data.metrics.get("final/time_train_s", 0.0) + r.data.metrics.get("final/time_probe_s", 0.0)
                  for r in trials)
    span = max(end) - min(begin)
    return {"start": parent.info.start_time / 1e3 - start, "launch": min(begin) - parent.info.start_time / 1e3,
            "trials": span, "compute": compute / slots, "in trial": (in_runs - compute) / slots,
            "between": span - in_runs / slots, "end": start + wall - max(end),
            "train_s": sum(r.data.metrics.get("final/time_train_s", 0.0) for r in trials),
            "probe_s": sum(r.data.metrics.get("final/time_probe_s", 0.0) for r in trials)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--probes", nargs="+", choices=("off", "on"), default=["off", "on"])
    ap.add_argument("--src", nargs="+", default=[str(ROOT)],
                    help="source trees to run dynsweep from (directories holding sweeps/)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--one-trial", action="store_true", help="no grid: one trial per seed (the fixed cost)")
    ap.add_argument("--fixed", action=argparse.BooleanOptionalAction, default=True,
                    help="also run a 1-trial, 1-epoch pair with probes off each repeat (rows 'fixed'), "
                         "for the summary's fixed cost (default; not with --one-trial)")
    ap.add_argument("--plain-threads", type=int, default=1, help="torch threads of the plain loop (0: torch's default)")
    ap.add_argument("--checkpoint-every", type=int, nargs="+", default=[None], metavar="EPOCHS",
                    help="fault_tolerance.checkpoint_every_epochs of the dynsweep runs (default: the spec default)")
    ap.add_argument("--pack", type=int, nargs="+", default=[1], metavar="K",
                    help="resources.pack of the grid's dynsweep runs (default 1: unpacked; the grid makes "
                         "one pack per batch size, 8 trials each at K >= 8)")
    ap.add_argument("--ray-head", action="store_true",
                    help="also run every tree joined to a local Ray head started once before the runs "
                         "(`ray start --head`, then `dynsweep run --address auto`): Ray's start and "
                         "shutdown paid once, not per sweep")
    args = ap.parse_args()
    srcs = [Path(s).resolve() for s in args.src]
    names = [s.name or str(s) for s in srcs]
    slots = os.cpu_count() or 1
    print(f"machine: {platform.machine()}, {slots} cores, Python {platform.python_version()}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    rows: dict[tuple[str, str], list[dict]] = {}
    head = RayHead(slots) if args.ray_head else None
    joins = [("", [])] + ([(" + head", ["--address", "auto"])] if head else [])
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        if head is not None:
            stack.callback(head.stop)
        tmp = Path(tmp)
        cache = tmp / "data"
        subprocess.run([sys.executable, "-c", WARM, str(cache)], env={**os.environ, "PYTHONPATH": str(srcs[-1])},
                       check=True)
        schema = {"DYNSWEEP_SCHEMA_CACHE": str(tmp / "schema")}
        if (srcs[-1] / "sweeps" / "tracking" / "schema.py").exists():
            subprocess.run([sys.executable, "-c", "import sys; from sweeps.tracking import create_schema; "
                            "create_schema(sys.argv[1])", f"sqlite:///{tmp / 'warm.db'}"],
                           env={**os.environ, "PYTHONPATH": str(srcs[-1]), **schema}, check=True,
                           capture_output=True)
        cases = [(probes, args.epochs, args.seeds, args.one_trial) for probes in args.probes]
        if args.fixed and not args.one_trial:
            cases.append(("fixed", 1, 1, True))
        for r in range(args.repeats):
            for probes, epochs, seeds, one_trial in cases:
                name = f"bench-probes-{probes}"
                spec = write_spec(tmp, name, epochs, seeds, probes == "on", one_trial=one_trial)
                _, wall, out = timed([sys.executable, "-c", PLAIN, str(spec), str(cache), str(args.plain_threads)],
                                    tmp, srcs[-1], cache)
                plain = {"wall": wall, **json.loads(out.strip().splitlines()[-1])}
                rows.setdefault((probes, "plain"), []).append(plain)
                print(f"repeat {r} probes {probes:5s} plain {wall:7.1f} s (imports {plain['imports']:.1f} s, "
                      f"compute {plain['compute']:.1f} s)", flush=True)
                for (tree, src), every, pack, (joined, address) in itertools.product(
                        zip(names, srcs), args.checkpoint_every, args.pack, joins):
                    if one_trial and pack != args.pack[0]:
                        continue                        # a 1-trial sweep does not pack
                    spec = write_spec(tmp, name, epochs, seeds, probes == "on", every, one_trial=one_trial,
                                      pack=pack)
                    if every is not None:
                        tree = f"{tree} ckpt {every}"
                    if pack != 1 and not one_trial:
                        tree = f"{tree} pack {pack}"
                    tree += joined
                    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp))
                    uri = f"sqlite:///{folder / 'mlflow.db'}"
                    start, wall, _ = timed([sys.executable, "-m", "sweeps.cli", "run", str(spec), "--storage",
                                            str(folder / "ray"), "--tracking-uri", uri, *address], folder, src,
                                           cache, {**schema, **(head.env if address else {})})
                    parts = {"wall": wall, "plain": plain["wall"], **breakdown(uri, name, start, wall, slots)}
                    rows.setdefault((probes, tree), []).append(parts)
                    print(f"repeat {r} probes {probes:5s} {tree:12s} {wall:7.1f} s  ratio {wall / plain['wall']:.2f}  "
                          f"fixed {wall - plain['wall']:.1f}  "
                          + "  ".join(f"{k} {parts[k]:.1f}" for k in ("start", "launch", "trials", "compute",
                                                                        "in trial", "between", "end")), flush=True)
    print(f"load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    print("| probes | tree | plain s | dynsweep s | fixed s | ratio (median, range) | probe share | start | launch | "
          "trials | compute | in trial | between | end |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (probes, tree), rs in rows.items():
        if tree != "plain":
            ratios = [x["wall"] / x["plain"] for x in rs]
            med = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
            share = med["probe_s"] / (med["train_s"] + med["probe_s"]) if med["train_s"] + med["probe_s"] else 0
            fixed = statistics.median(x["wall"] - x["plain"] for x in rs)
            print(f"| {probes} | {tree} | {med['plain']:.1f} | {med['wall']:.1f} | {fixed:.1f} | {statistics.median(ratios):.2f} "
                  f"({min(ratios):.2f}–{max(ratios):.2f}) | {share:.0%} | "
                  + " | ".join(f"{med[k]:.1f}" for k in ("start", "launch", "trials", "compute", "in trial",
                                                           "between", "end")) + " |")
    summary(rows, args)


def summary(rows: dict[tuple[str, str], list[dict]], args) -> None:
    """One line per tree: the grid's ratio with probes off and the fixed cost,
    medians over the repeats (each ratio and fixed cost from one repeat's pair)."""
    grid = f"{args.seeds} trial{'s' * (args.seeds > 1)}" if args.one_trial else f"{4 * 2 * args.seeds} trials"
    print()
    for (probes, tree), rs in rows.items():
        if probes != "off" or tree == "plain":
            continue
        ratio = statistics.median(x["wall"] / x["plain"] for x in rs)
        line = (f"{tree}: probes off, {grid} × {args.epochs} epochs: dynsweep "
                f"{statistics.median(x['wall'] for x in rs):.1f} s, plain {statistics.median(x['plain'] for x in rs):.1f} s, "
                f"ratio {ratio:.2f}" + ("" if args.one_trial else " (target ≤ 0.70, 2-core limit ≈ 0.5)"))
        fixed = rows.get(("fixed", tree)) or (rs if args.one_trial and args.epochs == 1 else None)
        if fixed:
            costs = [x["wall"] - x["plain"] for x in fixed]
            line += (f"; fixed cost {statistics.median(costs):.1f} s ({min(costs):.1f}–{max(costs):.1f}, "
                     f"1 trial × 1 epoch; target ≤ 6)")
        print(line)


if __name__ == "__main__":
    main()
