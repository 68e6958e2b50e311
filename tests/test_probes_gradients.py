"""Per-example gradients, gradient covariance K, stiffness and Fisher trace
against brute-force loops on tiny float64 models."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dynamics_core.probes import (covariance_spectrum, fisher_trace, gradient_covariance, gram_matrix,
                                  per_example_gradients, sample_labels, stiffness,
                                  stiffness_by_distance, stiffness_from)


def mlp(seed=0, d=4, h=5, c=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, c)).double()


def conv_bn(seed=1, act=nn.ReLU, train=False):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2), act(),
                          nn.Flatten(), nn.Linear(2 * 6, 3)).double()
    with torch.no_grad():
        model[1].running_mean.copy_(torch.tensor([0.3, -0.2]))
        model[1].running_var.copy_(torch.tensor([1.5, 0.7]))
    return model.train(train)


def loop_grads(model, loss_fn, x, y):
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(len(x)):
        g = torch.autograd.grad(loss_fn(model(x[i:i + 1]), y[i:i + 1]), params,
                                allow_unused=True, materialize_grads=True)
        rows.append(torch.cat([t.reshape(-1) for t in g]))
    return torch.stack(rows)


def data(n, shape, c=3, seed=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, *shape, generator=g, dtype=torch.float64),
            torch.randint(0, c, (n,), generator=g))


# ------------------------------------------------------- per-example gradients
@pytest.mark.parametrize("make,shape", [(mlp, (4,)), (conv_bn, (1, 8))])
@pytest.mark.parametrize("chunk", [None, 3])
def test_per_example_gradients_match_loop(make, shape, chunk):
    model = make()
    x, y = data(7, shape)
    got = per_example_gradients(model, F.cross_entropy, x, y, chunk_size=chunk)
    assert torch.allclose(got, loop_grads(model, F.cross_entropy, x, y), atol=1e-6, rtol=0)


def test_per_example_gradients_skip_frozen_params():
    model = mlp()
    model[0].weight.requires_grad_(False)
    x, y = data(5, (4,))
    got = per_example_gradients(model, F.cross_entropy, x, y)
    assert got.shape == (5, 5 + 5 * 3 + 3)
    assert torch.allclose(got, loop_grads(model, F.cross_entropy, x, y), atol=1e-6)


def test_per_example_gradients_refuse_bn_train_mode():
    with pytest.raises(ValueError):
        per_example_gradients(conv_bn(), F.cross_entropy, *data(4, (1, 8)), bn_mode="train")


class Shared(nn.Module):
    """Conv2d (stride, padding, dilation) + BatchNorm2d, a Linear over positions
    (3-D input), one Linear called twice, and a Linear that never runs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(2, 3, 3, stride=2, padding=2, dilation=2)
        self.bn = nn.BatchNorm2d(3)
        self.pos = nn.Linear(3, 4)
        self.twice = nn.Linear(4, 4)
        self.unused = nn.Linear(4, 4)
        self.out = nn.Linear(4 * 25, 3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        h = torch.tanh(self.bn(self.conv(x)))                 # (n, 3, 5, 5)
        h = self.pos(h.flatten(2).transpose(1, 2))            # (n, 25, 4)
        h = self.twice(torch.tanh(self.twice(h)))
        return self.out(h.flatten(1))


class LayerNormNet(nn.Module):  # LayerNorm has no layer rule: vmap fallback
    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.a, self.norm, self.b = nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 3)

    def forward(self, x):
        return self.b(self.norm(self.a(x)))


def inplace_mlp():  # ReLU(inplace) rewrites a Linear output: vmap fallback
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(inplace=True), nn.Linear(5, 3)).double()


@pytest.mark.parametrize("make,shape", [(mlp, (4,)), (conv_bn, (1, 8)),
                                        (lambda: Shared().double().eval(), (2, 9, 9))])
@pytest.mark.parametrize("method", ["layers", "vmap"])
def test_per_example_gradient_methods_match_loop(make, shape, method):
    model = make()
    x, y = data(6, shape)
    expected = loop_grads(model, F.cross_entropy, x, y)
    got = per_example_gradients(model, F.cross_entropy, x, y, method=method)
    assert torch.allclose(got, expected, atol=1e-10, rtol=0)
    chunked = per_example_gradients(model, F.cross_entropy, x, y, method=method, chunk_size=4)
    assert torch.allclose(chunked, expected, atol=1e-10, rtol=0)
    assert not any(m._forward_hooks for m in model.modules())  # temporary hooks are gone


