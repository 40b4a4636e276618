"""The CLBackbone contract, checked on every registered backbone (new ones are covered on
registration): layer naming, forward outputs, stage validation, feature access, flat views."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clsweep import registry
from clsweep.backbones.base import CLBackbone
from clsweep.backbones.hat import HATMaskBackbone

NAMES = registry.list_names("backbone")
HAT_NAMES = [n for n in NAMES if "hat_mask" in registry.get("backbone", n).tags]
# The deepest nets repeat the structure of ResNet-50 block for block; the costly checks run on the
# others and these get one build-and-forward test of their own to keep the folder fast.
DEEP = {"resnet101", "resnet152", "hat_mask_resnet101", "hat_mask_resnet152"}
CORE = [n for n in NAMES if n not in DEEP]
CORE_HAT = [n for n in HAT_NAMES if n not in DEEP]


def test_every_hat_tagged_backbone_is_a_hat_mask_backbone(build) -> None:
    assert HAT_NAMES, "no backbone tagged hat_mask"
    for name in NAMES:
        backbone = build(name)
        assert isinstance(backbone, CLBackbone)
        assert isinstance(backbone, HATMaskBackbone) == (name in HAT_NAMES), name


@pytest.mark.parametrize("name", CORE)
def test_layer_names_resolve_in_forward_order(name: str, build) -> None:
    backbone = build(name)
    names = backbone.weighted_layer_names
    assert names and len(set(names)) == len(names)
    for name_ in names:
        assert "." not in name_
        layer = backbone.get_layer_by_name(name_)
        assert isinstance(layer.weight, nn.Parameter)
    # forward order: the order in which the layers' forward hooks fire
    fired: list[str] = []
    hooks = [
        backbone.get_layer_by_name(n).register_forward_hook(lambda *_, n=n: fired.append(n)) for n in names
    ]
    backbone.eval()
    with torch.no_grad():
        if isinstance(backbone, HATMaskBackbone):
            backbone(torch.randn(2, 3, 16, 16), "validation", s_max=4.0)
        else:
            backbone(torch.randn(2, 3, 16, 16), "validation")
    for hook in hooks:
        hook.remove()
    assert fired == names
    assert backbone.preceding_layer_name(names[0]) is None
    for previous, current in zip(names, names[1:], strict=False):
        assert backbone.preceding_layer_name(current) == previous


@pytest.mark.parametrize("name", CORE)
def test_unknown_layer_names_raise(name: str, build) -> None:
    backbone = build(name)
    with pytest.raises(ValueError, match="no layer"):
        backbone.get_layer_by_name("nope/0")
    with pytest.raises(ValueError):
        backbone.get_layer_by_name("")
    with pytest.raises(ValueError, match="not a weighted layer"):
        backbone.preceding_layer_name("nope/0")


@pytest.mark.parametrize("name", CORE)
@pytest.mark.parametrize("stage", ["train", "validation", "test"])
def test_forward_returns_feature_and_every_hidden_feature(name: str, stage: str, build, run_forward) -> None:
    backbone = build(name)
    backbone.train(stage == "train")
    feature, hidden = run_forward(backbone, torch.randn(3, 3, 16, 16), stage)
    assert feature.shape == (3, backbone.output_dim)
    assert set(hidden) == set(backbone.weighted_layer_names)
    for value in hidden.values():
        assert value.shape[0] == 3
        assert torch.isfinite(value).all()


@pytest.mark.parametrize("name", CORE)
def test_digits_sized_input_builds_and_runs(name: str, build, run_forward) -> None:
    backbone = build(name, input_shape=(1, 8, 8))
    backbone.eval()
    feature, _ = run_forward(backbone, torch.randn(2, 1, 8, 8), "test")
    assert feature.shape == (2, backbone.output_dim)


@pytest.mark.parametrize("name", sorted(DEEP))
def test_deep_resnets_build_and_run(name: str, build, run_forward) -> None:
    backbone = build(name)
    feature, hidden = run_forward(backbone, torch.randn(2, 3, 16, 16), "train")
    assert feature.shape == (2, backbone.output_dim) == (2, 8 * 8 * 4)
    assert set(hidden) == set(backbone.weighted_layer_names)
    depth = int(name.rsplit("resnet", 1)[1])
    convs = [n for n in backbone.weighted_layer_names if not n.endswith("shortcut")]
    assert len(convs) == depth - 1  # every conv but the classifier of the ImageNet model
    assert sum(n.endswith("shortcut") for n in backbone.weighted_layer_names) == 4
    for layer_name in backbone.weighted_layer_names:
        assert isinstance(backbone.get_layer_by_name(layer_name), nn.Conv2d)


@pytest.mark.parametrize("name", ["mlp", "hat_mask_mlp", "resnet18", "hat_mask_resnet18"])
def test_unknown_stage_is_rejected(name: str, build) -> None:
    backbone = build(name)
    with pytest.raises(ValueError, match="stage must be one of"):
        backbone(torch.randn(2, 3, 16, 16), "predict")


@pytest.mark.parametrize("name", ["mlp", "hat_mask_alexnet", "resnet18"])
def test_features_at_levels(name: str, build) -> None:
    backbone = build(name).eval()
    x = torch.randn(2, 3, 16, 16)
    kwargs = {"stage": "validation", "s_max": 5.0} if isinstance(backbone, HATMaskBackbone) else {}
    feature = backbone.features_at(x, "features", **kwargs)
    assert feature.shape == (2, backbone.output_dim)
    everything = backbone.features_at(x, "all", **kwargs)
    assert len(everything) == len(backbone.weighted_layer_names)
    head = nn.Linear(backbone.output_dim, 4)
    logits = backbone.features_at(x, "out", heads=head, **kwargs)
    torch.testing.assert_close(logits, head(feature))
    logits2, feature2 = backbone.features_at(x, "both", heads=head, **kwargs)
    torch.testing.assert_close(feature2, feature)
    torch.testing.assert_close(logits2, logits)
    with pytest.raises(ValueError, match="heads="):
        backbone.features_at(x, "out", **kwargs)
    with pytest.raises(ValueError, match="returnt"):
        backbone.features_at(x, "logits", **kwargs)


@pytest.mark.parametrize("name", CORE)
def test_flat_params_and_grads_round_trip(name: str, build, run_forward) -> None:
    backbone = build(name)
    flat = backbone.get_params()
    assert flat.dim() == 1 and flat.numel() == sum(p.numel() for p in backbone.parameters())
    assert backbone.get_grads().abs().sum() == 0  # no gradient yet: zeros, not an error
    new = torch.linspace(-1, 1, flat.numel())
    backbone.set_params(new)
    torch.testing.assert_close(backbone.get_params(), new)
    torch.testing.assert_close(
        next(backbone.parameters()).reshape(-1), new[: next(backbone.parameters()).numel()]
    )
    backbone.set_params(flat)
    feature, _ = run_forward(backbone, torch.randn(2, 3, 16, 16), "train")
    feature.sum().backward()
    grads = backbone.get_grads()
    expected = torch.cat(
        [torch.zeros(p.numel()) if p.grad is None else p.grad.reshape(-1) for p in backbone.parameters()]
    )
    torch.testing.assert_close(grads, expected)
    assert len(backbone.get_grads_list()) == len(list(backbone.parameters()))
    backbone.set_grads(grads * 2)
    torch.testing.assert_close(backbone.get_grads(), grads * 2)
    with pytest.raises(ValueError, match="expects a 1-D tensor"):
        backbone.set_params(flat[:-1])
    with pytest.raises(ValueError, match="expects a 1-D tensor"):
        backbone.set_grads(grads.view(1, -1))


@pytest.mark.parametrize("name", HAT_NAMES)
def test_parameter_measures_match_parameter_shapes(name: str, build) -> None:
    backbone = build(name)
    measure = {n: torch.rand(u) for n, u in backbone.mask_units.items()}
    measures = backbone.parameter_measures(measure, "min")
    assert list(measures) == backbone.weighted_layer_names
    for layer_name, (weight_measure, bias_measure) in measures.items():
        layer = backbone.get_layer_by_name(layer_name)
        assert weight_measure.shape == layer.weight.shape
        if layer.bias is None:
            assert bias_measure is None
        else:
            torch.testing.assert_close(bias_measure, measure[layer_name])


@pytest.mark.parametrize("name", CORE_HAT)
def test_declared_layer_inputs_match_the_activations_layers_read(name: str, build, make_positive) -> None:
    """In a network whose open units are all strictly positive, a layer's input unit j is
    non-zero exactly where the declared input measure (from a stored binary mask) is 1: the
    declared inputs are what the network really computes (residual sums, shortcuts, flattening)."""
    backbone = make_positive(build(name)).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for e in backbone.embedding_parameters():
            e.copy_(torch.where(torch.rand_like(e) < 0.7, 1.0, -1.0))
    stored = backbone.store_task_mask(1)
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        backbone.get_layer_by_name(n).register_forward_pre_hook(
            lambda _m, args, n=n: captured.__setitem__(n, args[0])
        )
        for n in backbone.weighted_layer_names
    ]
    with torch.no_grad():
        backbone(torch.rand(2, 3, 16, 16) + 0.5, "test", 1)
    for hook in hooks:
        hook.remove()
    checked = 0
    for layer_name in backbone.weighted_layer_names:
        input_measure = backbone.input_unit_measure(stored, layer_name)
        if input_measure is None:
            continue
        x = captured[layer_name]
        active = x.transpose(0, 1).reshape(x.shape[1], -1).abs().amax(dim=1) > 0
        assert torch.equal(active, input_measure == 1), layer_name
        checked += 1
    assert checked == len(backbone.weighted_layer_names) - 1


@pytest.mark.parametrize("name", ["alexnet", "hat_mask_alexnet", "resnet18", "hat_mask_resnet18"])
def test_image_backbones_reject_flat_input_shapes(name: str, build) -> None:
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build(name, input_shape=(64,))
