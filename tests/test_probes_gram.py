"""The Gram of per-example gradients without forming them (`per_example_gram`)
against brute-force loops, and the probe round's one Gram over train and
validation gradients against the separate computations it replaced."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dynamics_core import models
from dynamics_core.config import ModelConfig, ProbesConfig, TrialConfig
from dynamics_core.hooks import StepContext
from dynamics_core.measure import default_hooks
from dynamics_core.measure.base import ProbeSet
from dynamics_core.probes import (covariance_spectrum, gram_matrix, per_example_gradients,
                                  per_example_gram, stiffness, stiffness_from)
from test_probes_gradients import check_stiffness, conv_bn, data, loop_grads, mlp, naive_stiffness


class Twice(nn.Module):
    """One Linear layer called twice: no per-layer factorisation (fallback)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.b(torch.tanh(self.a(torch.tanh(self.a(x)))))


def frozen_first():
    model = mlp(seed=3)
    model[0].weight.requires_grad_(False)      # trainable bias, frozen weight
    return model


def with_layernorm():                          # no layer rule: vmap fallback
    torch.manual_seed(4)
    return nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Tanh(), nn.Linear(5, 3)).double()


def positions():                               # Linear over (n, positions, features)
    torch.manual_seed(5)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.out = nn.Linear(2, 3), nn.Linear(6, 3)

        def forward(self, x):
            return self.out(torch.tanh(self.lin(x.reshape(len(x), 2, 2))).flatten(1))
    return Net().double()


@pytest.mark.parametrize("make, shape", [(mlp, (4,)), (conv_bn, (1, 8)), (frozen_first, (4,)),
                                         (Twice, (4,)), (with_layernorm, (4,)), (positions, (4,))])
@pytest.mark.parametrize("chunk", [None, 5])
def test_per_example_gram_matches_loop(make, shape, chunk):
    model = make().double() if make is Twice else make()
    x, y = data(13, shape)
    g = loop_grads(model, F.cross_entropy, x, y)
    gram = per_example_gram(model, F.cross_entropy, x, y, chunk_size=chunk)
    assert gram.dtype == torch.float64 and gram.shape == (13, 13)
    torch.testing.assert_close(gram, g @ g.T, rtol=1e-12, atol=1e-14)


