"""Data: MNIST-1D generation and cache, subsets, label noise, patches, the
probe set, torchvision roots (never downloading), sine1d, and the deficits."""
import math
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dynamics_core.config import DataConfig, DeficitConfig, PatchConfig
from dynamics_core.data import DeficitView, check_available, load, mnist1d, probe_indices, sine1d
from dynamics_core.data.deficits import blur, vflip
from dynamics_core.data.transforms import add_label_noise, add_patches, class_balanced_subset

MNIST1D_FILE = "mnist1d_default_seed42.pt"


def data(**kw) -> DataConfig:
    return DataConfig.model_validate(kw)


def rng_snapshot():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def assert_rng_untouched(before):
    after = rng_snapshot()
    assert torch.equal(before[0], after[0])
    assert np.array_equal(before[1], after[1])
    assert before[2] == after[2]


# ------------------------------------------------------------------ MNIST-1D
def test_mnist1d_shapes_and_classes(mnist1d_cache):
    ds = load(data(), "cpu", mnist1d_cache)
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.y_train.shape == (4000,) and ds.y_test.shape == (1000,)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.num_classes == 10 and ds.input_shape == (40,) and ds.task == "classification"
    assert set(ds.y_train.tolist()) == set(range(10)) == set(ds.y_test.tolist())
    assert ds.n_train == 4000
    assert ds.x_patch_only is None and torch.equal(ds.y_train_clean, ds.y_train)
    assert torch.isfinite(ds.x_train).all() and ds.x_train.std() > 0.1


def test_mnist1d_cache_is_reused(mnist1d_cache, tmp_path, monkeypatch):
    calls = []

    def fake_generate(path):
        calls.append(path)
        shutil.copy(Path(mnist1d_cache) / MNIST1D_FILE, path)

    monkeypatch.setattr(mnist1d, "_generate", fake_generate)
    first = load(data(), "cpu", tmp_path)
    assert calls == [tmp_path / MNIST1D_FILE]
    mtime = os.stat(tmp_path / MNIST1D_FILE).st_mtime_ns
    second = load(data(train_size=100), "cpu", tmp_path)
    assert len(calls) == 1                                  # not generated again
    assert os.stat(tmp_path / MNIST1D_FILE).st_mtime_ns == mtime
    assert torch.equal(first.x_test, second.x_test)


def test_mnist1d_root_overrides_cache_dir(mnist1d_cache, tmp_path, monkeypatch):
    def no_generate(path):
        raise AssertionError(f"regenerated at {path}")

    monkeypatch.setattr(mnist1d, "_generate", no_generate)
    ds = load(data(root=mnist1d_cache), "cpu", tmp_path / "elsewhere")
    assert ds.x_train.shape == (4000, 40)
    assert not (tmp_path / "elsewhere").exists()


def test_mnist1d_generation_is_deterministic_and_atomic(mnist1d_cache, tmp_path):
    # the real generator, once: same bytes as the session cache, no temp file left
    mnist1d._generate(tmp_path / "sub" / MNIST1D_FILE)
    a = torch.load(tmp_path / "sub" / MNIST1D_FILE, weights_only=True)
    b = torch.load(Path(mnist1d_cache) / MNIST1D_FILE, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in ("x", "y", "x_test", "y_test"))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == [MNIST1D_FILE]


# ------------------------------------------------------------------- subsets
def test_class_balanced_subset_exact_counts():
    y = torch.arange(10).repeat_interleave(torch.tensor([50, 60, 70, 80, 90, 55, 65, 75, 85, 95]))
    idx = class_balanced_subset(y, 403, seed=0)
    assert len(idx) == 403 and len(set(idx.tolist())) == 403
    assert torch.equal(idx, idx.sort().values)
    counts = torch.bincount(y[idx], minlength=10).tolist()
    assert counts == [41, 41, 41] + [40] * 7
    assert torch.equal(idx, class_balanced_subset(y, 403, seed=0))
    assert not torch.equal(idx, class_balanced_subset(y, 403, seed=1))


