"""Packed trials of the kinds beyond plain SGD — Adam, BatchNorm, patch data,
pre-activation noise — train each member as `train.run` trains it alone:
the MLP classifier bit for bit on CPU (BatchNorm's and Adam's kernels
too), the 1-D CNN to float32 rounding
(its vmapped grouped convolutions round otherwise: measured ≤ 2e-7
relative on the metrics, ≤ 4e-7 of the largest weight after 21 steps).
A pack of these resumes from its checkpoint bit for bit."""
import copy

import pytest
import torch
from torch.func import functional_call, grad, stack_module_state, vmap

from dynamics_core.stacked_adam import StackedAdam
from dynamics_core.stacked_bn import vmappable
from dynamics_core.sink import MemorySink
from dynamics_core.train import RunEnv, reproducible
from dynamics_core.packed import run_packed
from test_packed import PackMemory, assert_close_run, assert_same_run, packed, solo, trial

pytestmark = pytest.mark.usefixtures("single_thread")

ADAM = {"optim": {"name": "adam"}}
BN = {"model": {"batchnorm": True}}
NOISE = {"model": {"preact_noise": 0.3}, "optim": {"schedule": {"noise_off_epoch": 2}}}
PATCH = {"data": {"patch": {"fraction": 0.8, "scale": 2.0, "zeta": 0.25, "noise": 0.1, "size": 4}}}


def assert_members_are_solo_runs(cfgs, cache, exact: bool):
    """Every metric and the final weights (buffers too; a diverged solo run
    leaves none): equal, or to float32 rounding."""
    out, sinks = packed(cfgs, cache)
    for k, cfg in enumerate(cfgs):
        res, sink, weights = solo(cfg, cache)
        assert (out.results[k].status, out.results[k].step) == (res.status, res.step)
        (assert_same_run if exact else assert_close_run)(sinks[k], sink)
        member = out.pack.member_module(k).state_dict()
        for n, w in (weights or {}).items():
            if exact:
                assert torch.equal(member[n], w), n
            else:
                assert (member[n] - w).abs().max() <= 1e-5 * w.abs().max(), n
        assert weights is None or member.keys() == weights.keys()
    return sinks


# -------------------------------------------------------------------- Adam
def test_stacked_adam_is_torch_adam_bit_for_bit_per_member():
    """Per-member lr and weight decay, gradients over six decades, a member
    dropped halfway: each row is what torch.optim.Adam makes of it alone."""
    g = torch.Generator().manual_seed(0)
    shapes = {"w": (37, 53), "b": (53,), "c": (8, 1, 5)}
    lr, wd, betas = [1e-3, 3e-4, 0.1, 1.0], [0.0, 1e-3, 5e-4, 0.0], (0.9, 0.99)
    init = {n: torch.randn(4, *s, generator=g) for n, s in shapes.items()}
    grads = [{n: torch.randn(4, *s, generator=g) * 10.0 ** (i % 7 - 4) for n, s in shapes.items()}
             for i in range(30)]
    stacked = {n: v.clone() for n, v in init.items()}
    opt, rows = StackedAdam(stacked, betas), [0, 1, 2, 3]
    for i, grad in enumerate(grads):
        if i == 15:
            rows = [0, 2, 3]
            opt.keep(torch.tensor([0, 2, 3]))
            stacked = opt.params = {n: v[rows] for n, v in stacked.items()}
        opt.step({n: v[rows] for n, v in grad.items()}, [lr[r] for r in rows], [0.0] * len(rows),
                 [wd[r] for r in rows])
    for row, r in enumerate(rows):
        alone = [torch.nn.Parameter(init[n][r].clone()) for n in shapes]
        torch_adam = torch.optim.Adam(alone, lr=lr[r], betas=betas, weight_decay=wd[r])
        for grad in grads:
            for p, n in zip(alone, shapes):
                p.grad = grad[n][r].clone()
            torch_adam.step()
        assert all(torch.equal(p.detach(), stacked[n][row]) for p, n in zip(alone, shapes))