def test_per_example_gradients_layers_rows_of_a_layer_that_never_ran_are_zero():
    model = Shared().double().eval()
    x, y = data(3, (2, 9, 9))
    got = per_example_gradients(model, F.cross_entropy, x, y, method="layers")
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for p in model.parameters()]
    lo = sum(sizes[:names.index("unused.weight")])
    assert torch.equal(got[:, lo:lo + 4 * 4 + 4], torch.zeros(3, 20, dtype=torch.float64))


def test_per_example_gradients_layers_frozen_weight_trainable_bias():
    model = conv_bn()
    model[0].weight.requires_grad_(False)
    model[4].bias.requires_grad_(False)
    x, y = data(5, (1, 8))
    got = per_example_gradients(model, F.cross_entropy, x, y, method="layers")
    assert got.shape == (5, 2 + 2 + 2 + 12 * 3)
    assert torch.allclose(got, loop_grads(model, F.cross_entropy, x, y), atol=1e-10)


@pytest.mark.parametrize("make", [lambda: LayerNormNet().double(), inplace_mlp])
def test_per_example_gradients_auto_falls_back_to_vmap(make):
    model = make()
    x, y = data(5, (4,))
    got = per_example_gradients(model, F.cross_entropy, x, y)  # method="auto"
    assert torch.allclose(got, loop_grads(model, F.cross_entropy, x, y), atol=1e-10)
    with pytest.raises(ValueError):
        per_example_gradients(model, F.cross_entropy, x, y, method="layers")


# ----------------------------------------------------------- gradient covariance
def explicit_k(g):
    gc = g - g.mean(0)
    return torch.linalg.eigvalsh(gc.T @ gc / len(g))


def check_k(k, evals):
    top = evals[-1].item()
    nonzero = evals[evals > 1e-9 * top]
    assert k["top"] == pytest.approx(top, rel=1e-9)
    assert k["trace"] == pytest.approx(evals.sum().item(), rel=1e-9)
    assert k["smallest_nonzero"] == pytest.approx(nonzero[0].item(), rel=1e-6)
    assert k["rank"] == len(nonzero)
    assert k["trace_over_top"] == pytest.approx(k["trace"] / k["top"])
    assert k["smallest_over_top"] == pytest.approx(k["smallest_nonzero"] / k["top"])


@pytest.mark.parametrize("n", [6, 60])  # p = 43: fewer and more examples than parameters
def test_gradient_covariance_per_example(n):
    model = mlp()
    x, y = data(n, (4,))
    g = loop_grads(model, F.cross_entropy, x, y)
    k = gradient_covariance(model, F.cross_entropy, x, y)
    check_k(k, explicit_k(g))
    # rank ≤ n − 1 (centring); with n = 60 the softmax's sum-to-zero output
    # gradients remove 6 of the 43 directions, found by the relative tolerance
    assert k["rank"] == (5 if n == 6 else 43 - 6)
    assert k["n"] == n
    assert gradient_covariance(None, None, None, None, grads=g)["top"] == \
        pytest.approx(k["top"], rel=1e-12)


def test_gradient_covariance_minibatch_unit():
    model = mlp()
    x, y = data(50, (4,))
    g = loop_grads(model, F.cross_entropy, x, y)
    means = torch.stack([g[i * 8:(i + 1) * 8].mean(0) for i in range(6)])  # remainder 2 dropped
    k = gradient_covariance(model, F.cross_entropy, x, y, unit="minibatch", minibatch=8)
    check_k(k, explicit_k(means))
    assert k["n"] == 6 and k["rank"] == 5