def test_load_train_and_test_subsets(mnist1d_cache):
    full = load(data(), "cpu", mnist1d_cache)
    ds = load(data(train_size=500, test_size=205), "cpu", mnist1d_cache)
    assert torch.bincount(ds.y_train, minlength=10).tolist() == [50] * 10
    assert torch.bincount(ds.y_test, minlength=10).tolist() == [21] * 5 + [20] * 5
    # a subset of the real examples, with their labels
    rows = {tuple(r): int(c) for r, c in zip(full.x_train.tolist(), full.y_train.tolist())}
    assert all(rows[tuple(r)] == c for r, c in zip(ds.x_train.tolist(), ds.y_train.tolist()))
    other = load(data(train_size=500, data_seed=1), "cpu", mnist1d_cache)
    assert not torch.equal(ds.x_train, other.x_train)
    assert torch.equal(ds.x_train, load(data(train_size=500), "cpu", mnist1d_cache).x_train)


# --------------------------------------------------------------- label noise
def test_add_label_noise_changes_exact_count_never_to_same_class():
    y = torch.arange(10).repeat(100)
    for fraction in (0.0, 0.15, 0.5, 1.0):
        noisy = add_label_noise(y, 10, fraction, seed=3)
        changed = noisy != y
        assert int(changed.sum()) == round(fraction * len(y))
        assert ((noisy >= 0) & (noisy < 10)).all()
    assert torch.equal(add_label_noise(y, 10, 0.3, seed=3), add_label_noise(y, 10, 0.3, seed=3))
    # the new class is spread over all the other classes
    noisy = add_label_noise(y, 10, 1.0, seed=0)
    assert set(((noisy - y) % 10).tolist()) == set(range(1, 10))


def test_load_label_noise_keeps_clean_labels(mnist1d_cache):
    ds = load(data(train_size=1000, label_noise=0.2), "cpu", mnist1d_cache)
    clean = load(data(train_size=1000), "cpu", mnist1d_cache)
    assert torch.equal(ds.y_train_clean, clean.y_train)
    assert torch.equal(ds.x_train, clean.x_train)
    assert int((ds.y_train != ds.y_train_clean).sum()) == 200
    assert torch.equal(ds.y_test, clean.y_test)          # the test set stays clean


# ------------------------------------------------------------------- patches
def test_patch_data_1d(mnist1d_cache):
    cfg = data(train_size=500, patch={"fraction": 0.3, "size": 4, "scale": 0.5, "zeta": 0.1})
    ds = load(cfg, "cpu", mnist1d_cache)
    clean = load(data(train_size=500), "cpu", mnist1d_cache)
    differs = (ds.x_train != clean.x_train)
    patched = differs.any(1)
    assert int(patched.sum()) == 150
    assert not differs[:, 4:].any()                       # only the first `size` entries
    only = ds.x_patch_only
    assert only.shape == ds.x_train.shape
    assert not only[:, 4:].any() and (only[:, :4] != 0).all(1).all()
    assert torch.equal(ds.x_train[patched, :4], only[patched, :4])
    # one patch per class: z + zeta_c, the same for every example of the class
    per_class = [only[ds.y_train == c, :4] for c in range(10)]
    assert all(torch.equal(p, p[:1].expand_as(p)) for p in per_class)
    patches = torch.stack([p[0] for p in per_class])
    z = patches.mean(0)
    assert (patches - z).norm(dim=1).max() < 0.25 and 0.3 < z.norm() < 0.7
    assert len({tuple(p.tolist()) for p in patches}) == 10
    assert torch.equal(ds.x_test, clean.x_test)           # test inputs untouched


def test_patch_data_2d_top_left_corner_of_every_channel():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, 8, 8, generator=g)
    y = torch.arange(4).repeat(5)
    patched, only = add_patches(x, y, 4, PatchConfig(fraction=0.5, size=3), seed=0)
    differs = patched != x
    assert int(differs.flatten(1).any(1).sum()) == 10
    corner = torch.zeros(8, 8, dtype=torch.bool)
    corner[:3, :3] = True
    assert not differs[..., ~corner].any()
    assert (only[..., corner] != 0).all() and not only[..., ~corner].any()
    assert torch.equal(x, torch.randn(20, 3, 8, 8, generator=torch.Generator().manual_seed(0)))