@pytest.mark.parametrize("arch", ["mlp", "cnn1d"])
def test_adam_members_are_their_solo_runs(mnist1d_cache, arch):
    cfgs = [trial(seed=0, lr=1e-3, arch=arch, **ADAM),
            trial(seed=1, lr=3e-3, weight_decay=1e-3, arch=arch, **ADAM)]
    assert_members_are_solo_runs(cfgs, mnist1d_cache, exact=arch == "mlp")


# --------------------------------------------------------------- BatchNorm
@pytest.mark.parametrize("arch", ["mlp", "cnn1d"])
def test_batchnorm_members_keep_their_own_running_statistics(mnist1d_cache, arch):
    """Batch statistics in training, each member's running statistics (which
    the member_module state dicts compare) in evaluation, as alone."""
    cfgs = [trial(seed=0, lr=0.05, arch=arch, **BN), trial(seed=1, lr=0.1, momentum=0.9, arch=arch, **BN)]
    assert_members_are_solo_runs(cfgs, mnist1d_cache, exact=arch == "mlp")


@pytest.mark.parametrize("shape", [(32, 6), (32, 6, 9), (32, 6, 5, 5)])
def test_folded_batchnorm_is_each_members_solo_batchnorm_bit_for_bit(shape):
    """Training output, input/weight/bias gradients, running statistics, and the
    eval output and gradients of K = 3 vmapped members: each member's solo BatchNorm's."""
    g = torch.Generator().manual_seed(0)
    norm = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}[len(shape)]
    members = [norm(shape[1]) for _ in range(3)]
    for m in members:
        m.weight.data, m.bias.data = torch.randn(shape[1], generator=g), torch.randn(shape[1], generator=g)
    x, w = torch.randn(3, *shape, generator=g) * 2 + 1, torch.randn(3, *shape, generator=g)
    params, buffers = stack_module_state(members)
    params = {k: v.detach() for k, v in params.items()}
    base = vmappable(copy.deepcopy(members[0]).to("meta"))

    def loss(p, b, x, w):
        out = functional_call(base, (p, b), (x,))
        return (out * w).sum(), out

    (gp, gx), out = vmap(grad(loss, argnums=(0, 2), has_aux=True))(params, buffers, x, w)
    eval_base = copy.deepcopy(base).eval()
    evaluated = vmap(functional_call, in_dims=(None, 0, 0))(eval_base, (params, buffers), (x,))

    def eval_loss(p, b, x, w):
        return (functional_call(eval_base, (p, b), (x,)) * w).sum()

    ep, ex = vmap(grad(eval_loss, argnums=(0, 2)))(params, buffers, x, w)   # a probe's gradient: running statistics
    for k, m in enumerate(members):
        xk = x[k].clone().requires_grad_()
        solo = m(xk)
        (solo * w[k]).sum().backward()
        assert torch.equal(solo, out[k]) and torch.equal(xk.grad, gx[k])
        assert torch.equal(m.weight.grad, gp["weight"][k]) and torch.equal(m.bias.grad, gp["bias"][k])
        assert all(torch.equal(v, buffers[n][k]) for n, v in m.named_buffers())
        assert torch.equal(m.eval()(x[k]), evaluated[k])
        m.zero_grad()
        xk = x[k].clone().requires_grad_()
        (m(xk) * w[k]).sum().backward()
        assert torch.equal(xk.grad, ex[k])
        assert torch.equal(m.weight.grad, ep["weight"][k]) and torch.equal(m.bias.grad, ep["bias"][k])


# ----------------------------------------------------------------- patches
def test_patch_data_members_are_their_solo_runs(mnist1d_cache):
    cfgs = [trial(seed=0, lr=0.05, **PATCH), trial(seed=1, lr=0.1, momentum=0.9, **PATCH)]
    sinks = assert_members_are_solo_runs(cfgs, mnist1d_cache, exact=True)
    assert len(sinks[0].series("patch/acc")) == 3


def test_large_lr_kind_cnn1d_batchnorm_patches_weight_decay(mnist1d_cache):
    """The shipped large_lr spec's trial kind: 1-D CNN with BatchNorm on patch data."""
    over = {**PATCH, "model": {"batchnorm": True, "width": 16}}
    cfgs = [trial(seed=8, lr=1.0, weight_decay=5e-4, arch="cnn1d", **over),
            trial(seed=9, lr=0.1, weight_decay=5e-4, arch="cnn1d", **over)]
    assert_members_are_solo_runs(cfgs, mnist1d_cache, exact=False)


