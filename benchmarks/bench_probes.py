"""Probe costs against peers, side by side in one run on the same model and batch.

(a) λ_H¹: our Lanczos (`hessian_top_eigen`) vs PyHessian's power iteration
    and curvlinops' `HessianLinearOperator(...).to_scipy()` under scipy's
    `eigsh(k=1, which='LA')` (at its defaults, and at tol 1e-3 with small
    `ncv`): HVPs, time and relative error against a float64 reference
    (dense eigh, or ARPACK at tol 1e-12: not our code).
(b) per-example gradients (for K and stiffness): ours ("layers" and "vmap")
    vs a per-example autograd loop, BackPACK `BatchGrad`, opacus
    `GradSampleModule` and the plain `torch.func` recipe (vmap(grad) over
    `functional_call`): time, max |Δ| to the loop.
(c) one default probe round (`default_probe_round`, default `ProbesConfig`)
    as a multiple of one training step (forward + backward + SGD step) at
    batch 32 and 128.

Times are medians over `--repeats` (wall time, or this process's CPU time
with `--clock cpu`), with the methods of a section interleaved in every
repeat so that background load hits them alike. Needs the `bench` extra
(`pip install -e '.[bench]'`); `--peers` drops curvlinops or opacus. Usage:

    python benchmarks/bench_probes.py --threads 1 --repeats 5 --clock cpu   # the README table
    python benchmarks/bench_probes.py --model cnn1d:25 --repeats 3
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from dynamics_core import models
from dynamics_core.config import DataConfig, ModelConfig, ProbesConfig, TrialConfig
from dynamics_core.data import load
from dynamics_core.probes import hessian_hvp, hessian_top_eigen, per_example_gradients, probe_mode

warnings.filterwarnings("ignore", module="backpack")
warnings.filterwarnings("ignore", message="Full backward hook")
warnings.filterwarnings("ignore", message="Using backward")
warnings.filterwarnings("ignore", module="opacus")

DEFAULT_EIGSH = "curvlinops + eigsh defaults (tol 0, ncv 20)"


# ------------------------------------------------------------------ helpers
def timed(fn):
    t0 = CLOCK()
    out = fn()
    return CLOCK() - t0, out


def interleaved(methods: dict, repeats: int) -> dict[str, list]:
    """Run every method once per repeat, in turn; {name: [(seconds, result), ...]}."""
    runs = {k: [] for k in methods}
    for r in range(repeats):
        for name, fn in methods.items():
            runs[name].append(timed(lambda: fn(r)))
    return runs


def med(xs):
    return statistics.median(xs)


def table(title, header, rows):
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def setup(spec: str, seed: int, train_steps: int, lr: float):
    name, _, width = spec.partition(":")
    if name == "simple_cnn":  # no CIFAR offline: a CIFAR-shaped Gaussian batch
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(4000, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (4000,), generator=g)
        data = None
        shape, classes = (3, 32, 32), 10
    else:
        data = load(DataConfig(), "cpu", ARGS.cache)
        x, y, shape, classes = data.x_train, data.y_train, data.input_shape, data.num_classes
    cfg = ModelConfig(name=name, width=int(width) if width else 128)
    model = models.build(cfg, shape, classes, seed)
    sgd_steps(model, x, y, train_steps, 32, lr, seed)
    return model, x, y, data


def sgd_steps(model, x, y, steps, batch, lr, seed):
    """Plain SGD on random batches (moves the model off its initialisation)."""
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)


# ------------------------------------------------------ (a) top eigenvalue
def reference_top(model, x, y, dense_max):
    """λ_H¹ in float64, independent of our Lanczos: dense eigh if p ≤ dense_max,
    else ARPACK (`scipy.sparse.linalg.eigsh`, which='LA') at tol 1e-12."""
    from scipy.sparse.linalg import LinearOperator, eigsh
    m64 = copy.deepcopy(model).double()
    x64 = x.double()
    p = sum(q.numel() for q in m64.parameters())
    if p <= dense_max:
        cols = [hessian_hvp(m64, F.cross_entropy, x64, y, e) for e in torch.eye(p, dtype=torch.float64)]
        H = torch.stack(cols, 1)
        return float(torch.linalg.eigvalsh((H + H.T) / 2)[-1]), "dense eigh (float64)"
    count = [0]

    def matvec(v):
        count[0] += 1
        v = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
        return hessian_hvp(m64, F.cross_entropy, x64, y, v).numpy()

    op = LinearOperator((p, p), matvec=matvec, dtype=np.float64)
    w = eigsh(op, k=1, which="LA", tol=1e-12, ncv=40, maxiter=100_000,
              v0=np.random.default_rng(ARGS.seed).standard_normal(p), return_eigenvectors=False)
    return float(w[0]), f"ARPACK eigsh tol 1e-12 (float64, {count[0]} HVPs)"


def pyhessian_top(model, x, y, tol, seed):
    """PyHessian power iteration on a copy (it sets eval() and writes .grad);
    HVPs counted by wrapping the function its module calls."""
    import importlib
    ph = importlib.import_module("pyhessian.hessian")  # the module, not the class it exports
    count = [0]
    original = ph.hessian_vector_product

    def counting(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    m = copy.deepcopy(model)
    torch.manual_seed(seed)  # PyHessian draws its start vector from the global RNG
    ph.hessian_vector_product = counting
    try:
        values, _ = ph.hessian(m, torch.nn.CrossEntropyLoss(), data=(x, y),
                               cuda=False).eigenvalues(maxIter=100, tol=tol, top_n=1)
    finally:
        ph.hessian_vector_product = original
    return values[0], count[0]


def curvlinops_top(model, x, y, seed, **eigsh_kwargs):
    """curvlinops' Hessian as a SciPy operator, under `eigsh(k=1, which='LA')`.
    Built per call, as a user would (check_deterministic=False: the check
    costs extra passes and our batch is fixed); HVPs counted at the operator."""
    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import LinearOperator, eigsh
    params = [q for q in model.parameters() if q.requires_grad]
    with probe_mode(model):  # eval mode, as ours and PyHessian measure
        H = HessianLinearOperator(model, torch.nn.CrossEntropyLoss(), params, [(x, y)],
                                  check_deterministic=False).to_scipy()
        count = [0]

        def matvec(v):
            count[0] += 1
            return H.matvec(v)

        op = LinearOperator(H.shape, matvec=matvec, dtype=H.dtype)
        v0 = np.random.default_rng(seed).standard_normal(H.shape[0])
        w = eigsh(op, k=1, which="LA", v0=v0, return_eigenvectors=False, **eigsh_kwargs)
    return float(w[0]), count[0]


def bench_hessian(spec, repeats):
    model, x, y, _ = setup(spec, ARGS.seed, ARGS.train_steps, ARGS.lr)
    x, y = x[:ARGS.hessian_n], y[:ARGS.hessian_n]
    t0 = time.perf_counter()
    ref, how = reference_top(model, x, y, ARGS.dense_max)
    how += f", {time.perf_counter() - t0:.0f} s"

    def ours(tol):
        def run(r):  # the start vector from a generator seeded per repeat, like PyHessian's
            e = hessian_top_eigen(model, F.cross_entropy, x, y, tol=tol,
                                  generator=torch.Generator().manual_seed(r))
            return e.value, e.n_hvp
        return run

    methods = {f"ours Lanczos tol {t:g}": ours(t) for t in ARGS.our_tols}
    methods.update({f"PyHessian power tol {t:g}": (lambda t: lambda r: pyhessian_top(model, x, y, t, r))(t)
                    for t in ARGS.pyhessian_tols})
    if "curvlinops" in ARGS.peers:
        methods[DEFAULT_EIGSH] = lambda r: curvlinops_top(model, x, y, r)
        methods.update({f"curvlinops + eigsh tol 1e-3, ncv {k}":
                        (lambda k: lambda r: curvlinops_top(model, x, y, r, tol=1e-3, ncv=k))(k)
                        for k in ARGS.eigsh_ncv})
    runs = interleaved(methods, repeats)
    times = {name: med([t for t, _ in rs]) for name, rs in runs.items()}
    tuned = [n for n in times if n.startswith("PyHessian") or n.startswith("curvlinops + eigsh tol")]
    best = min(times[n] for n in tuned)
    rows = []
    for name, rs in runs.items():
        errs = [abs(v - ref) / abs(ref) for _, (v, _) in rs]
        vs_default = f"{times[name] / times[DEFAULT_EIGSH]:.2f}" if DEFAULT_EIGSH in times else ""
        rows.append([spec, name, f"{med([h for _, (_, h) in rs]):.0f}",
                     f"{1e3 * times[name]:.0f}", f"{times[name] / best:.2f}", vs_default,
                     f"{med(errs):.1e}", f"{max(errs):.1e}"])
    p = sum(q.numel() for q in model.parameters())
    table(f"(a) λ_H¹ = {ref:.6g}, {spec}, p = {p}, n = {len(x)}; reference: {how}",
          ["model", "method", "HVPs (median)", "ms (median)", "× best tuned peer",
           "× eigsh defaults", "rel. err (median)", "rel. err (max)"],
          rows)
    return rows


# ------------------------------------------------ (b) per-example gradients
def loop_grads(model, x, y):
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(len(x)):
        g = torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), params)
        rows.append(torch.cat([t.reshape(-1) for t in g]))
    return torch.stack(rows)


def backpack_grads(extended, loss, x, y):
    from backpack import backpack
    from backpack.extensions import BatchGrad
    extended.zero_grad(set_to_none=True)
    with backpack(BatchGrad()):
        loss(extended(x), y).backward()  # sum-reduced: grad_batch[i] = ∇ loss_i
    return torch.cat([p.grad_batch.reshape(len(x), -1) for p in extended.parameters()], 1)


def opacus_grads(wrapped, x, y):
    """opacus `GradSampleModule` (hooks; loss_reduction="sum"): p.grad_sample[i] = ∇ loss_i.
    Its hooks record only in train mode (same outputs here: no dropout, no BatchNorm)."""
    wrapped.train()
    wrapped.zero_grad(set_to_none=True)  # clears .grad_sample too
    F.cross_entropy(wrapped(x), y, reduction="sum").backward()
    return torch.cat([p.grad_sample.reshape(len(x), -1) for p in wrapped.parameters()], 1)


def func_vmap_grads(model, x, y):
    """The plain torch.func recipe: vmap(grad(loss of one example)) over functional_call."""
    from torch.func import functional_call, grad, vmap
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(ps, xi, yi):
        return F.cross_entropy(functional_call(model, (ps, buffers), (xi[None],)), yi[None])

    g = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([t.reshape(len(x), -1) for t in g.values()], 1)


def bench_pergrad(spec, repeats):
    from backpack import extend
    model, x, y, _ = setup(spec, ARGS.seed, ARGS.train_steps, ARGS.lr)
    model.eval()
    x, y = x[:ARGS.n], y[:ARGS.n]
    extended = extend(copy.deepcopy(model))
    loss = extend(torch.nn.CrossEntropyLoss(reduction="sum"))
    methods = {
        "ours (auto: layers)": lambda r: per_example_gradients(model, F.cross_entropy, x, y),
        "ours (vmap)": lambda r: per_example_gradients(model, F.cross_entropy, x, y, method="vmap"),
        "BackPACK BatchGrad": lambda r: backpack_grads(extended, loss, x, y),
    }
    peers = ["BackPACK BatchGrad", "torch.func vmap (plain)", "autograd loop"]
    if "opacus" in ARGS.peers:
        from opacus import GradSampleModule
        wrapped = GradSampleModule(copy.deepcopy(model), batch_first=True, loss_reduction="sum")
        methods["opacus GradSampleModule"] = lambda r: opacus_grads(wrapped, x, y)
        peers.append("opacus GradSampleModule")
    methods["torch.func vmap (plain)"] = lambda r: func_vmap_grads(model, x, y)
    methods["autograd loop"] = lambda r: loop_grads(model, x, y)
    runs = interleaved(methods, repeats)
    truth = runs["autograd loop"][0][1]
    t_ref = min(med([t for t, _ in runs[k]]) for k in peers)
    rows = []
    for name, rs in runs.items():
        t = med([t for t, _ in rs])
        diff = max(float((g - truth).abs().max()) for _, g in rs)
        rows.append([spec, name, f"{1e3 * t:.1f}", f"{t / t_ref:.2f}", f"{diff:.1e}"])
    p = sum(q.numel() for q in model.parameters())
    table(f"(b) per-example gradients, {spec}, p = {p}, n = {len(x)}",
          ["model", "method", "ms (median)", "× best peer", "max abs diff vs loop"], rows)
    return rows


# ------------------------------------------------- (c) probe round vs step
def default_probe_round(model, data, lr, batch_size):
    """round(step) -> metrics: one default probe round as the training loop
    runs it. The only use of `dynamics_core.measure`/`hooks` in this file."""
    from dynamics_core.hooks import StepContext
    from dynamics_core.measure import default_hooks
    hooks = default_hooks(TrialConfig(probes=ProbesConfig()), data)
    init = [p.detach().clone() for p in model.parameters()]

    def round_at(step):
        ctx = StepContext(step=step, epoch=0, model=model, loss_fn=torch.nn.CrossEntropyLoss(),
                          data=data, lr=lr, momentum=0.0, batch_size=batch_size, init_params=init,
                          log_artifact=lambda name, value: None)
        # one ctx: one shared cache; the hooks' metrics merged into one dict
        return {k: v for hook in hooks for k, v in (hook(ctx) or {}).items()}
    return round_at


def bench_round(spec, repeats):
    model, x, y, data = setup(spec, ARGS.seed, ARGS.train_steps, ARGS.lr)
    if data is None:
        print(f"\n(c) skipped for {spec}: the probe round needs a dynamics_core data set")
        return []
    probe_round_at = default_probe_round(model, data, ARGS.lr, 32)
    opt = torch.optim.SGD(model.parameters(), lr=ARGS.lr)
    g = torch.Generator().manual_seed(ARGS.seed + 2)

    def step(batch):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        model.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()

    def probe_round(r):
        for _ in range(10):  # move on between rounds, as training would (untimed)
            step(32)
        return timed(lambda: probe_round_at(r))

    rounds = [probe_round(r) for r in range(repeats + 1)]  # the first is cold (no warm start)
    cold, warm = rounds[0], rounds[1:]
    steps = {b: med([timed(lambda: step(b))[0] for _ in range(20 * repeats)]) for b in (32, 128)}
    t_cold, t_warm = cold[0], med([t for t, _ in warm])
    hvps = med([o["hessian/n_hvp"] for _, o in warm])
    rows = [[spec, "probe round, cold (1st)", f"{1e3 * t_cold:.0f}", f"{cold[1]['hessian/n_hvp']:.0f}",
             f"{t_cold / steps[32]:.0f}", f"{t_cold / steps[128]:.0f}"],
            [spec, "probe round, warm start", f"{1e3 * t_warm:.0f}", f"{hvps:.0f}",
             f"{t_warm / steps[32]:.0f}", f"{t_warm / steps[128]:.0f}"],
            [spec, "train step, batch 32", f"{1e3 * steps[32]:.2f}", "", "1", ""],
            [spec, "train step, batch 128", f"{1e3 * steps[128]:.2f}", "", "", "1"]]
    table(f"(c) one default probe round (hessian n=256, K + stiffness on 256 + 128 val, timeline) "
          f"vs one SGD step, {spec}",
          ["model", "what", "ms (median)", "HVPs", "× step (b=32)", "× step (b=128)"], rows)
    return rows


def main(argv=None):
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", default=["cnn1d:25", "cnn1d:64", "mlp:128"],
                    help="NAME[:WIDTH], NAME in mlp | cnn1d | simple_cnn (simple_cnn: CIFAR-shaped "
                         "Gaussian inputs, as no CIFAR is available offline)")
    ap.add_argument("--n", type=int, default=256, help="batch for per-example gradients")
    ap.add_argument("--hessian-n", type=int, default=512, help="batch for λ_H¹")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-steps", type=int, default=200,
                    help="SGD steps (batch 32) before measuring, to leave the initialisation")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--our-tols", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2],
                    help="relative residual tolerances of hessian_top_eigen (its default is 1e-3)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads, and BLAS threads for numpy/scipy (0: the libraries' defaults)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: elapsed time; cpu: this process's CPU time (all its threads), "
                         "far less sensitive to other jobs on a loaded machine")
    ap.add_argument("--pyhessian-tols", type=float, nargs="+", default=[1e-3, 1e-4])
    ap.add_argument("--dense-max", type=int, default=3000,
                    help="largest p for a dense-Hessian reference (else float64 Lanczos)")
    ap.add_argument("--eigsh-ncv", type=int, nargs="+", default=[4, 8],
                    help="ncv values for curvlinops + eigsh at tol 1e-3 (eigsh's default ncv is 20)")
    ap.add_argument("--peers", nargs="*", default=["curvlinops", "opacus"],
                    choices=["curvlinops", "opacus"],
                    help="optional peers (PyHessian and BackPACK always run)")
    ap.add_argument("--sections", nargs="+", default=["hessian", "pergrad", "round"],
                    choices=["hessian", "pergrad", "round"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default="runs/data", help="data cache directory")
    ARGS = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if ARGS.clock == "cpu" else time.perf_counter
    if ARGS.threads:
        torch.set_num_threads(ARGS.threads)
        try:  # numpy/scipy BLAS (our Lanczos, ARPACK): spinning BLAS threads distort timings under load
            from threadpoolctl import threadpool_limits
            threadpool_limits(ARGS.threads)
        except ImportError:
            print("threadpoolctl not installed: BLAS threads left at their default")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, numpy {np.__version__}, "
          f"load average {' '.join(f'{a:.1f}' for a in os.getloadavg())}, {ARGS.clock} clock, "
          f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'} "
          f"(benchmarks run on CPU)")
    print(f"args: {vars(ARGS)}")
    for spec in ARGS.model:
        if "hessian" in ARGS.sections:
            bench_hessian(spec, ARGS.repeats)
        if "pergrad" in ARGS.sections:
            bench_pergrad(spec, ARGS.repeats)
        if "round" in ARGS.sections:
            bench_round(spec, ARGS.repeats)


ARGS: argparse.Namespace
CLOCK = time.perf_counter


if __name__ == "__main__":
    main()
