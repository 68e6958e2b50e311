"""Iterative magnitude pruning: what is prunable, global pruning and its rounding,
masks held through training, rewinding, the rewind-point ablations, mask state,
the restricted timeline statistics and the config."""
from __future__ import annotations

import io
import math
import typing

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from dynamics_core import models
from dynamics_core.config import ModelConfig
from dynamics_core.pruning import (ABLATIONS, MaskEnforcer, PruningConfig, ablate,
                                   ablation_generator, apply_masks, clone_state,
                                   global_magnitude_prune, initial_masks, layer_sparsity,
                                   masks_from_state, masks_to_state, prunable, rewind,
                                   sparsity, weight_distance, weight_sign_flips)

MLP = (ModelConfig(name="mlp", width=16, depth=2, batchnorm=True), (40,))
CNN = (ModelConfig(name="cnn1d", width=4, batchnorm=True), (40,))


def _build(spec=MLP, seed=0) -> nn.Module:
    cfg, shape = spec
    return models.build(cfg, shape, 10, seed)


def _tiny() -> nn.Sequential:
    """Two Linear layers around a BatchNorm; weights chosen by hand, with ties."""
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.5, -0.1, 0.3], [0.1, -0.3, 0.2]]))
        model[3].weight.copy_(torch.tensor([[-0.1, 0.4], [0.2, 0.05]]))
        model[0].bias.copy_(torch.tensor([0.001, -0.002]))   # smaller than any weight
        model[3].bias.copy_(torch.tensor([0.0, 0.003]))
        model[1].weight.copy_(torch.tensor([0.004, 2.0]))
        model[1].bias.copy_(torch.tensor([-0.005, 0.0]))
    return model


# -------------------------------------------------------------- prunable
def test_prunable_is_linear_and_conv_weights_by_module_type():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2), nn.Flatten(),
                          nn.LayerNorm(8), nn.Linear(8, 3))
    assert list(prunable(model)) == ["0.weight", "4.weight"]
    assert list(prunable(_tiny())) == ["0.weight", "3.weight"]
    assert list(prunable(_tiny(), exclude=["3.weight"])) == ["0.weight"]
    with pytest.raises(KeyError, match="valid names.*0.weight"):
        prunable(_tiny(), exclude=["3.bias"])
    masks = initial_masks(_tiny())
    assert all(m.dtype == torch.bool and bool(m.all()) for m in masks.values())
    assert sparsity(masks) == 0.0


# ------------------------------------------------------- global pruning
def test_global_magnitude_prune_matches_hand_computed_masks_with_ties():
    model = _tiny()
    before = clone_state(model)
    # |w| in global order (0.weight row-major, then 3.weight):
    #   idx  0   1   2   3   4   5   6   7   8   9
    #       .5  .1  .3  .1  .3  .2  .1  .4  .2  .05
    # rate 0.5 of 10 prunes 5: 9, then the .1 tie 1, 3, 6, then of the .2 tie only 5.
    m1 = global_magnitude_prune(model, initial_masks(model), rate=0.5)
    assert m1["0.weight"].tolist() == [[True, False, True], [False, True, False]]
    assert m1["3.weight"].tolist() == [[False, True], [True, False]]
    from_dict = global_magnitude_prune(clone_state(model), initial_masks(model), rate=0.5)
    assert all(torch.equal(from_dict[n], m1[n]) for n in m1)
    assert clone_state(model).keys() == before.keys()
    assert all(torch.equal(clone_state(model)[k], before[k]) for k in before)   # inputs untouched

    # A pruned weight stays pruned even if it grew; rate 0.4 of 5 survivors prunes
    # floor(2 + 0.5) = 2: index 8 (.2), then of the .3 tie (2, 4) only 2.
    with torch.no_grad():
        model[3].weight[1, 1] = 9.0
    m2 = global_magnitude_prune(model, m1, rate=0.4)
    assert m2["0.weight"].tolist() == [[True, False, False], [False, True, False]]
    assert m2["3.weight"].tolist() == [[False, True], [False, False]]
    assert layer_sparsity(m2) == {"0.weight": 4 / 6, "3.weight": 3 / 4}
    # Half counts round up: rate 0.5 of 5 prunes 3 (8, 2, 4), not 2.
    half = global_magnitude_prune(model, m1, rate=0.5)
    assert half["0.weight"].tolist() == [[True, False, False], [False, False, False]]
    assert half["3.weight"].tolist() == [[False, True], [False, False]]
    assert sparsity(m2) == pytest.approx(0.7)

    apply_masks(model, m2)
    state = clone_state(model)
    for name in ("0.weight", "3.weight"):
        w, keep = state[name], m2[name]
        assert (w[~keep] == 0).all() and not torch.signbit(w[~keep]).any()   # +0.0
        assert torch.equal(w[keep], before[name][keep])
    for name in before:          # biases, BatchNorm parameters and buffers untouched
        if not name.endswith("weight") or name == "1.weight":
            assert torch.equal(state[name], before[name]), name