# ---------------------------------------------------- pre-activation noise
@pytest.mark.parametrize("arch", ["mlp", "cnn1d"])
def test_noisy_members_draw_their_solo_runs_noise(mnist1d_cache, arch):
    """Each member draws from its own generator what its solo run draws from
    the global RNG, in the same order, until noise_off_epoch switches it off."""
    cfgs = [trial(seed=0, lr=0.05, arch=arch, **NOISE), trial(seed=1, lr=0.1, momentum=0.9, arch=arch, **NOISE)]
    sinks = assert_members_are_solo_runs(cfgs, mnist1d_cache, exact=arch == "mlp")
    _, quiet = packed([trial(seed=0, lr=0.05, arch=arch)], mnist1d_cache)
    assert sinks[0].series("train/loss")[0] != quiet[0].series("train/loss")[0]   # the noise is there


def test_noise_with_batchnorm_members_are_their_solo_runs(mnist1d_cache):
    over = {**NOISE, "model": {**NOISE["model"], "batchnorm": True}}
    cfgs = [trial(seed=0, lr=0.05, **over), trial(seed=1, lr=0.1, **over)]
    assert_members_are_solo_runs(cfgs, mnist1d_cache, exact=True)


# -------------------------------------------------------------- divergence
@pytest.mark.parametrize("over", [ADAM, BN, NOISE], ids=["adam", "batchnorm", "noise"])
def test_a_diverging_member_leaves_the_others_as_alone(mnist1d_cache, over):
    """Dropped at its step: the others' moments, running statistics and noise
    generators go on as their solo runs'."""
    lr = (1e-3, 2e-3) if over is ADAM else (0.05, 0.1)
    cfgs = [trial(seed=0, lr=lr[0], **over), trial(seed=3, lr=1e3, **over), trial(seed=1, lr=lr[1], **over)]
    assert_members_are_solo_runs(cfgs, mnist1d_cache, exact=True)
    assert packed(cfgs[1:2], mnist1d_cache)[0].results[0].status == "diverged"


# ------------------------------------------------------------------ resume
@pytest.mark.parametrize("over", [ADAM, BN, NOISE], ids=["adam", "batchnorm", "noise"])
def test_a_pack_resumes_from_its_checkpoint_bit_for_bit(mnist1d_cache, tmp_path, over):
    """Adam's moments and step counts, BatchNorm's running statistics, each
    member's noise generator (noise on until epoch 2): stopped
    after epoch 1 and resumed from that checkpoint, every member's records and
    weights are the uninterrupted run's."""
    lr = (1e-3, 3e-3) if over is ADAM else (0.05, 0.1)
    cfgs = [trial(seed=0, lr=lr[0], **over), trial(seed=1, lr=lr[1], weight_decay=1e-3, momentum=0.9, **over)]
    full = [MemorySink() for _ in cfgs]
    whole = run_packed(cfgs, full, RunEnv(cache_dir=mnist1d_cache))
    before, mem = [MemorySink() for _ in cfgs], PackMemory(tmp_path)
    run_packed(cfgs, before, RunEnv(cache_dir=mnist1d_cache, stop_after_step=7), pack_sink=mem)
    state = mem.checkpoints[-1][3]
    assert state["step"] == 7
    if over is ADAM:
        assert state["optimizer"]["steps"] == [7, 7] and state["optimizer"]["exp_avg"] is not None
    elif over is BN:
        assert state["buffers"]["hidden.0.norm.num_batches_tracked"].tolist() == [7, 7]
    else:
        assert len(state["noise_rng"]) == 2
    after = [MemorySink() for _ in cfgs]
    resumed = run_packed(cfgs, after, RunEnv(cache_dir=mnist1d_cache), resume=state)
    for k in range(len(cfgs)):
        assert reproducible(before[k].metrics + after[k].metrics) == reproducible(full[k].metrics)
        assert reproducible(after[k].summary) == reproducible(full[k].summary)
        a, b = resumed.pack.member_module(k).state_dict(), whole.pack.member_module(k).state_dict()
        assert all(torch.equal(a[n], b[n]) for n in a)
