"""Packed trials vs the same trials one after another, in trials per hour.

For each model (MNIST-1D MLP, width 128, and the 1-D CNN, 25 channels) the
same K trial configs — seeds 0…K-1, learning rates spread over [0.01, 0.1],
momentum 0.9, probes off — are trained

  solo:    one after another with `dynamics_core.train.run` (memory sink,
           no checkpoints), each loading its data as a trial does;
  packed:  as one pack with `dynamics_core.packed.run_packed`.

Both with one torch thread (on CPU), in this process, after a warm-up run;
each time is the best of `--repeats` (solo and packed interleaved), since a
shared machine's noise only ever adds time.
A pack of K trains the first K of the configs, and its solo time is the sum
of those K solo runs. Prints the table and the packed / solo speed-up.

`--sweep` measures the service instead: one 16-trial MNIST-1D MLP grid
(8 learning rates in [0.01, 0.2] × 2 seeds, width 128, batch 32, momentum
0.9, 10 epochs, probes off unless `--probes`) through `dynsweep run`, each
time as its own process on a fresh local Ray and sqlite MLflow store (the
same work the user waits for: Ray start, Tune, MLflow, checkpoints), once
unpacked — one trial per Tune trial, two at a time on two cores — and once
per `resources.pack` K. Prints wall seconds, trials per hour and the
speed-up over the unpacked sweep, with `uptime` before and after; and, from
the MLflow store, the trials' training seconds summed (`final/time_train_s`:
a pack's members' shares add up to its training time), which leaves out
Ray's and MLflow's start, probes, evaluation and checkpoints.

    python benchmarks/bench_packed.py                      # device auto, 1 epoch, best of 2
    python benchmarks/bench_packed.py --device cuda --epochs 3 --packs 1 4 16 64
    python benchmarks/bench_packed.py --sweep --packs 4 8 16

`--science` measures the shipped science specs (`sweeps/specs/<name>.yaml`,
default critical_periods, early_phase, two_regimes) through `dynsweep run` the
same way, each with its first `--seeds` seeds (the trials of one seed are the
spec's whole design; more seeds only repeat it) and without its conjectures:
once unpacked (`resources.pack: 1`) and once as shipped (its own
`resources.pack`, or `--science-pack` if given). Prints, per spec, the trials,
the Tune trials, the wall seconds, wall-clock trials per hour and the packed /
unpacked ratio.

    python benchmarks/bench_packed.py --science --seeds 1
    python benchmarks/bench_packed.py --science critical_periods --seeds 2 --science-pack 16
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dynamics_core.config import TrialConfig
from dynamics_core.packed import run_packed
from dynamics_core.sink import MemorySink
from dynamics_core.train import RunEnv, resolve_device, run

PROBES_OFF = {k: False for k in ("hessian", "hessian_trace", "gradcov", "stiffness",
                                 "fisher", "frequency", "timeline")}
MODELS = {"mlp": {"name": "mlp", "width": 128, "depth": 2}, "cnn1d": {"name": "cnn1d", "width": 25}}


def configs(model: str, k: int, epochs: int, batch_size: int, device: str) -> list[TrialConfig]:
    lrs = torch.logspace(-2, -1, k).tolist() if k > 1 else [0.05]   # seed s gets the s-th
    return [TrialConfig.model_validate({
        "model": MODELS[model], "optim": {"lr": lr, "momentum": 0.9},
        "train": {"epochs": epochs, "batch_size": batch_size, "device": device},
        "probes": PROBES_OFF, "seed": seed}) for seed, lr in enumerate(lrs)]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def sweep_spec(folder: Path, pack: int, epochs: int, probes: bool) -> Path:
    import yaml

    spec = {"name": f"bench-pack{pack}",
            "base": {"data": {"dataset": "mnist1d"}, "model": MODELS["mlp"],
                     "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
                     "train": {"epochs": epochs, "batch_size": 32},
                     "probes": {"schedule": {"kind": "log", "points": 12}} if probes else PROBES_OFF},
            "grid": {"optim.lr": [round(x, 4) for x in torch.logspace(-2, math.log10(0.2), 8).tolist()]},
            "seeds": [0, 1], "resources": {"cpus_per_trial": 1, "pack": pack}}
    path = folder / f"bench-pack{pack}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def service_env() -> dict[str, str]:
    """This environment without a tracking URI or Ray address: each run gets its own."""
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}


def sweep_main(args) -> None:
    """16 trials through `dynsweep run`: unpacked, then packed by each K."""
    root = Path(__file__).resolve().parents[1]
    env = service_env()
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; 16-trial MNIST-1D MLP grid "
          f"(8 lr × 2 seeds), {args.epochs} epochs, batch 32, probes {'default' if args.probes else 'off'}")
    print(f"uptime before: {uptime()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-packed-") as tmp:
        tmp = Path(tmp)
        env.setdefault("DYNSWEEP_CACHE", str(tmp / "data"))
        for k in [1, *[k for k in args.packs if k > 1]]:
            spec = sweep_spec(tmp, k, args.epochs, args.probes)
            argv = [sys.executable, "-m", "sweeps.cli", "run", str(spec), "--storage", str(tmp / f"ray{k}"),
                    "--tracking-uri", f"sqlite:///{tmp / f'mlflow{k}.db'}"]
            t0 = time.perf_counter()
            res = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if res.returncode != 0:
                raise SystemExit(f"pack {k} failed ({res.returncode}):\n{res.stderr[-3000:]}")
            train = train_seconds(f"sqlite:///{tmp / f'mlflow{k}.db'}", f"bench-pack{k}")
            rows.append((k, wall, train))
            print(f"  pack {k}: {wall:.1f} s", flush=True)
    print(f"uptime after:  {uptime()}")
    print(f"{'resources.pack':<16}{'Tune trials':>12}{'wall s':>9}{'trials/h':>10}{'× unpacked':>12}"
          f"{'train s (sum)':>15}{'× unpacked':>12}")
    base, base_train = rows[0][1], rows[0][2]
    for k, wall, train in rows:
        label = "1 (unpacked)" if k == 1 else str(k)
        print(f"{label:<16}{math.ceil(16 / k):>12}{wall:>9.1f}{16 / wall * 3600:>10.0f}{base / wall:>11.2f}x"
              f"{train:>15.1f}{base_train / train:>11.2f}x")


def science_spec(folder: Path, name: str, seeds: int, pack: int | None) -> tuple[Path, int, int]:
    """The shipped spec `name`, cut to its first `seeds` seeds and without its
    conjectures, packed by `pack` (None: as shipped); (path, trials, pack)."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    spec = yaml.safe_load((root / "sweeps" / "specs" / f"{name}.yaml").read_text())
    spec["seeds"] = spec["seeds"][:seeds]
    spec.pop("conjectures", None)
    resources = spec.setdefault("resources", {})
    resources["pack"] = resources.get("pack", 1) if pack is None else pack
    spec["name"] = f"bench-{name}-pack{resources['pack']}"
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    from sweeps.spec import load_spec
    return path, load_spec(path).n_trials(), resources["pack"]