@pytest.mark.parametrize("rate", [0.2, 0.35])
def test_sparsity_after_levels_is_iterated_rounding_of_rate(rate):
    model = _build()
    total = sum(p.numel() for p in prunable(model).values())
    assert total == 40 * 16 + 16 * 16 + 16 * 10
    masks = initial_masks(model)
    remaining = total
    g = torch.Generator().manual_seed(1)
    for level in range(1, 9):
        with torch.no_grad():        # stand-in for a level's training
            for p in prunable(model).values():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        new = global_magnitude_prune(model, masks, rate=rate)
        assert all(not (n & ~m).any() for n, m in zip(new.values(), masks.values()))
        masks = new
        apply_masks(model, masks)
        remaining -= math.floor(rate * remaining + 0.5)
        assert sum(int(m.sum()) for m in masks.values()) == remaining
        assert abs(sparsity(masks) - (1 - (1 - rate) ** level)) <= level / total
        per_layer = layer_sparsity(masks)
        weighted = sum(per_layer[n] * m.numel() for n, m in masks.items()) / total
        assert weighted == pytest.approx(sparsity(masks))


def test_masks_must_match_the_model():
    model = _tiny()
    with pytest.raises(KeyError, match="valid names"):
        global_magnitude_prune(model, {"9.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        apply_masks(model, {"0.weight": torch.ones(3, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="rate"):
        global_magnitude_prune(model, initial_masks(model), rate=1.0)


# ------------------------------------------------ masks through training
def _data(spec, n=32):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, *spec[1], generator=g), torch.randint(0, 10, (n,), generator=g)


def _optimizer(name, params):
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    return torch.optim.Adam(params, lr=1e-2, weight_decay=5e-4)


def _train(spec, masks, opt_name, steps=8, enforce=True, mask_grads=False, check=True):
    model = _build(spec)
    x, y = _data(spec)
    opt = _optimizer(opt_name, model.parameters())
    enforcer = MaskEnforcer(model, masks)
    apply_masks(model, masks)
    params = prunable(model)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if mask_grads:
            enforcer.mask_gradients()
        opt.step()
        if enforce:
            enforcer(opt)
        if check:
            for name, keep in masks.items():
                p = params[name]
                assert (p.detach()[~keep] == 0).all()
                for value in opt.state[p].values():
                    if value.shape == p.shape:
                        assert (value[~keep] == 0).all()
    return model


def _level_one_masks(spec):
    model = _build(spec)
    return global_magnitude_prune(model, initial_masks(model), rate=0.5)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("spec", [MLP, CNN], ids=["mlp", "cnn1d"])
def test_enforcer_keeps_masked_weights_exactly_zero_through_training(
        single_thread, spec, opt_name):
    masks = _level_one_masks(spec)
    start = clone_state(_build(spec))
    model = _train(spec, masks, opt_name)           # asserts zeros after every step
    for name, keep in masks.items():
        assert not torch.equal(clone_state(model)[name][keep], start[name][keep])   # it trained

    # The surviving weights follow the masked-gradient trajectory bit for bit.
    ref = _train(spec, masks, opt_name, mask_grads=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 ref.state_dict().values()))

    # Control: masks applied once, no enforcer -> masked weights leave zero.
    free = _train(spec, masks, opt_name, enforce=False, check=False)
    assert any((prunable(free)[n].detach()[~k] != 0).any() for n, k in masks.items())


# ---------------------------------------------------------- mask state
def test_mask_state_round_trips_through_weights_only_load():
    model = _build(CNN)
    masks = global_magnitude_prune(model, initial_masks(model), rate=0.3)
    buf = io.BytesIO()
    torch.save(masks_to_state(masks), buf)
    buf.seek(0)
    back = masks_from_state(torch.load(buf, weights_only=True), model)
    assert list(back) == list(masks)
    assert all(b.dtype == torch.bool and torch.equal(b, masks[n]) for n, b in back.items())

    enforcer = MaskEnforcer(model, masks)
    buf = io.BytesIO()
    torch.save(enforcer.state_dict(), buf)
    buf.seek(0)
    other = _build(CNN, seed=3)
    resumed = MaskEnforcer(other, initial_masks(other))
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    resumed()
    for name, keep in masks.items():
        assert torch.equal(prunable(other)[name].detach() != 0, keep)