# ----------------------------------------------------------------- probe set
def test_probe_indices_fixed_per_seed():
    before = rng_snapshot()
    a = probe_indices(1000, 64, seed=5)
    assert_rng_untouched(before)
    assert torch.equal(a, probe_indices(1000, 64, seed=5))
    assert not torch.equal(a, probe_indices(1000, 64, seed=6))
    assert len(set(a.tolist())) == 64 and torch.equal(a, a.sort().values)
    assert 0 <= a.min() and a.max() < 1000
    assert torch.equal(probe_indices(30, 64, seed=0), torch.arange(30))   # capped at n


# ------------------------------------------------------------- torchvision
@pytest.mark.parametrize("name", ["cifar10", "mnist", "fashion_mnist"])
def test_missing_torchvision_root_names_the_path(name, tmp_path, monkeypatch):
    # torchvision is made unimportable: a download attempt would raise ImportError
    monkeypatch.setitem(sys.modules, "torchvision", None)
    root = tmp_path / "no_such_dir"
    cfg = data(dataset=name, root=str(root))
    message = check_available(cfg, tmp_path)
    assert message is not None and str(root) in message
    with pytest.raises(FileNotFoundError) as err:
        load(cfg, "cpu", tmp_path)
    assert str(root) in str(err.value) and "download" in str(err.value)
    assert not root.exists()


def test_torchvision_without_root_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    message = check_available(data(dataset="cifar10"), tmp_path)
    assert "data.root" in message
    with pytest.raises(FileNotFoundError, match="data.root"):
        load(data(dataset="cifar10"), "cpu", tmp_path)


def test_check_available_for_generated_sets(tmp_path):
    assert check_available(data(), tmp_path) is None
    assert check_available(data(dataset="sine1d"), tmp_path) is None
    assert check_available(data(dataset="cifar10", download=True), tmp_path) is None


# ------------------------------------------------------------------- sine1d
def test_sine1d_targets(tmp_path):
    ds = load(data(dataset="sine1d"), "cpu", tmp_path)
    assert ds.task == "regression" and ds.num_classes == 1
    assert ds.x_train.shape == (201, 1) and ds.y_train.shape == (201, 1)
    assert ds.x_test.shape == (200, 1)
    assert ds.x_train[0, 0] == pytest.approx(-math.pi) and ds.x_train[-1, 0] == pytest.approx(math.pi)
    assert ds.x_train[100, 0] == pytest.approx(0.0, abs=1e-6)
    t = sine1d.target(torch.tensor([0.0, math.pi / 2, -math.pi / 2, math.pi / 6], dtype=torch.float64))
    # sin x + 2 sin 3x + 3 sin 5x
    assert t.tolist() == pytest.approx([0.0, 1 - 2 + 3, -(1 - 2 + 3), 0.5 + 2 + 1.5])
    x = ds.x_train.double()
    assert torch.allclose(ds.y_train.double(), torch.sin(x) + 2 * torch.sin(3 * x) + 3 * torch.sin(5 * x),
                          atol=1e-5)
    # test points are the midpoints of the training grid
    assert torch.allclose(ds.x_test, (ds.x_train[:-1] + ds.x_train[1:]) / 2, atol=1e-6)
    assert not list(tmp_path.iterdir())                   # nothing cached or written
    assert load(data(dataset="sine1d", train_size=51), "cpu", tmp_path).x_train.shape == (51, 1)