def science_main(args) -> None:
    """Each shipped science spec through `dynsweep run`, unpacked and packed."""
    from sweeps import context
    from sweeps.spec import load_spec

    root = Path(__file__).resolve().parents[1]
    env = service_env()
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; shipped specs, "
          f"first {args.seeds} seed(s) each, no conjectures")
    print(f"uptime before: {uptime()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-science-") as tmp:
        tmp = Path(tmp)
        env.setdefault("DYNSWEEP_CACHE", str(tmp / "data"))
        for name in args.science:
            walls = {}
            for pack in (1, args.science_pack):
                path, trials, k = science_spec(tmp, name, args.seeds, pack)
                units = context.tune_units(load_spec(path))
                argv = [sys.executable, "-m", "sweeps.cli", "run", str(path), "--storage", str(tmp / f"ray-{path.stem}"),
                        "--tracking-uri", f"sqlite:///{tmp / f'{path.stem}.db'}"]
                t0 = time.perf_counter()
                res = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                if res.returncode != 0:
                    raise SystemExit(f"{path.stem} failed ({res.returncode}):\n{res.stderr[-3000:]}")
                walls[k] = wall
                tune_trials = len(units) if units is not None else trials
                rows.append((name, k, trials, tune_trials, wall, walls[1] / wall))
                print(f"  {path.stem}: {trials} trials in {tune_trials} Tune trials, {wall:.1f} s", flush=True)
    print(f"uptime after:  {uptime()}")
    print(f"{'spec':<18}{'pack':>6}{'trials':>8}{'Tune trials':>13}{'wall s':>9}{'trials/h':>10}{'× unpacked':>12}")
    for name, k, trials, tune_trials, wall, ratio in rows:
        print(f"{name:<18}{k:>6}{trials:>8}{tune_trials:>13}{wall:>9.1f}{trials / wall * 3600:>10.0f}{ratio:>11.2f}x")


