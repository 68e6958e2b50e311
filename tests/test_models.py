"""Model registry, shapes, deterministic init, preact noise, prunable parameters."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dynamics_core.config import ModelConfig
from dynamics_core.models import MODELS, build, get, prunable_parameters

# (name, input_shape, config overrides) — each model on its intended input, plus
# the 1-channel 28x28 (MNIST) case for the conv nets and the 1-D regression MLP.
CASES = [
    ("mlp", (40,), {}),
    ("mlp", (1, 28, 28), {"activation": "tanh", "dropout": 0.1}),
    ("cnn1d", (40,), {"width": 25}),
    ("cnn1d", (1, 40), {"width": 25, "batchnorm": True}),
    ("cnn1d", (1, 28, 28), {"width": 8}),
    ("cnn2d", (1, 8, 8), {"width": 16}),
    ("cnn2d", (1, 28, 28), {"width": 8, "batchnorm": True}),
    ("simple_cnn", (3, 32, 32), {"batchnorm": True}),
    ("simple_cnn", (1, 28, 28), {}),
    ("resnet20", (3, 32, 32), {}),
    ("allcnn", (3, 32, 32), {"batchnorm": True}),
    ("allcnn", (1, 28, 28), {}),
]


def _build(name, shape, seed=0, num_classes=10, **kw):
    return build(ModelConfig(name=name, **kw), shape, num_classes, seed)


def _ids(cases):
    return [f"{n}-{'x'.join(map(str, s))}" for n, s, _ in cases]


@pytest.mark.parametrize("name,shape,kw", CASES, ids=_ids(CASES))
def test_output_shape(name, shape, kw):
    model = _build(name, shape, **kw)
    for mode in (model.train, model.eval):
        mode()
        assert model(torch.randn(3, *shape)).shape == (3, 10)


def test_registry_lists_every_configurable_model():
    assert set(MODELS) == set(ModelConfig.model_fields["name"].annotation.__args__)


def test_regression_output():
    model = _build("mlp", (1,), num_classes=1)
    assert model(torch.randn(5, 1)).shape == (5, 1)


def test_cnn1d_matches_mnist1d_convbase_with_25_channels():
    # mnist1d's ConvBase: 25 channels, 125 linear inputs for length-40 input.
    model = _build("cnn1d", (40,), width=25)
    assert model.out.in_features == 125
    assert [m.layer.kernel_size[0] for m in (model.conv1, model.conv2, model.conv3)] == [5, 3, 3]


@pytest.mark.parametrize("name,shape,kw", CASES[::2], ids=_ids(CASES[::2]))
def test_same_seed_bitwise_equal_other_seed_differs(name, shape, kw):
    a = _build(name, shape, seed=7, **kw).state_dict()
    b = _build(name, shape, seed=7, **kw).state_dict()
    c = _build(name, shape, seed=8, **kw).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_build_leaves_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    for name, shape, kw in CASES:
        _build(name, shape, seed=1, **kw)
    assert torch.equal(torch.get_rng_state(), before)


def test_state_dict_keys_do_not_depend_on_dropout_or_noise():
    plain = _build("simple_cnn", (3, 32, 32)).state_dict().keys()
    noisy = _build("simple_cnn", (3, 32, 32), dropout=0.3, preact_noise=0.5).state_dict().keys()
    assert list(plain) == list(noisy)


def test_unknown_name_lists_valid_names():
    with pytest.raises(KeyError) as err:
        get("nope")
    for name in MODELS:
        assert name in str(err.value)


def test_resnet20_parameter_count_is_standard_option_b():
    # He et al. ResNet-20 with 1x1-conv+BN projection shortcuts (OpenLTH): 272,474.
    # (Zero-padding option A would be 269,722 = 272,474 - 2,752 projection params.)
    model = _build("resnet20", (3, 32, 32))
    assert sum(p.numel() for p in model.parameters()) == 272_474


def test_cnn2d_parameter_count_on_8x8_digits():
    # conv 1→16 (16·9 + 16), conv 16→16 (16·16·9 + 16), linear 16·2·2 → 10
    assert sum(p.numel() for p in _build("cnn2d", (1, 8, 8), width=16).parameters()) == (
        160 + 2320 + 64 * 10 + 10)
    with pytest.raises(ValueError, match="too small"):
        _build("cnn2d", (1, 3, 3))


def test_reference_parameter_counts():
    # Keras cifar10_cnn.py summary: 1,250,858. All-CNN-C (3x3, 96/192): 1,369,738.
    assert sum(p.numel() for p in _build("simple_cnn", (3, 32, 32)).parameters()) == 1_250_858
    assert sum(p.numel() for p in _build("allcnn", (3, 32, 32)).parameters()) == 1_369_738


@pytest.mark.parametrize("name,shape", [("mlp", (40,)), ("cnn1d", (40,)),
                                        ("simple_cnn", (1, 12, 12)), ("resnet20", (3, 8, 8)),
                                        ("allcnn", (1, 8, 8))])
def test_preact_noise_only_in_train_mode_and_switchable(name, shape):
    model = _build(name, shape, preact_noise=0.5)
    assert model.preact_noise == 0.5
    x = torch.randn(4, *shape)

    model.eval()  # eval: deterministic, draws nothing from the global RNG
    state = torch.get_rng_state()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    assert torch.equal(torch.get_rng_state(), state)

    model.train()  # train: noise from the global RNG, reproducible by reseeding
    with torch.no_grad():
        torch.manual_seed(0)
        y1 = model(x)
        y2 = model(x)
        torch.manual_seed(0)
        y1_again = model(x)
    assert not torch.equal(y1, y2)
    assert torch.equal(y1, y1_again)

    model.set_preact_noise(0.0)  # switched off: train mode deterministic, no draws
    assert model.preact_noise == 0.0
    state = torch.get_rng_state()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    assert torch.equal(torch.get_rng_state(), state)


def test_set_preact_noise_is_a_noop_without_noise():
    model = _build("mlp", (40,))
    model.set_preact_noise(0.0)
    model.train()
    x = torch.randn(2, 40)
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name,shape,kw", [("mlp", (40,), {"batchnorm": True}),
                                           ("cnn1d", (40,), {"batchnorm": True}),
                                           ("resnet20", (3, 32, 32), {}),
                                           ("allcnn", (3, 32, 32), {"batchnorm": True})])
def test_prunable_parameters_are_layer_weights_only(name, shape, kw):
    model = _build(name, shape, **kw)
    prunable = prunable_parameters(model)
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    assert len(prunable) == len(layers) > 0
    named = dict(model.named_parameters())
    for key, p in prunable.items():
        assert key.endswith(".weight") and named[key] is p
    assert not any(k.endswith(".bias") for k in prunable)
    norm_params = {id(p) for m in model.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    assert norm_params and not norm_params & {id(p) for p in prunable.values()}