# ------------------------------------------------------------------ deficits
def high_freq_fraction(x: torch.Tensor) -> float:
    """Share of the energy above a quarter of the Nyquist frequency (last axis
    for signals; either axis for images)."""
    if x.ndim == 4:
        n = x.shape[-1]
        power = torch.fft.fft2(x).abs() ** 2
        k = (torch.fft.fftfreq(n) * n).abs()
        mask = (k.view(-1, 1) > n / 8) | (k.view(1, -1) > n / 8)
        return float(power[..., mask].sum() / power.sum())
    n = x.shape[-1]
    power = torch.fft.rfft(x, dim=-1).abs() ** 2
    return float(power[..., n // 8 + 1:].sum() / power.sum())


@pytest.mark.parametrize("shape", [(64, 40), (16, 2, 40), (8, 3, 32, 32), (8, 1, 28, 28)])
def test_blur_keeps_shape_and_removes_high_frequencies(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    b = blur(x)
    assert b.shape == x.shape and b.dtype == x.dtype
    assert high_freq_fraction(x) > 0.5
    assert high_freq_fraction(b) < 0.15
    assert high_freq_fraction(b) < high_freq_fraction(x) / 5
    # low frequencies survive: a constant stays (almost) the same constant
    c = torch.full(shape, 0.7)
    assert torch.allclose(blur(c), c, atol=1e-5)


def test_blur_keeps_a_slow_signal():
    t = torch.linspace(0, 2 * math.pi, 40)
    x = torch.sin(t).repeat(3, 1)
    assert (blur(x) - x).norm() < 0.2 * x.norm()          # edges clamp; the wave stays
    assert (blur(x)[:, 4:-4] - x[:, 4:-4]).abs().max() < 0.1


def test_vflip():
    x = torch.randn(4, 40)
    assert torch.equal(vflip(x), -x)
    img = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    flipped = vflip(img)
    assert torch.equal(flipped[:, :, 0], img[:, :, -1])    # top row becomes the bottom row
    assert torch.equal(flipped[:, :, :, 0], img[:, :, :, 0].flip(-1))
    assert torch.equal(vflip(flipped), img)


def deficit(kind, start=1, end=3, x=None, seed=0):
    x = torch.randn(50, 40, generator=torch.Generator().manual_seed(1)) * 2 + 0.5 if x is None else x
    return DeficitView(DeficitConfig(kind=kind, start_epoch=start, end_epoch=end), x, 10, seed), x


def test_deficit_window_is_half_open():
    view, _ = deficit("vflip", start=1, end=3)
    assert [view.active(e) for e in range(5)] == [False, True, True, False, False]
    none = DeficitView(DeficitConfig(), torch.zeros(3, 4), 10, 0)
    assert not any(none.active(e) for e in range(5))


def test_deficit_apply_inside_and_outside_the_window():
    view, x = deficit("vflip")
    y = torch.arange(10).repeat(5)
    idx = torch.arange(50)
    xo, yo = view.apply(x, y, idx, epoch=0, step=0)
    assert xo is x and yo is y
    xi, yi = view.apply(x, y, idx, epoch=1, step=7)
    assert torch.equal(xi, -x) and yi is y
    xa, _ = view.apply(x, y, idx, epoch=3, step=20)
    assert xa is x


def test_blur_deficit_uses_the_blurred_examples():
    view, x = deficit("blur")
    idx = torch.tensor([3, 7, 11])
    xb, _ = view.apply(x[idx], torch.zeros(3, dtype=torch.long), idx, epoch=1, step=0)
    assert torch.allclose(xb, blur(x)[idx])


def test_label_permutation_is_a_fixed_permutation():
    view, x = deficit("label_permutation", seed=4)
    y = torch.arange(10)
    _, yp = view.apply(x[:10], y, torch.arange(10), epoch=2, step=0)
    assert sorted(yp.tolist()) == list(range(10))        # a bijection of the classes
    assert not torch.equal(yp, y)
    again, _ = deficit("label_permutation", seed=4)
    assert torch.equal(again.apply(x[:10], y, torch.arange(10), 1, 5)[1], yp)
    other, _ = deficit("label_permutation", seed=5)
    assert not torch.equal(other.apply(x[:10], y, torch.arange(10), 1, 5)[1], yp)
    # applied label by label: equal labels stay equal
    y2 = torch.tensor([3, 3, 8, 8])
    _, y2p = view.apply(x[:4], y2, torch.arange(4), 1, 0)
    assert y2p[0] == y2p[1] == yp[3] and y2p[2] == y2p[3] == yp[8]


def test_noise_deficit_is_deterministic_per_step():
    view, x = deficit("noise", start=0, end=2)
    y = torch.arange(10).repeat(5)
    idx = torch.arange(50)
    before = rng_snapshot()
    a, ya = view.apply(x, y, idx, epoch=0, step=5)
    b, _ = view.apply(x, y, idx, epoch=1, step=5)
    c, _ = view.apply(x, y, idx, epoch=0, step=6)
    assert_rng_untouched(before)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert ya is y and a.shape == x.shape
    assert not torch.isclose(a, x).any()                  # the inputs are replaced
    big, _ = deficit("noise", start=0, end=2, x=x.repeat(40, 1))
    n, _ = big.apply(x.repeat(40, 1), y.repeat(40), torch.arange(2000), 0, 1)
    assert n.mean().item() == pytest.approx(x.mean().item(), abs=0.1)
    assert n.std().item() == pytest.approx(x.std().item(), rel=0.05)


def test_sine1d_test_subset_is_a_uniform_draw_of_distinct_points(tmp_path):
    # regression targets are no classes: the subset must not be "class-balanced"
    full = load(data(dataset="sine1d"), "cpu", tmp_path)
    ds = load(data(dataset="sine1d", test_size=50), "cpu", tmp_path)
    assert ds.x_test.shape == (50, 1) and ds.y_test.shape == (50, 1)
    assert len(set(ds.x_test.flatten().tolist())) == 50
    assert set(ds.x_test.flatten().tolist()) <= set(full.x_test.flatten().tolist())
    assert torch.allclose(ds.y_test, sine1d.target(ds.x_test))
    # spread over the domain, not the 50 lowest targets
    assert ds.x_test.min() < -2 and ds.x_test.max() > 2
    assert ds.y_test.max() > 2


# ------------------------------------------------------------------- digits
def test_digits_load_offline_split_by_class_and_standardised(tmp_path):
    """scikit-learn's 8×8 digits: 1347 train / 450 test, a quarter of every class
    in the test set, disjoint, fixed by data_seed; the training pixels have mean 0
    and std 1; the images are the bundled ones, scaled by 1/16 before that."""
    from sklearn.datasets import load_digits

    from dynamics_core.data import digits

    ds = load(data(dataset="digits"), "cpu", tmp_path)
    assert ds.x_train.shape == (1347, 1, 8, 8) and ds.x_test.shape == (450, 1, 8, 8)
    assert ds.x_train.dtype == torch.float32 and ds.num_classes == 10 and ds.input_shape == (1, 8, 8)
    bunch = load_digits()
    per_class = torch.bincount(torch.from_numpy(bunch.target), minlength=10)
    test_counts = torch.bincount(ds.y_test, minlength=10)
    assert torch.equal(test_counts, torch.round(per_class * 0.25).long())
    assert torch.equal(torch.bincount(ds.y_train, minlength=10) + test_counts, per_class)
    assert abs(float(ds.x_train.mean())) < 1e-5 and abs(float(ds.x_train.std()) - 1) < 1e-3
    tr, te = digits.split_indices(bunch.target, 0)
    assert not set(tr) & set(te) and len(tr) + len(te) == 1797
    raw = torch.from_numpy(bunch.images[tr][:, None] / 16.0).float()
    scale = (raw - raw.mean()) / raw.std(correction=0)
    assert torch.allclose(ds.x_train, scale, atol=1e-5)
    assert torch.equal(ds.y_train, torch.from_numpy(bunch.target[tr]))
    again = load(data(dataset="digits"), "cpu", tmp_path)
    assert torch.equal(again.x_train, ds.x_train)
    other = load(data(dataset="digits", data_seed=1), "cpu", tmp_path)
    assert not torch.equal(other.y_test, ds.y_test)
    assert check_available(data(dataset="digits"), tmp_path) is None
    small = load(data(dataset="digits", train_size=200), "cpu", tmp_path)
    assert torch.equal(torch.bincount(small.y_train, minlength=10), torch.full((10,), 20))