# ------------------------------------------------------------- rewinding
def _pruned_and_trained(seed=0):
    """MLP with BatchNorm, two levels pruned from its weights at init, then
    trained a few steps so every value differs from the snapshot."""
    model = _build(MLP, seed)
    snapshot = clone_state(model)
    masks = initial_masks(model)
    for _ in range(2):
        masks = global_magnitude_prune(model, masks, rate=0.2)
    x, y = _data(MLP)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, masks, snapshot


def test_rewind_restores_survivors_and_state_and_zeroes_masked():
    model, masks, snapshot = _pruned_and_trained()
    kept = clone_state(model)
    stats = "hidden.0.norm.running_mean"
    assert not torch.equal(kept[stats], snapshot[stats])
    rewind(model, masks, snapshot)
    state = clone_state(model)
    for name, value in snapshot.items():
        if name in masks:
            assert torch.equal(state[name][masks[name]], value[masks[name]])
            assert (state[name][~masks[name]] == 0).all()
            assert (value[~masks[name]] != 0).any()          # the snapshot is not modified
        else:
            assert torch.equal(state[name], value), name


def _ablated(ablation, seed, seeds_used=None):
    model, masks, snapshot = _pruned_and_trained()
    rewind(model, masks, snapshot)

    def build(s):
        if seeds_used is not None:
            seeds_used.append(s)
        return _build(MLP, s)

    ablate(model, masks, ablation, torch.Generator().manual_seed(seed), build)
    return clone_state(model), masks, snapshot


def _survivors(state, masks):
    return {n: state[n][m] for n, m in masks.items()}


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_every_ablation_touches_only_surviving_weights_and_is_seeded(ablation):
    state, masks, snapshot = _ablated(ablation, seed=5)
    for name, value in state.items():
        if name in masks:
            assert (value[~masks[name]] == 0).all()
        else:                    # biases, BatchNorm parameters and statistics
            assert torch.equal(value, snapshot[name]), name
    again, _, _ = _ablated(ablation, seed=5)
    other, _, _ = _ablated(ablation, seed=6)
    assert all(torch.equal(state[n], again[n]) for n in state)
    same_as_other = all(torch.equal(state[n], other[n]) for n in state)
    assert same_as_other == (ablation == "none")


def test_ablation_none_is_the_rewound_network():
    state, masks, snapshot = _ablated("none", seed=0)
    for name, keep in masks.items():
        assert torch.equal(state[name][keep], snapshot[name][keep])


def test_random_magnitudes_keep_signs_and_layer_scale():
    state, masks, snapshot = _ablated("random_magnitudes_kept_signs", seed=0)
    new, old = _survivors(state, masks), _survivors(snapshot, masks)
    for name in masks:
        assert torch.equal(torch.sign(new[name]), torch.sign(old[name]))
        assert (new[name].abs() != old[name].abs()).float().mean() > 0.99
        rms = lambda v: float(v.double().pow(2).mean().sqrt())   # noqa: E731
        assert 0.7 < rms(new[name]) / rms(old[name]) < 1.3


def test_random_signs_keep_magnitudes():
    state, masks, snapshot = _ablated("kept_magnitudes_random_signs", seed=0)
    new, old = _survivors(state, masks), _survivors(snapshot, masks)
    flipped = torch.cat([torch.sign(new[n]) != torch.sign(old[n]) for n in masks]).float().mean()
    assert all(torch.equal(new[n].abs(), old[n].abs()) for n in masks)
    assert 0.35 < float(flipped) < 0.65


def test_shuffle_layer_keeps_each_layers_values():
    state, masks, snapshot = _ablated("shuffle_layer", seed=0)
    new, old = _survivors(state, masks), _survivors(snapshot, masks)
    for name in masks:
        assert torch.equal(new[name].sort().values, old[name].sort().values)
        assert not torch.equal(new[name], old[name])


def test_shuffle_network_keeps_the_networks_values_not_each_layers():
    state, masks, snapshot = _ablated("shuffle_network", seed=0)
    new, old = _survivors(state, masks), _survivors(snapshot, masks)
    assert torch.equal(torch.cat(list(new.values())).sort().values,
                       torch.cat(list(old.values())).sort().values)
    assert all(new[n].numel() == old[n].numel() for n in masks)
    assert any(not torch.equal(new[n].sort().values, old[n].sort().values) for n in masks)


