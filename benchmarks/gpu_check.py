"""GPU check: the CUDA paths that CPU tests cannot reach, in one short run.

Sections (one row each in the final table, `check | device | result | seconds`):

  bf16 train    `dynamics_core.train.run` on MNIST-1D cnn1d with `train.bf16: true`
                and a probe round at the last step; a forward hook on the model
                records every forward: training forwards must come out in
                bfloat16 under autocast, probe (eval) forwards in float32 with
                autocast off.
  fp32 probes   λ_H¹ (`hessian_top_eigen`, tol 1e-3) and K (`gradient_covariance`)
                on the trained model: parameters and outputs float32, values finite.
  pergrad       per-example gradients, analytic layer rules vs torch.func vmap vs
                an autograd loop: time and max |Δ| to the loop.
  share 0.25    `dynsweep run` of 4 tiny trials at `resources.gpus_per_trial: 0.25`
  share 1       ... and at 1 GPU per trial: seconds and trials per hour.
  packed K      `benchmarks/bench_packed.py --device DEV --packs K...` (`--packed-k`, default 1 8 32)
                (trials per hour at K packed trials); its output is printed above.
  packed <spec> the shipped science specs critical_periods, early_phase and
                two_regimes packed: for each K of `--packed-k`, the spec's first
                pack of K members (as `resources.pack: K` groups them, over K seeds),
                each cut to `--steps` optimizer steps per level (IMP to one
                level), `train.bf16` on CUDA, probes as the spec sets them,
                trained in this process by `run_packed`: member-steps per second
                and the speed-up over K = 1.
  science 0.25  `dynsweep run` of critical_periods cut the same way (its first
                seed, `resources.pack: 8`, 0.25 GPU per pack, bf16).
  ddp           `torch.distributed` at world size 1 (NCCL on CUDA) around
                `run(..., env=RunEnv(distributed=True))`; a spec's
                `workers_per_trial: 1` does not use DDP, so it is set up directly.

Without CUDA the same sections run on CPU with tiny sizes (about a minute):
the bf16 row is skipped (autocast is CUDA-only in the training loop), NCCL is
replaced by gloo, and the three sharing rows validate their specs instead of
running them (`--cpu-sweeps` runs them with `cpus_per_trial` 0.5 vs 1).
A section that needs something absent prints "skipped: reason"; one that
fails prints "FAIL: ..." and the exit status is 1. Usage:

    benchmarks/gpu_check.sh                 # sets up .venv if missing, then this, with a timeout
    python benchmarks/gpu_check.py --device cpu
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
CORE = ("pydantic", "mnist1d", "scipy", "numpy")       # dynamics_core beyond torch
SWEEPS = CORE + ("yaml", "rich", "ray", "mlflow", "optuna")   # the dynsweep command
ROWS: list[list[str]] = []


# ------------------------------------------------------------------ helpers
DEADLINE = float("inf")  # perf_counter() by which the table must be printed (--budget)


class OutOfTime(BaseException):
    """SIGTERM (the wrapper's timeout): stop, print the table so far."""


def left() -> float:
    return DEADLINE - time.perf_counter()


def subprocess_timeout() -> float:
    """Per subprocess: --sweep-timeout, less if the budget is nearly spent."""
    t = min(ARGS.sweep_timeout, left() - 20)
    if t < 20:
        raise TimeoutError(f"time budget spent ({ARGS.budget:g} s, --budget)")
    return t

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def row(check: str, device: str, result: str, seconds: float | None) -> None:
    result = result.replace("|", "/")  # one table cell
    ROWS.append([check, device, result, "" if seconds is None else f"{seconds:.1f}"])
    print(f"[{check}] {result}", flush=True)


def section(check: str, device: str):
    """Decorator: run the section, turn an exception into a FAIL row."""
    def wrap(fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # a failed check is a row, never a crash
                traceback.print_exc()
                row(check, device, f"FAIL: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}",
                    time.perf_counter() - t0)
        return run
    return wrap


def tiny_config(steps: int, bf16: bool, device: str, width: int, probes: bool):
    from dynamics_core.config import (DataConfig, ModelConfig, ProbeScheduleConfig, ProbesConfig,
                                      TrainConfig, TrialConfig)
    sched = ProbeScheduleConfig(kind="steps", steps=(steps,))
    return TrialConfig(
        data=DataConfig(dataset="mnist1d"),
        model=ModelConfig(name="cnn1d", width=width),
        train=TrainConfig(epochs=100, batch_size=32, max_steps=steps, bf16=bf16, device=device),
        probes=ProbesConfig(hessian=probes, gradcov=probes, stiffness=False, timeline=False,
                            schedule=sched, probe_size=128, val_probe_size=16))


@contextlib.contextmanager
def recorded_models():
    """Every model `dynamics_core.models.build` makes, with a forward hook that
    records (training?, output dtype, autocast on?) for each forward."""
    from dynamics_core import models
    built, original = [], models.build

    def build(*args, **kwargs):
        model = original(*args, **kwargs)
        model.forwards = []

        def hook(module, inputs, output):
            on = torch.is_autocast_enabled(output.device.type) if output.is_cuda else False
            module.forwards.append((module.training, output.dtype, on))
        model.register_forward_hook(hook)
        built.append(model)
        return model

    models.build = build
    try:
        yield built
    finally:
        models.build = original


# ----------------------------------------------------- bf16 train + fp32 probes
def check_bf16_and_probes(dev: torch.device, steps: int, width: int) -> None:
    from dynamics_core.probes import gradient_covariance, hessian_top_eigen
    from dynamics_core.sink import MemorySink
    from dynamics_core.train import RunEnv, run

    name = str(dev)
    t0 = time.perf_counter()
    model = None
    try:
        with recorded_models() as built:
            sink = MemorySink()
            result = run(tiny_config(steps, True, name, width, probes=True), sink,
                         RunEnv(device=name, cache_dir=ARGS.cache))
        sync(dev)
        if not built:
            raise RuntimeError("no model seen: train.run no longer builds through dynamics_core.models.build")
        model = built[0]
        train = [f for f in model.forwards if f[0]]
        probe = [f for f in model.forwards if not f[0]]
        lam = {s: v for s, k, v in sink.metrics if k.endswith("hessian/top")}
        head = f"{result.status} after {result.step} steps; "
        if dev.type != "cuda":
            note = (f"skipped: bf16 autocast is CUDA-only (train.bf16 ignored on {dev.type}; "
                    f"{len(train)} train forwards in {_dtypes(train)}); " + head +
                    f"eval-mode forwards (probes, evaluation) {_dtypes(probe)}, λ_H¹ logged in the loop {_fmt(lam)}")
            row("bf16 train", name, note, time.perf_counter() - t0)
        else:
            ok = (result.status == "finished" and train and probe
                  and all(d == torch.bfloat16 and on for _, d, on in train)
                  and all(d == torch.float32 and not on for _, d, on in probe))
            row("bf16 train", name,
                ("ok: " if ok else "FAIL: ") + head +
                f"train forwards {_dtypes(train)} (autocast on in {sum(on for *_, on in train)}/{len(train)}), "
                f"eval-mode forwards (probes, evaluation) {_dtypes(probe)} (autocast on in {sum(on for *_, on in probe)}); "
                f"λ_H¹ logged in the loop {_fmt(lam)}", time.perf_counter() - t0)
    except Exception as exc:
        traceback.print_exc()
        row("bf16 train", name, f"FAIL: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}",
            time.perf_counter() - t0)
        model = None

    t0 = time.perf_counter()
    if model is None:
        row("fp32 probes", name, "skipped: no trained model (bf16 train failed)", None)
        return
    try:
        from dynamics_core.config import DataConfig
        from dynamics_core.data import load
        data = load(DataConfig(dataset="mnist1d"), dev, ARGS.cache)
        x, y = data.x_train[:ARGS.probe_n], data.y_train[:ARGS.probe_n]
        model.forwards.clear()
        eig = hessian_top_eigen(model, F.cross_entropy, x, y, tol=1e-3)
        k = gradient_covariance(model, F.cross_entropy, x, y)
        sync(dev)
        dtypes = {p.dtype for p in model.parameters()}
        outs = {d for _, d, _ in model.forwards}
        on = sum(o for *_, o in model.forwards)
        ok = (dtypes == {torch.float32} and outs == {torch.float32} and not on
              and torch.isfinite(torch.tensor([eig.value, k["top"]])).all())
        row("fp32 probes", name,
            ("ok: " if ok else "FAIL: ") +
            f"λ_H¹ = {eig.value:.4g} ({eig.n_hvp} HVPs, converged {eig.converged}), "
            f"λ_K¹ = {k['top']:.4g}, Tr K = {k['trace']:.4g} on n = {len(x)}; params {_names(dtypes)}, "
            f"outputs {_names(outs)}, autocast on in {on}/{len(model.forwards)} forwards",
            time.perf_counter() - t0)
    except Exception as exc:
        traceback.print_exc()
        row("fp32 probes", name, f"FAIL: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}",
            time.perf_counter() - t0)


def _names(dtypes) -> str:
    return "/".join(sorted(str(d).replace("torch.", "") for d in dtypes)) or "none"


def _dtypes(forwards) -> str:
    return _names({d for _, d, _ in forwards})


def _fmt(series: dict) -> str:
    return ", ".join(f"{v:.4g}" for v in series.values()) or "none"


# --------------------------------------------------------------- pergrad
def check_pergrad(dev: torch.device, n: int, width: int) -> None:
    @section("pergrad", str(dev))
    def body():
        t_start = time.perf_counter()
        from dynamics_core import models
        from dynamics_core.config import DataConfig, ModelConfig
        from dynamics_core.data import load
        from dynamics_core.probes import per_example_gradients
        data = load(DataConfig(dataset="mnist1d"), dev, ARGS.cache)
        model = models.build(ModelConfig(name="cnn1d", width=width), data.input_shape,
                             data.num_classes, 0).to(dev).eval()
        x, y = data.x_train[:n], data.y_train[:n]
        params = [p for p in model.parameters() if p.requires_grad]

        def loop():
            rows = []
            for i in range(len(x)):
                g = torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), params)
                rows.append(torch.cat([t.reshape(-1) for t in g]))
            return torch.stack(rows)

        methods = {"analytic": lambda: per_example_gradients(model, F.cross_entropy, x, y, method="layers"),
                   "vmap": lambda: per_example_gradients(model, F.cross_entropy, x, y, method="vmap"),
                   "loop": loop}
        times, outs = {}, {}
        for name, fn in methods.items():
            fn()  # warm-up (kernels, allocator)
            sync(dev)
            ts = []
            for _ in range(ARGS.repeats):
                t0 = time.perf_counter()
                outs[name] = fn()
                sync(dev)
                ts.append(time.perf_counter() - t0)
            times[name] = sorted(ts)[len(ts) // 2]
        diff = {k: float((outs[k] - outs["loop"]).abs().max()) for k in ("analytic", "vmap")}
        scale = float(outs["loop"].abs().max())
        ok = max(diff.values()) <= 1e-4 * max(scale, 1.0)
        p = outs["loop"].shape[1]
        row("pergrad", str(dev),
            ("ok: " if ok else "FAIL: ") + f"n = {n}, p = {p}: " +
            ", ".join(f"{k} {1e3 * t:.1f} ms" for k, t in times.items()) +
            f"; max abs Δ to loop: analytic {diff['analytic']:.1e}, vmap {diff['vmap']:.1e}",
            time.perf_counter() - t_start)
    body()


# ------------------------------------------------------- shared-GPU sweeps
SPEC = """name: {name}
description: gpu_check, {trials} tiny trials at {per} per trial
base:
  data: {{dataset: mnist1d}}
  model: {{name: cnn1d, width: 25}}
  train: {{epochs: 100, batch_size: 32, max_steps: {steps}}}
  probes: {{hessian: true, gradcov: false, stiffness: false, timeline: false,
           schedule: {{kind: log, points: 2}}, probe_size: 64, val_probe_size: 16}}
seeds: [{seeds}]
resources: {{cpus_per_trial: {cpus}, gpus_per_trial: {gpus}}}
fault_tolerance: {{max_failures: 0, checkpoint_every_epochs: 1}}
"""


def check_sharing(dev: torch.device, steps: int, tmp: Path) -> None:
    gpu = dev.type == "cuda"
    trials = 4 if gpu else 2
    cases = ([("share 0.25", 1, 0.25), ("share 1", 1, 1)] if gpu
             else [("share 0.25", 0.5, 0), ("share 1", 1, 0)])
    for check, cpus, gpus in cases:
        @section(check, str(dev))
        def body():
            name = f"gpu-check-{check.replace(' ', '-').replace('.', '')}"
            path = tmp / f"{name}.yaml"
            per = f"{gpus:g} GPU" if gpu else f"{cpus:g} CPU"
            path.write_text(SPEC.format(name=name, trials=trials, per=per, steps=steps,
                                        seeds=", ".join(str(s) for s in range(trials)),
                                        cpus=cpus, gpus=gpus))
            _sweep_row(check, dev, path, what=f"{trials} trials × {steps} steps at {per} per trial",
                       trials=trials, db=tmp / "mlflow.db", storage=tmp / "ray")
        body()


def _sweep_row(check: str, dev: torch.device, path: Path, *, what: str, trials: int, db: Path,
               storage: Path) -> None:
    """One sweep row: on a GPU (or with --cpu-sweeps) run the spec at `path`
    through `dynsweep run` and report trials per hour; on a CPU without
    --cpu-sweeps only validate it, so the row says the spec is ready."""
    gpu = dev.type == "cuda"
    exe = Path(sys.executable).with_name("dynsweep")
    t0 = time.perf_counter()
    if not gpu and not ARGS.cpu_sweeps:
        out = _cli(exe, ["validate", str(path)], 120)
        ok = "validates" if out.returncode == 0 else "INVALID, " + out.stderr.strip()[-80:]
        row(check, str(dev), f"skipped: no GPU ({what}: {ok}; --cpu-sweeps runs it)",
            time.perf_counter() - t0)
        return
    out = _cli(exe, ["run", str(path), "--storage", str(storage), "--tracking-uri", f"sqlite:///{db}",
                     "--device", "cuda" if gpu else "cpu"], subprocess_timeout())
    sec = time.perf_counter() - t0
    if out.returncode != 0:
        print(out.stdout[-2000:], out.stderr[-2000:], sep="\n")
        row(check, str(dev), f"FAIL: dynsweep run exit {out.returncode}", sec)
        return
    row(check, str(dev), f"ok: {what}: {trials / sec * 3600:.0f} trials/h (wall, incl. Ray start)", sec)


def _cli(exe: Path, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sweeps.cli"]
    return _run(cmd + args, timeout)


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run in its own process group; on timeout or termination, end the whole
    group (a sweep's local Ray included), then re-raise."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# ------------------------------------------------------------ packed trials
def packed_row() -> str:
    """The packed check's row name, with the K it runs (`--packed-k`)."""
    return f"packed K={','.join(map(str, ARGS.packed_k))}"


def check_packed(dev: torch.device) -> None:
    script = ROOT / "benchmarks" / "bench_packed.py"
    if not script.exists():
        row(packed_row(), str(dev), "skipped: packed: not available (no benchmarks/bench_packed.py)", None)
        return

    @section(packed_row(), str(dev))
    def body():
        t0 = time.perf_counter()
        cmd = [sys.executable, str(script), "--device", dev.type, "--packs", *map(str, ARGS.packed_k)]
        out = _run(cmd, subprocess_timeout())
        sec = time.perf_counter() - t0
        print(f"--- {' '.join(cmd[1:])}\n{out.stdout}{out.stderr[-2000:]}---")
        last = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
        res = "ok" if out.returncode == 0 else f"FAIL: exit {out.returncode}"
        row(packed_row(), str(dev), f"{res}: table above; last line: {last[-1][:100] if last else '-'}", sec)
    body()


# ------------------------------------------------------ packed science specs
SCIENCE = ("critical_periods", "early_phase", "two_regimes")


def science_spec(name: str, pack: int, steps: int, bf16: bool):
    """The shipped spec `name` cut for the check: `pack` seeds from its first
    (enough for a first pack of `pack`), `pack` members per pack, `steps`
    optimizer steps per level, IMP to one level, bf16 as asked."""
    from sweeps.spec import load_spec

    spec = load_spec(ROOT / "sweeps" / "specs" / f"{name}.yaml")
    seeds = [spec.seeds[0] + i for i in range(pack)]      # a first pack of `pack` needs at most one seed a member
    cut = {"train.max_steps": steps, "train.bf16": bf16}
    if spec.base.pruning.levels:
        cut.update({"pruning.levels": 1, "train.max_steps": max(steps, 2 * spec.base.pruning.rewind_step)})
    base = spec.base.model_dump(mode="json")
    for path, value in cut.items():
        section, field = path.split(".")
        base[section][field] = value
    return spec.model_copy(update={"seeds": seeds, "conjectures": [], "base": type(spec.base).model_validate(base),
                                   "resources": spec.resources.model_copy(update={"pack": pack})})


def first_pack(spec):
    """The trial configs of the spec's first pack."""
    from sweeps import context
    from sweeps.spec import with_overrides

    base = spec.base.model_dump(mode="json")
    return [with_overrides(base, m["overrides"]) for m in context.pack_values(spec)[0]["members"]]


def check_packed_science(dev: torch.device, steps: int) -> None:
    from dynamics_core.packed import run_packed
    from dynamics_core.sink import MemorySink
    from dynamics_core.train import RunEnv

    for name in SCIENCE:
        @section(f"packed {name}", str(dev))
        def body():
            t_all = time.perf_counter()
            env = RunEnv(device=str(dev), cache_dir=ARGS.cache, checkpoint_every_epochs=0)
            rates, notes = {}, []
            run_packed(first_pack(science_spec(name, 1, 2, False)), [MemorySink()], env)   # warm-up: data, kernels
            for k in ARGS.packed_k:
                cfgs = first_pack(science_spec(name, k, steps, dev.type == "cuda"))
                sinks = [MemorySink() for _ in cfgs]
                t0 = time.perf_counter()
                out = run_packed(cfgs, sinks, env)
                sync(dev)
                sec = time.perf_counter() - t0
                ended = {r.status for r in out.results}
                rates[len(cfgs)] = sum(r.step for r in out.results) / sec
                notes.append(f"K={len(cfgs)}: {rates[len(cfgs)]:.0f} member-steps/s ({'/'.join(sorted(ended))})")
                if not ended <= {"finished", "diverged"}:
                    raise RuntimeError(f"K={len(cfgs)}: members ended {sorted(ended)}")
            one = rates.get(1)
            gain = f"; × K=1: {max(rates.values()) / one:.1f}" if one else ""
            row(f"packed {name}", str(dev), f"ok: bf16 {'on' if dev.type == 'cuda' else 'off (CPU)'}, "
                + ", ".join(notes) + gain, time.perf_counter() - t_all)
        body()


def check_science_sweep(dev: torch.device, steps: int, tmp: Path) -> None:
    import yaml

    gpu = dev.type == "cuda"

    @section("science 0.25", str(dev))
    def body():
        spec = science_spec("critical_periods", 8, steps, gpu)
        share = {"gpus_per_trial": 0.25 if gpu else 0, "cpus_per_trial": 1 if gpu else 0.5}
        spec = spec.model_copy(update={"name": "gpu-check-science", "seeds": spec.seeds[:1],
                                       "resources": spec.resources.model_copy(update=share)})
        path = tmp / "gpu-check-science.yaml"
        path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True), sort_keys=False))
        _sweep_row("science 0.25", dev, path, trials=spec.n_trials(), db=tmp / "mlflow-science.db",
                   storage=tmp / "ray", what=f"critical_periods, {spec.n_trials()} trials in packs of 8 × "
                   f"{steps} steps at {'0.25 GPU' if gpu else '0.5 CPU'} per pack")
    body()