def test_per_example_gram_blocked_symmetric_product_matches_loop():
    # more examples than one block (128): the Gram of conv and BatchNorm columns
    # is built from the blocks on and above the diagonal, mirrored
    model = conv_bn()
    x, y = data(150, (1, 8))
    g = loop_grads(model, F.cross_entropy, x, y)
    gram = per_example_gram(model, F.cross_entropy, x, y)
    torch.testing.assert_close(gram, g @ g.T, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gram, gram.T, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("make, shape", [(mlp, (4,)), (conv_bn, (1, 8)), (Twice, (4,)), (positions, (4,))])
@pytest.mark.parametrize("exact", [0, 5])
def test_per_example_gram_exact_rows_match_loop_in_float64(make, shape, exact):
    # float64 models: every entry, float64-accumulated or not, is the loop's
    model = make().double() if make is Twice else make()
    x, y = data(13, shape)
    g = loop_grads(model, F.cross_entropy, x, y)
    gram = per_example_gram(model, F.cross_entropy, x, y, exact=exact)
    torch.testing.assert_close(gram, g @ g.T, rtol=1e-12, atol=1e-14)


def test_per_example_gram_accumulates_only_the_exact_block_in_float64():
    """A float32 model: the exact×exact block is the float64 product of the
    float32 gradients (as `gram_matrix` computes it); every other entry is a
    float32 product, a float32 number within float32 rounding of it."""
    torch.manual_seed(0)
    model = Twice()                                    # float32, fallback: G is formed
    x, y = data(13, (4,))
    x = x.float()
    g = per_example_gradients(model, F.cross_entropy, x, y)
    ref = gram_matrix(g)
    gram = per_example_gram(model, F.cross_entropy, x, y, exact=5)
    torch.testing.assert_close(gram[:5, :5], ref[:5, :5], rtol=1e-12, atol=1e-15)
    rest = torch.ones(13, 13, dtype=torch.bool)
    rest[:5, :5] = False
    scale = ref.diagonal().sqrt()
    assert float(((gram - ref).abs() / (scale[:, None] * scale[None, :]))[rest].max()) < 1e-6
    assert torch.equal(gram[rest].float().double(), gram[rest])
    assert torch.equal(gram, gram.T)


def test_joint_gram_stiffness_between_sets_matches_double_loop():
    model = mlp()
    x, y = data(9, (4,), seed=3)
    xb, yb = data(7, (4,), seed=4)
    ga, gb = (loop_grads(model, F.cross_entropy, *d) for d in ((x, y), (xb, yb)))
    joint = per_example_gram(model, F.cross_entropy, torch.cat([x, xb]), torch.cat([y, yb]))
    check_stiffness(stiffness_from(y, 3, gram=joint, other_targets=yb),
                    *naive_stiffness(ga, y, gb, yb, 3, within=False))
    check_stiffness(stiffness_from(yb, 3, gram=joint[9:, 9:]), *naive_stiffness(gb, yb, gb, yb, 3, within=True))
    via_model = stiffness(None, None, x, y, 3, other=(xb, yb), gram=joint)
    assert via_model["cos"] == pytest.approx(stiffness(model, F.cross_entropy, x, y, 3, other=(xb, yb))["cos"],
                                             abs=1e-12)
    with pytest.raises(ValueError, match="stacked sets"):
        stiffness_from(y, 3, gram=joint[:9, :9], other_targets=yb)


@pytest.mark.parametrize("name, width", [("mlp", 32), ("cnn1d", 8)])
def test_probe_round_shared_gram_equals_separate_computation(mnist1d_cache, name, width):
    """float32 models as trained: K and stiffness from the round's one joint
    Gram, and the timeline's gradient norm (one backward of the mean loss),
    equal the separate float64 products of the materialised float32 gradients
    (the previous probe round) to float32 rounding."""
    from dynamics_core.data import load
    from dynamics_core.config import DataConfig
    data_ = load(DataConfig(train_size=400, test_size=200), torch.device("cpu"), mnist1d_cache)
    cfg = TrialConfig(model=ModelConfig(name=name, width=width),
                      probes=ProbesConfig(hessian=False, probe_size=64, val_probe_size=48))
    model = models.build(cfg.model, data_.input_shape, data_.num_classes, 0)
    hooks = default_hooks(cfg, data_)
    ctx = StepContext(step=0, epoch=0, model=model, loss_fn=nn.CrossEntropyLoss(), data=data_, lr=0.1,
                      momentum=0.0, batch_size=32, init_params=[p.detach().clone() for p in model.parameters()],
                      log_artifact=lambda name, value: None)
    out = {}
    for h in hooks:
        out.update(h(ctx))
    ps: ProbeSet = hooks[0].probes
    g = per_example_gradients(model, F.cross_entropy, ps.x, ps.y).double()
    gv = per_example_gradients(model, F.cross_entropy, ps.xv, ps.yv).double()
    k = covariance_spectrum(gram=gram_matrix(g))
    for key in ("top", "trace"):
        assert out[f"gradcov/{key}"] == pytest.approx(k[key], rel=1e-5)
    assert out["gradcov/smallest_nonzero"] == pytest.approx(k["smallest_nonzero"], rel=1e-3)
    separate = {"train_train": stiffness_from(ps.y, 10, g),
                "train_val": stiffness_from(ps.y, 10, g, other_grads=gv, other_targets=ps.yv),
                "val_val": stiffness_from(ps.yv, 10, gv)}
    for pair, s in separate.items():
        assert out[f"stiffness/{pair}/cos"] == pytest.approx(s["cos"], abs=1e-6)
        for key in ("cos_within", "cos_between"):
            assert out[f"stiffness/{pair}/{key}"] == pytest.approx(s[key], abs=1e-6)
        # a sign may differ only where float32 rounding can flip it (|cos| ≲ 1e-6)
        a, b = (g, g) if pair == "train_train" else (g, gv) if pair == "train_val" else (gv, gv)
        cos = (a @ b.T) / (a.norm(dim=1)[:, None] * b.norm(dim=1)[None, :])
        pairs = cos.numel() - (len(a) if a is b else 0)
        fragile = int((cos.abs() < 1e-6).sum())
        assert abs(out[f"stiffness/{pair}/sign"] - s["sign"]) <= fragile / pairs + 1e-12
    assert out["timeline/grad_norm"] == pytest.approx(float(g.mean(0).norm()), rel=1e-6)
    assert np.isfinite(out["gradcov/top"])