def test_reinit_takes_survivors_from_a_fresh_build():
    seeds: list[int] = []
    state, masks, snapshot = _ablated("reinit", seed=0, seeds_used=seeds)
    assert len(seeds) == 1 and seeds[0] != 0
    fresh = clone_state(_build(MLP, seeds[0]))
    for name, keep in masks.items():
        assert torch.equal(state[name][keep], fresh[name][keep])
        assert (state[name][keep] != snapshot[name][keep]).float().mean() > 0.99


def test_ablate_names_its_errors():
    model, masks, _ = _pruned_and_trained()
    with pytest.raises(KeyError, match="valid names.*shuffle_layer"):
        ablate(model, masks, "shuffle", torch.Generator())
    with pytest.raises(ValueError, match="build"):
        ablate(model, masks, "reinit", torch.Generator())


# --------------------------------------------------------------- timeline
def test_weight_distance_and_sign_flips_over_prunable_survivors():
    model = _build(MLP)
    init = clone_state(model)
    masks = global_magnitude_prune(model, initial_masks(model), rate=0.5)
    with torch.no_grad():
        for name, p in prunable(model).items():
            p.add_(0.01)
        model.out.bias.add_(100.0)                  # not a prunable weight: ignored
        w = model.hidden[0].layer.weight
        keep = masks["hidden.0.layer.weight"]
        alive = keep.nonzero()[:3]
        dead = (~keep).nonzero()[:2]
        for i, j in alive.tolist():
            w[i, j] = -init["hidden.0.layer.weight"][i, j] * 2 - torch.sign(
                init["hidden.0.layer.weight"][i, j]) * 0.1
        for i, j in dead.tolist():
            w[i, j] = -init["hidden.0.layer.weight"][i, j]
    names = list(masks)
    now = torch.cat([prunable(model)[n].detach().reshape(-1) for n in names]).double()
    ref = torch.cat([init[n].reshape(-1) for n in names]).double()
    keep_all = torch.cat([masks[n].reshape(-1) for n in names])
    dist = float((now - ref).norm())
    assert weight_distance(model, init) == pytest.approx(dist, rel=1e-9)
    relative = dist / float(ref.norm())
    assert weight_distance(model, init, relative=True) == pytest.approx(relative, rel=1e-9)
    masked_dist = float((now - ref)[keep_all].norm())
    assert weight_distance(model, init, masks) == pytest.approx(masked_dist, rel=1e-9)
    flips_all = float((torch.sign(now) != torch.sign(ref)).double().mean())
    flips_kept = float((torch.sign(now) != torch.sign(ref))[keep_all].double().mean())
    assert weight_sign_flips(model, init) == pytest.approx(flips_all)
    assert weight_sign_flips(model, init, masks) == pytest.approx(flips_kept)
    assert flips_kept * int(keep_all.sum()) >= 3 - 1e-9


# ----------------------------------------------------------------- config
def test_pruning_config_defaults_bounds_and_names():
    cfg = PruningConfig()
    assert (cfg.levels, cfg.rate, cfg.rewind_step, cfg.ablation) == (0, 0.2, 0, "none")
    assert set(typing.get_args(PruningConfig.model_fields["ablation"].annotation)) == set(ABLATIONS)
    for bad in ({"rate": 0.0}, {"rate": 1.0}, {"levels": -1}, {"rewind_step": -1},
                {"ablation": "shuffle"}, {"level": 3}, {"ablation": "reinit"}):
        with pytest.raises(ValidationError):
            PruningConfig(**bad)
    with pytest.raises(ValidationError):
        cfg.levels = 3
    ok = PruningConfig(levels=3, ablation="reinit", rewind_step=100)
    assert ok.ablation == "reinit"


def test_ablation_generator_is_seeded_by_trial_level_and_override():
    cfg = PruningConfig(levels=2, ablation="shuffle_layer")
    draw = lambda g: torch.randint(0, 2**30, (4,), generator=g)   # noqa: E731
    assert torch.equal(draw(ablation_generator(cfg, 7, 1)), draw(ablation_generator(cfg, 7, 1)))
    assert not torch.equal(draw(ablation_generator(cfg, 7, 1)), draw(ablation_generator(cfg, 7, 2)))
    assert not torch.equal(draw(ablation_generator(cfg, 7, 1)), draw(ablation_generator(cfg, 8, 1)))
    fixed = PruningConfig(levels=2, ablation="shuffle_layer", ablation_seed=3)
    assert torch.equal(draw(ablation_generator(fixed, 7, 1)), draw(ablation_generator(fixed, 8, 1)))