# -------------------------------------------------------------------- DDP
def check_ddp(dev: torch.device, steps: int, width: int) -> None:
    import torch.distributed as dist
    backend = "nccl" if dev.type == "cuda" else "gloo"

    @section(f"ddp {backend}", str(dev))
    def body():
        from dynamics_core.sink import MemorySink
        from dynamics_core.train import RunEnv, run
        if backend == "nccl" and not dist.is_nccl_available():
            row(f"ddp {backend}", str(dev), "skipped: this torch build has no NCCL", None)
            return
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        t0 = time.perf_counter()
        dist.init_process_group(backend, rank=0, world_size=1)
        try:
            sink = MemorySink()
            result = run(tiny_config(steps, dev.type == "cuda", str(dev), width, probes=True), sink,
                         RunEnv(device=str(dev), cache_dir=ARGS.cache, distributed=True))
            sync(dev)
            got = dist.get_backend()
        finally:
            dist.destroy_process_group()
        acc = sink.summary.get("final/val_acc", float("nan"))
        ok = result.status == "finished" and got == backend
        row(f"ddp {backend}", str(dev), ("ok: " if ok else "FAIL: ") +
            f"world size 1, backend {got}, {result.status} after {result.step} steps, "
            f"final/val_acc {acc:.3f}", time.perf_counter() - t0)
    body()


