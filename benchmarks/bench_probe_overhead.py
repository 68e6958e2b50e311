"""What probing costs a whole trial: `final/time_probe_s` against the trial's wall time.

Runs whole trials (`dynamics_core.train.run`, `measure.default_hooks`, CPU)
and reads the loop's own timers: `final/time_train_s` (optimizer steps and
training hooks) and `final/time_probe_s` (probe hooks); the wall time is
taken around `run`. Cases (`--cases`):

  default          the default TrialConfig, 10 epochs: MLP (width 128), batch
                   100, the default probe set (λ_H¹, K, stiffness, timeline)
                   at the default cadence (12 log-spaced points)
  breakeven        the trial config of sweeps/specs/breakeven.yaml (cnn1d:32,
                   batch 32, lr 0.1, λ_H¹ + K + snapshots at 16 log-spaced
                   points, 60 epochs)
  stiffness_epoch  the default trial, 10 epochs, stiffness alone at every epoch end
  stiffness        the trial config of sweeps/specs/stiffness.yaml (cnn1d:32 on 500
                   examples, batch 25, 100 epochs, stiffness alone on 200 + 200
                   examples at every epoch end)

Each trial runs in its own process (`--worker`), after a one-epoch warm-up
trial of the same config in that process, so one-time imports and lazy
initialisation are not counted (a sweep worker pays them once). Every
process gets one torch thread and one BLAS thread (OMP/OpenBLAS/MKL = 1),
as a Ray trial with `cpus_per_trial: 1` does. `--src A B` compares source
trees (each a directory holding `dynamics_core/`, e.g. an exported older
commit): cases and trees run in turn in every repeat, so background load hits
them alike; the tables give medians and the ratios of the trees' probe time.
A second table gives the same shares in process CPU seconds (every probe hook
timed with `time.process_time`, the trial around `run`): on a machine shared
with other jobs, wall time mostly measures their load.

    python benchmarks/bench_probe_overhead.py                          # this tree
    python benchmarks/bench_probe_overhead.py --src /tmp/old . --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("default", "breakeven", "stiffness_epoch", "stiffness")
THREADS = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def trial_tree(case: str) -> dict:
    if case == "default":
        return {"train": {"epochs": 10}}
    if case == "stiffness_epoch":
        off = {k: False for k in ("hessian", "gradcov", "timeline")}
        return {"train": {"epochs": 10}, "probes": {**off, "stiffness": True, "schedule": {"kind": "epoch"}}}
    if case in ("breakeven", "stiffness"):
        import yaml
        return yaml.safe_load((ROOT / "sweeps" / "specs" / f"{case}.yaml").read_text())["base"]
    raise ValueError(case)


class CpuTimed:
    """A probe hook whose calls add their process CPU seconds to `spent`."""

    def __init__(self, hook, spent: list[float]):
        self.hook, self.spent = hook, spent
        self.name, self.schedule = hook.name, hook.schedule

    def __call__(self, ctx):
        t0 = time.process_time()
        try:
            return self.hook(ctx)
        finally:
            self.spent[0] += time.process_time() - t0

    def state_dict(self):
        return self.hook.state_dict() if hasattr(self.hook, "state_dict") else {}

    def load_state_dict(self, state):
        if hasattr(self.hook, "load_state_dict"):
            self.hook.load_state_dict(state)


def worker(case: str, cache: str) -> dict:
    import torch
    from dynamics_core import train
    from dynamics_core.config import TrialConfig
    from dynamics_core.measure import default_hooks
    from dynamics_core.sink import MemorySink

    torch.set_num_threads(1)
    tree = trial_tree(case)
    tree["train"] = {**tree.get("train", {}), "device": "cpu"}
    cfg = TrialConfig.model_validate(tree)
    env = train.RunEnv(cache_dir=cache)
    warm = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 1})})
    train.run(warm, MemorySink(), env, hooks=default_hooks)           # imports, lazy init
    spent = [0.0]
    sink = MemorySink()
    t0, c0 = time.perf_counter(), time.process_time()
    result = train.run(cfg, sink, env, hooks=lambda c, d: [CpuTimed(h, spent) for h in default_hooks(c, d)])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rounds = len(sink.series("probe/loss"))
    return {"status": result.status, "wall": wall, "train": sink.summary["final/time_train_s"],
            "probe": sink.summary["final/time_probe_s"], "cpu": cpu, "probe_cpu": spent[0],
            "rounds": rounds, "steps": sink.summary["final/steps"],
            "hvp": sum(v for _, v in sink.series("hessian/n_hvp"))}


def spawn(src: Path, case: str, cache: str) -> dict:
    env = {**os.environ, **THREADS, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, __file__, "--worker", case, "--cache", cache],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", nargs="+", default=[str(ROOT)],
                    help="source trees to compare (directories holding dynamics_core/)")
    ap.add_argument("--cases", nargs="+", default=list(CASES[:3]), choices=CASES)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", default=str(ROOT / "runs" / "data"), help="data cache directory")
    ap.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.cache)))
        return
    srcs = [Path(s).resolve() for s in args.src]
    names = [s.name or str(s) for s in srcs]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; 1 torch and 1 BLAS thread per trial")
    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.repeats):
        for case in args.cases:
            for name, src in zip(names, srcs):
                res = spawn(src, case, args.cache)
                runs.setdefault((case, name), []).append(res)
                print(f"  repeat {r} {case:15s} {name:20s} wall {res['wall']:7.2f} s  train "
                      f"{res['train']:6.2f} s  probe {res['probe']:6.2f} s  CPU {res['cpu']:6.2f} s  "
                      f"probe CPU {res['probe_cpu']:6.2f} s", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}\n")
    print("Wall clock (the loop's own timers; wall = time around `run`):\n")
    print("| case | tree | rounds | HVPs | wall s | train s | probe s | probe / wall | probe / train | probe s ÷ first tree's |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        base = statistics.median(x["probe"] for x in runs[(case, names[0])])
        for name in names:
            rs = runs[(case, name)]
            med = {k: statistics.median(x[k] for x in rs) for k in ("wall", "train", "probe", "hvp")}
            share = statistics.median(x["probe"] / x["wall"] for x in rs)
            per_train = statistics.median(x["probe"] / x["train"] for x in rs)
            print(f"| {case} | {name} | {rs[0]['rounds']} | {med['hvp']:.0f} | {med['wall']:.2f} | "
                  f"{med['train']:.2f} | {med['probe']:.2f} | {100 * share:.1f} % | {per_train:.2f} | "
                  f"{med['probe'] / base:.3f} |")
    print("\nProcess CPU time (probe hooks timed one by one; robust to other jobs' load):\n")
    print("| case | tree | trial CPU s | probe CPU s | probe / trial | probe CPU s ÷ first tree's |")
    print("|---|---|---|---|---|---|")
    for case in args.cases:
        base = statistics.median(x["probe_cpu"] for x in runs[(case, names[0])])
        for name in names:
            rs = runs[(case, name)]
            cpu, probe = (statistics.median(x[k] for x in rs) for k in ("cpu", "probe_cpu"))
            share = statistics.median(x["probe_cpu"] / x["cpu"] for x in rs)
            print(f"| {case} | {name} | {cpu:.2f} | {probe:.3f} | {100 * share:.1f} % | {probe / base:.3f} |")


if __name__ == "__main__":
    main()