@pytest.mark.parametrize("n", [6, 60])
def test_gradient_covariance_gram_path_equals_grads_path(n):
    model = mlp()
    x, y = data(n, (4,))
    g = loop_grads(model, F.cross_entropy, x, y)
    gram = gram_matrix(g)
    torch.testing.assert_close(gram, g @ g.T, rtol=1e-13, atol=1e-15)
    via_grads = gradient_covariance(None, None, None, None, grads=g)
    via_gram = gradient_covariance(None, None, None, None, gram=gram)
    assert via_gram.keys() == via_grads.keys()
    for key in ("rank", "n"):
        assert via_gram[key] == via_grads[key]
    for key in ("top", "trace", "trace_over_top"):
        assert via_gram[key] == pytest.approx(via_grads[key], rel=1e-12)
    for key in ("smallest_nonzero", "smallest_over_top"):
        assert via_gram[key] == pytest.approx(via_grads[key], rel=1e-8)
    # a large mean gradient shared by all examples: centring the Gram stays exact
    shifted = g + 5 * g.abs().max()
    check_k(gradient_covariance(None, None, None, None, gram=gram_matrix(shifted)),
            explicit_k(shifted))
    with pytest.raises(ValueError):
        gradient_covariance(None, None, None, None, unit="minibatch", gram=gram)


# ------------------------------------------------------------------- stiffness
def naive_stiffness(g1, y1, g2, y2, c, within):
    sums = {k: np.zeros((c, c)) for k in ("sign", "cos")}
    count = np.zeros((c, c))
    allv = {"sign": [], "cos": []}
    for i in range(len(g1)):
        for j in range(len(g2)):
            if within and i == j:
                continue
            dot = float(g1[i] @ g2[j])
            vals = {"sign": float(np.sign(dot)),
                    "cos": dot / float(g1[i].norm() * g2[j].norm())}
            for k, v in vals.items():
                sums[k][y1[i], y2[j]] += v
                allv[k].append(v)
            count[y1[i], y2[j]] += 1
    with np.errstate(invalid="ignore"):
        mats = {k: sums[k] / count for k in sums}
    return {k: np.mean(v) for k, v in allv.items()}, mats


def check_stiffness(s, mean, mats):
    for k in ("sign", "cos"):
        assert s[k] == pytest.approx(mean[k], abs=1e-12)
        np.testing.assert_allclose(s[f"class_{k}"], mats[k], atol=1e-12)
        diag = np.diag(mats[k])
        off = mats[k][~np.eye(len(diag), dtype=bool)]
        assert s[f"{k}_within"] == pytest.approx(np.nanmean(diag), abs=1e-12)
        assert s[f"{k}_between"] == pytest.approx(np.nanmean(off), abs=1e-12)


def test_stiffness_within_set_matches_double_loop():
    model = mlp()
    x, y = data(14, (4,), c=4)
    y[y == 3] = 2  # class 3 absent: its row and column are NaN
    g = loop_grads(model, F.cross_entropy, x, y)
    s = stiffness(model, F.cross_entropy, x, y, num_classes=4)
    mean, mats = naive_stiffness(g, y, g, y, 4, within=True)
    check_stiffness(s, mean, mats)
    assert np.isnan(s["class_sign"][3]).all()
    np.testing.assert_array_equal(s["class_sign"], s["class_sign"].T)
    # the same from the precomputed Gram GGᵀ (the probe round shares it with K)
    via_gram = stiffness(None, None, x, y, num_classes=4, gram=gram_matrix(g))
    check_stiffness(via_gram, mean, mats)
    for k in ("sign", "cos"):
        np.testing.assert_allclose(via_gram[f"class_{k}"], s[f"class_{k}"], atol=1e-14)
    with pytest.raises(ValueError):
        stiffness(None, None, x, y, 4, other=(x, y), gram=gram_matrix(g))


def test_stiffness_between_sets_matches_double_loop():
    model = mlp()
    x, y = data(9, (4,), seed=3)
    xb, yb = data(7, (4,), seed=4)
    ga, gb = (loop_grads(model, F.cross_entropy, *d) for d in ((x, y), (xb, yb)))
    s = stiffness(model, F.cross_entropy, x, y, 3, other=(xb, yb))
    check_stiffness(s, *naive_stiffness(ga, y, gb, yb, 3, within=False))
    shared = stiffness(None, None, x, y, 3, other=(xb, yb), grads=ga, other_grads=gb)
    assert shared["cos"] == pytest.approx(s["cos"], abs=1e-12)