# -------------------------------------------------------------------- main
def main(argv=None) -> int:
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (cuda if available) | cuda | cpu")
    ap.add_argument("--steps", type=int, help="training steps (default 300 on CUDA, 30 on CPU)")
    ap.add_argument("--n", type=int, help="per-example-gradient batch (default 256 / 32)")
    ap.add_argument("--probe-n", type=int, help="batch for the fp32 probes (default 512 / 64)")
    ap.add_argument("--width", type=int, help="cnn1d channels (default 64 / 25)")
    ap.add_argument("--repeats", type=int, help="timed repeats (default 5 / 2)")
    ap.add_argument("--sweep-steps", type=int, help="steps per sweep trial (default 1000 / 20)")
    ap.add_argument("--packed-k", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--sweep-timeout", type=float, default=200, help="seconds per subprocess")
    ap.add_argument("--budget", type=float, default=420,
                    help="seconds for all sections; subprocesses get what is left (the wrapper's "
                         "timeout, GPU_CHECK_TIMEOUT, should be larger)")
    ap.add_argument("--cpu-sweeps", action="store_true",
                    help="without CUDA, run the sharing sweeps (cpus_per_trial 0.5 vs 1) too")
    ap.add_argument("--sections", nargs="+", default=["train", "pergrad", "share", "packed", "science", "ddp"],
                    choices=["train", "pergrad", "share", "packed", "science", "ddp"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--cache", default="runs/data", help="data cache directory")
    ARGS = ap.parse_args(argv)
    if ARGS.threads:
        torch.set_num_threads(ARGS.threads)
    want = ARGS.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA: running the CPU fallback")
        want = "cpu"
    dev = torch.device(want)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    gpu = dev.type == "cuda"
    d = lambda big, small: big if gpu else small  # noqa: E731
    for key, big, small in [("steps", 300, 30), ("n", 256, 32), ("probe_n", 512, 64), ("width", 64, 25),
                            ("repeats", 5, 2), ("sweep_steps", 1000, 20)]:
        if getattr(ARGS, key) is None:
            setattr(ARGS, key, d(big, small))
    print(f"gpu_check: torch {torch.__version__}, "
          f"{f'CUDA {torch.version.cuda}, {torch.cuda.get_device_name(dev)}' if gpu else 'CPU fallback (no CUDA)'}, "
          f"{torch.get_num_threads()} threads; args {vars(ARGS)}", flush=True)
    global DEADLINE
    t_all = time.perf_counter()
    DEADLINE = t_all + ARGS.budget

    def stop(signum, frame):
        raise OutOfTime()
    signal.signal(signal.SIGTERM, stop)
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        backend = "nccl" if gpu else "gloo"
        sections = [  # (name, rows, packages it imports beyond torch, run)
            ("train", ["bf16 train", "fp32 probes"], CORE,
             lambda: check_bf16_and_probes(dev, ARGS.steps, ARGS.width)),
            ("pergrad", ["pergrad"], CORE, lambda: check_pergrad(dev, ARGS.n, ARGS.width)),
            ("share", ["share 0.25", "share 1"], SWEEPS, lambda: check_sharing(dev, ARGS.sweep_steps, tmp)),
            ("packed", [packed_row()], (), lambda: check_packed(dev)),
            ("science", [f"packed {n}" for n in SCIENCE] + ["science 0.25"], SWEEPS,
             lambda: (check_packed_science(dev, ARGS.steps), check_science_sweep(dev, ARGS.steps, tmp))),
            ("ddp", [f"ddp {backend}"], CORE, lambda: check_ddp(dev, ARGS.steps, ARGS.width)),
        ]
        for name, rows, needs, check in sections:
            if name not in ARGS.sections:
                continue
            missing = [m for m in needs if importlib.util.find_spec(m) is None]
            if missing:
                for r in rows:
                    row(r, str(dev), f"skipped: needs {', '.join(missing)} (not installed)", None)
                continue
            check()
    except OutOfTime:
        row("(stopped)", str(dev), "FAIL: terminated (timeout) before all sections ran", None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nGPU check ({'CUDA' if gpu else 'CPU fallback'}), {time.perf_counter() - t_all:.0f} s in all\n")
    header = ["check", "device", "result", "seconds"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")
    return 1 if any(r[2].startswith("FAIL") for r in ROWS) else 0


ARGS = argparse.Namespace()


if __name__ == "__main__":
    sys.exit(main())