def train_seconds(uri: str, name: str) -> float:
    """The trials' `final/time_train_s`, summed: a pack's members' shares add up to its training time."""
    from sweeps import tracking
    from sweeps.tracking import Store

    return sum(r.metrics.get("final/time_train_s", 0.0) for r in tracking.trial_runs(Store(uri), name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    ap.add_argument("--epochs", type=int, default=None, help="default 1 (10 with --sweep)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--packs", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cache-dir", default="runs/data")
    ap.add_argument("--sweep", action="store_true", help="16 trials through `dynsweep run`, by resources.pack")
    ap.add_argument("--probes", action="store_true", help="--sweep: the default probe set, 12 log-spaced rounds")
    ap.add_argument("--science", nargs="*", default=None, metavar="SPEC",
                    help="shipped specs through `dynsweep run`, unpacked vs packed "
                         "(default critical_periods early_phase two_regimes)")
    ap.add_argument("--seeds", type=int, default=1, help="--science: the spec's first N seeds")
    ap.add_argument("--science-pack", type=int, default=None, help="--science: pack K (default: as shipped)")
    args = ap.parse_args()
    if args.science is not None:
        args.science = args.science or ["critical_periods", "early_phase", "two_regimes"]
        science_main(args)
        return
    args.epochs = args.epochs or (10 if args.sweep else 1)
    if args.sweep:
        sweep_main(args)
        return
    device = str(resolve_device(args.device))
    if device == "cpu":
        torch.set_num_threads(1)
    env = RunEnv(device=device, cache_dir=args.cache_dir, checkpoint_every_epochs=0)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"MNIST-1D, {args.epochs} epochs, batch {args.batch_size}, SGD momentum 0.9, probes off")
    print(f"{'model':<7}{'K':>4}{'solo s':>9}{'packed s':>10}{'solo trials/h':>15}"
          f"{'packed trials/h':>17}{'speed-up':>10}")
    for model in args.models:
        cfgs = configs(model, max(args.packs), args.epochs, args.batch_size, device)
        warm = configs(model, 1, 1, args.batch_size, device)
        run(warm[0], MemorySink(), env)
        run_packed(warm, [MemorySink()], env)
        solo = [math.inf] * len(cfgs)
        pack = {k: math.inf for k in args.packs}
        for _ in range(args.repeats):
            solo = [min(t, timed(lambda c=c: run(c, MemorySink(), env))) for t, c in zip(solo, cfgs)]
            for k in args.packs:
                pack[k] = min(pack[k], timed(lambda: run_packed(cfgs[:k], [MemorySink() for _ in range(k)], env)))
        for k in args.packs:
            t_solo, t_pack = sum(solo[:k]), pack[k]
            print(f"{model:<7}{k:>4}{t_solo:>9.1f}{t_pack:>10.1f}{k / t_solo * 3600:>15.0f}"
                  f"{k / t_pack * 3600:>17.0f}{t_solo / t_pack:>9.1f}x", flush=True)

if __name__ == "__main__":
    main()