def test_forms_for_precomputed_gradients_equal_the_model_forms():
    # what the probe hooks call: gradients or their Gram in, no model
    model = mlp()
    x, y = data(9, (4,), seed=3)
    xb, yb = data(7, (4,), seed=4)
    ga, gb = (loop_grads(model, F.cross_entropy, *d) for d in ((x, y), (xb, yb)))
    assert covariance_spectrum(ga) == gradient_covariance(model, F.cross_entropy, x, y, grads=ga)
    assert covariance_spectrum(gram=gram_matrix(ga)) == \
        gradient_covariance(None, None, None, None, gram=gram_matrix(ga))
    assert covariance_spectrum(ga, unit="minibatch", minibatch=3)["n"] == 3
    for a, b in ((stiffness_from(y, 3, ga), stiffness(model, F.cross_entropy, x, y, 3, grads=ga)),
                 (stiffness_from(y, 3, gram=gram_matrix(ga)), stiffness(model, F.cross_entropy, x, y, 3)),
                 (stiffness_from(y, 3, ga, other_grads=gb, other_targets=yb),
                  stiffness(model, F.cross_entropy, x, y, 3, other=(xb, yb)))):
        assert a["sign"] == b["sign"] and a["cos"] == pytest.approx(b["cos"], abs=1e-12)
        np.testing.assert_allclose(a["class_cos"], b["class_cos"], atol=1e-12)
    with pytest.raises(ValueError, match="grads or gram"):
        covariance_spectrum()
    with pytest.raises(ValueError, match="come together"):
        stiffness_from(y, 3, ga, other_grads=gb)
    with pytest.raises(ValueError, match="grads or gram"):
        stiffness_from(y, 3)


def test_stiffness_by_distance_bins_and_critical_length():
    # 1-D gradients: sign stiffness is +1 for near pairs, −1 for far pairs
    x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, 1.0], [1.0, 1.1]], dtype=torch.float64)
    g = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]], dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    r = stiffness_by_distance(g, x, targets=y, bins=[0.0, 0.1, 0.5])
    d_far = 1 - (x[:2] @ x[2:].T / (x[:2].norm(dim=1)[:, None] * x[2:].norm(dim=1))).numpy()
    assert r["count"].tolist() == [4.0, 8.0]
    np.testing.assert_allclose(r["sign"], [1.0, -1.0])
    assert d_far.max() < 0.5 and d_far.min() > 0.1
    # linear interpolation between the centres 0.05 (+1) and 0.3 (−1)
    assert r["xi"] == pytest.approx(0.175)
    never = stiffness_by_distance(g.abs(), x, same_class_mask=np.ones((4, 4), bool), bins=3)
    assert np.isnan(never["xi"])


# ---------------------------------------------------------------------- Fisher
def brute_fisher(model, x, c):
    total = 0.0
    for i in range(len(x)):
        logp = torch.log_softmax(model(x[i:i + 1]), dim=1)[0]
        for k in range(c):
            g = torch.autograd.grad(logp[k], list(model.parameters()), retain_graph=True)
            total += logp[k].exp().item() * sum((t ** 2).sum().item() for t in g)
    return total / len(x)


def test_fisher_trace_exact_matches_enumeration():
    model = mlp()
    x, _ = data(10, (4,))
    assert fisher_trace(model, x, exact=True) == pytest.approx(brute_fisher(model, x, 3), rel=1e-10)


def test_fisher_trace_monte_carlo_is_close_to_exact():
    model = mlp()
    x, _ = data(10, (4,))
    exact = fisher_trace(model, x, exact=True)
    # per-(x, ŷ) values to size the statistical tolerance
    labels = sample_labels(model, x, samples=400, generator=torch.Generator().manual_seed(5))
    vals = torch.stack([per_example_gradients(model, F.cross_entropy, x, labels[:, s])
                        .pow(2).sum(1) for s in range(400)])
    g = torch.Generator().manual_seed(5)
    est = fisher_trace(model, x, samples=400, generator=g)
    assert est == pytest.approx(vals.mean().item(), rel=1e-10)  # same labels, same estimate
    assert abs(est - exact) < 5 * vals.std().item() / np.sqrt(vals.numel())
    assert fisher_trace(None, None, grads=vals.sqrt()[:, :, None].reshape(-1, 1)) == \
        pytest.approx(est, rel=1e-10)
