"""HAT-mask machinery: annealing, gates, init modes, stored / cumulative / summative masks,
checkpoints, test-stage masking and parameter-wise measures on hand-built examples."""

from __future__ import annotations

import math

import pytest
import torch

from clsweep import registry
from clsweep.backbones import HATMaskAlexNet, HATMaskBackbone, HATMaskMLP
from clsweep.backbones.alexnet import alexnet_plan


def set_embedding(backbone: HATMaskBackbone, values: dict[str, list[float]]) -> None:
    with torch.no_grad():
        for name, v in values.items():
            backbone.embedding(name).copy_(torch.tensor(v))


def small_mlp(**kwargs) -> HATMaskMLP:
    torch.manual_seed(0)
    return registry.create(
        "backbone", "hat_mask_mlp", (3,), hidden_dims=kwargs.pop("hidden_dims", [2, 3]), **kwargs
    )


# ------------------------------------------------------------------------------------------------
# Annealing and gates
# ------------------------------------------------------------------------------------------------


def test_anneal_scalar_endpoints_and_single_batch() -> None:
    anneal = HATMaskBackbone.anneal_scalar
    assert anneal(400.0, 1, 10) == pytest.approx(1 / 400)
    assert anneal(400.0, 10, 10) == pytest.approx(400.0)
    assert anneal(400.0, 1, 1) == 400.0
    midpoint = 1 / 400 + (400 - 1 / 400) * 4 / 9
    assert anneal(400.0, 5, 10) == pytest.approx(midpoint)
    values = [anneal(400.0, b, 422) for b in range(1, 423)]
    assert min(values) > 0
    assert values == sorted(values)


@pytest.mark.parametrize(("s_max", "b", "B"), [(400.0, 0, 10), (400.0, 11, 10), (400.0, 1, 0), (0.0, 1, 2)])
def test_anneal_scalar_rejects_out_of_range(s_max: float, b: int, B: int) -> None:
    with pytest.raises(ValueError):
        HATMaskBackbone.anneal_scalar(s_max, b, B)


def test_train_and_validation_masks_use_the_sigmoid_of_the_scaled_embedding() -> None:
    backbone = small_mlp()
    e = backbone.embedding("fc/1")
    train = backbone.get_mask("train", s_max=50.0, batch_idx=3, num_batches=5)
    s = HATMaskBackbone.anneal_scalar(50.0, 3, 5)
    torch.testing.assert_close(train["fc/1"], torch.sigmoid(s * e))
    assert train["fc/1"].requires_grad
    validation = backbone.get_mask("validation", s_max=50.0)
    torch.testing.assert_close(validation["fc/0"], torch.sigmoid(50.0 * backbone.embedding("fc/0")))
    with pytest.raises(ValueError, match="batch_idx"):
        backbone.get_mask("train", s_max=50.0)
    with pytest.raises(ValueError, match="s_max"):
        backbone.get_mask("validation")
    with pytest.raises(ValueError, match="task_id"):
        backbone.get_mask("test")
    with pytest.raises(ValueError, match="no stored mask"):
        backbone.get_mask("test", task_id=1)


def test_only_the_sigmoid_gate_is_accepted() -> None:
    with pytest.raises(ValueError, match="sigmoid"):
        registry.create("backbone", "hat_mask_mlp", (3,), hidden_dims=[2], gate="tanh")


def test_embeddings_one_parameter_per_layer_in_forward_order() -> None:
    backbone = small_mlp()
    params = backbone.embedding_parameters()
    assert [p.shape for p in params] == [(2,), (3,)]
    assert backbone.mask_units == {"fc/0": 2, "fc/1": 3}
    assert all(any(p is q for q in backbone.parameters()) for p in params)
    with pytest.raises(ValueError, match="not a gated layer"):
        backbone.embedding("fc/9")


# ------------------------------------------------------------------------------------------------
# Init modes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "low", "high", "mean", "std"),
    [
        ("N01", -math.inf, math.inf, 0.0, 1.0),
        ("U-11", -1.0, 1.0, 0.0, 1 / math.sqrt(3)),
        ("U01", 0.0, 1.0, 0.5, 1 / math.sqrt(12)),
        ("U-10", -1.0, 0.0, -0.5, 1 / math.sqrt(12)),
    ],
)
def test_init_mode_distributions(mode: str, low: float, high: float, mean: float, std: float) -> None:
    backbone = registry.create("backbone", "hat_mask_mlp", (2,), hidden_dims=[20000])
    before = backbone.embedding("fc/0")
    backbone.initialise_task_embedding(mode)
    e = backbone.embedding("fc/0")
    assert e is before  # re-drawn in place: optimisers keep their reference
    assert e.min() >= low and e.max() <= high
    assert e.mean().item() == pytest.approx(mean, abs=0.03)
    assert e.std().item() == pytest.approx(std, abs=0.03)


def test_last_keeps_the_previous_task_embedding_and_falls_back_to_n01_at_first() -> None:
    backbone = registry.create("backbone", "hat_mask_mlp", (2,), hidden_dims=[20000])
    backbone.initialise_task_embedding("U01")
    backbone.initialise_task_embedding("last")  # no task stored yet: N(0, 1)
    e = backbone.embedding("fc/0").detach().clone()
    assert (e < 0).float().mean().item() == pytest.approx(0.5, abs=0.03)
    assert e.std().item() == pytest.approx(1.0, abs=0.03)
    backbone.store_task_mask(1)
    backbone.initialise_task_embedding("last")
    torch.testing.assert_close(backbone.embedding("fc/0").detach(), e)
    backbone.initialise_task_embedding("N01")
    assert not torch.equal(backbone.embedding("fc/0").detach(), e)


def test_unknown_init_mode() -> None:
    with pytest.raises(ValueError, match="init mode"):
        small_mlp().initialise_task_embedding("U02")


# ------------------------------------------------------------------------------------------------
# Stored, cumulative and summative masks
# ------------------------------------------------------------------------------------------------


def test_cumulative_is_max_and_summative_is_sum_of_stored_masks() -> None:
    backbone = small_mlp()
    assert backbone.stored_task_ids == []
    for m in (backbone.get_cumulative_mask(), backbone.get_summative_mask()):
        assert torch.equal(m["fc/0"], torch.zeros(2)) and torch.equal(m["fc/1"], torch.zeros(3))
    tasks = {
        1: {"fc/0": [1.0, -1.0], "fc/1": [0.5, -0.5, 0.0]},
        2: {"fc/0": [2.0, -3.0], "fc/1": [-1.0, 1.0, -2.0]},
        3: {"fc/0": [0.1, 0.2], "fc/1": [-1.0, -1.0, -1.0]},
    }
    for task_id, values in tasks.items():
        set_embedding(backbone, values)
        stored = backbone.store_task_mask(task_id)
        assert torch.equal(stored["fc/1"], (torch.tensor(values["fc/1"]) > 0).float())
    assert backbone.stored_task_ids == [1, 2, 3]
    assert torch.equal(backbone.get_task_mask(1)["fc/1"], torch.tensor([1.0, 0.0, 0.0]))  # e = 0 is closed
    assert torch.equal(backbone.get_cumulative_mask()["fc/0"], torch.tensor([1.0, 1.0]))
    assert torch.equal(backbone.get_cumulative_mask()["fc/1"], torch.tensor([1.0, 1.0, 0.0]))
    assert torch.equal(backbone.get_summative_mask()["fc/0"], torch.tensor([3.0, 1.0]))
    assert torch.equal(backbone.get_summative_mask()["fc/1"], torch.tensor([1.0, 1.0, 0.0]))
    # the getters hand out copies
    backbone.get_cumulative_mask()["fc/0"].zero_()
    assert torch.equal(backbone.cumulative_mask["fc/0"], torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="no stored mask for task 4"):
        backbone.get_task_mask(4)


def test_storing_a_task_again_replaces_its_mask() -> None:
    backbone = small_mlp()
    set_embedding(backbone, {"fc/0": [1.0, 1.0], "fc/1": [1.0, 1.0, 1.0]})
    backbone.store_task_mask(1)
    set_embedding(backbone, {"fc/0": [-1.0, 1.0], "fc/1": [-1.0, -1.0, 1.0]})
    backbone.store_task_mask(1)
    assert backbone.stored_task_ids == [1]
    assert torch.equal(backbone.get_summative_mask()["fc/1"], torch.tensor([0.0, 0.0, 1.0]))


def test_state_dict_round_trip_restores_embeddings_and_every_mask() -> None:
    trained = registry.create(
        "backbone", "hat_mask_alexnet", (3, 16, 16), channels=[4, 6, 8], fc_dims=[12, 10]
    )
    for task_id in (1, 2, 3):
        trained.setup_task_id(task_id)
        trained.initialise_task_embedding("N01")
        trained.store_task_mask(task_id)
    fresh = registry.create("backbone", "hat_mask_alexnet", (3, 16, 16), channels=[4, 6, 8], fc_dims=[12, 10])
    fresh.load_state_dict(trained.state_dict(), strict=True)
    assert fresh.stored_task_ids == [1, 2, 3]
    for task_id in (1, 2, 3):
        for name, mask in trained.get_task_mask(task_id).items():
            assert torch.equal(fresh.get_task_mask(task_id)[name], mask)
    for name in trained.weighted_layer_names:
        assert torch.equal(fresh.get_cumulative_mask()[name], trained.get_cumulative_mask()[name])
        assert torch.equal(fresh.get_summative_mask()[name], trained.get_summative_mask()[name])
        assert torch.equal(fresh.embedding(name), trained.embedding(name))
    x = torch.randn(4, 3, 16, 16)
    trained.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x, "test", 2)[0], trained(x, "test", 2)[0])
    # and back into a model that had stored more tasks than the checkpoint
    fresh.store_task_mask(4)
    fresh.load_state_dict(trained.state_dict(), strict=True)
    assert fresh.stored_task_ids == [1, 2, 3]


# ------------------------------------------------------------------------------------------------
# Test-stage forward
# ------------------------------------------------------------------------------------------------


def test_test_stage_uses_the_stored_binary_mask() -> None:
    backbone = small_mlp(hidden_dims=[4, 3]).eval()
    set_embedding(backbone, {"fc/0": [1.0, -1.0, 0.0, 2.0], "fc/1": [-0.5, 3.0, 0.1]})
    backbone.store_task_mask(1)
    backbone.initialise_task_embedding("U01")  # the live embedding no longer matters at test
    x = torch.randn(8, 3)
    feature, mask, hidden = backbone(x, "test", 1)
    assert torch.equal(mask["fc/0"], torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert torch.all(hidden["fc/0"][:, [1, 2]] == 0)
    assert torch.all(feature[:, 0] == 0)
    expected_fc0 = backbone.fc[0](x).relu() * mask["fc/0"]
    torch.testing.assert_close(hidden["fc/0"], expected_fc0)


def test_per_sample_task_ids_give_per_sample_masks() -> None:
    backbone = small_mlp(hidden_dims=[4, 3]).eval()
    set_embedding(backbone, {"fc/0": [1.0, -1.0, 1.0, -1.0], "fc/1": [1.0, 1.0, -1.0]})
    backbone.store_task_mask(1)
    set_embedding(backbone, {"fc/0": [-1.0, 1.0, 1.0, 1.0], "fc/1": [-1.0, 1.0, 1.0]})
    backbone.store_task_mask(2)
    x = torch.randn(5, 3)
    ids = torch.tensor([2, 1, 1, 2, 2])
    feature, mask, _ = backbone(x, "test", ids)
    assert mask["fc/0"].shape == (5, 4)
    assert torch.equal(mask["fc/1"][1], torch.tensor([1.0, 1.0, 0.0]))
    for task_id in (1, 2):
        rows = ids == task_id
        torch.testing.assert_close(feature[rows], backbone(x[rows], "test", task_id)[0])
    with pytest.raises(ValueError, match=r"task\(s\) \[7\]"):
        backbone(x, "test", torch.tensor([1, 7, 1, 1, 2]))
    with pytest.raises(ValueError, match="only supported in the test stage"):
        backbone(x, "validation", ids, s_max=10.0)


# ------------------------------------------------------------------------------------------------
# Parameter-wise measures
# ------------------------------------------------------------------------------------------------


def test_linear_measures_hand_built() -> None:
    backbone = small_mlp()  # 3 -> fc/0 (2 units) -> fc/1 (3 units)
    measure = {"fc/0": torch.tensor([1.0, 0.0]), "fc/1": torch.tensor([0.0, 1.0, 0.5])}
    weight_min, bias_min = backbone.get_layer_measure_parameter_wise(measure, "fc/1", "min")
    weight_max, bias_max = backbone.get_layer_measure_parameter_wise(measure, "fc/1", "max")
    assert torch.equal(weight_min, torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]]))
    assert torch.equal(weight_max, torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.5]]))
    assert torch.equal(bias_min, measure["fc/1"]) and torch.equal(bias_max, measure["fc/1"])
    # the first layer reads the ungated input: its own unit measure only, for either aggregation
    for aggregation in ("min", "max"):
        weight, bias = backbone.get_layer_measure_parameter_wise(measure, "fc/0", aggregation)
        assert torch.equal(weight, torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
        assert torch.equal(bias, measure["fc/0"])
    weight_min.fill_(7.0)  # results are fresh tensors, not views of the measure
    assert torch.equal(measure["fc/1"], torch.tensor([0.0, 1.0, 0.5]))


def test_measure_argument_errors() -> None:
    backbone = small_mlp()
    measure = {"fc/0": torch.ones(2), "fc/1": torch.ones(3)}
    with pytest.raises(ValueError, match="aggregation"):
        backbone.get_layer_measure_parameter_wise(measure, "fc/1", "mean")
    with pytest.raises(ValueError, match="no entry for layer 'fc/0'"):
        backbone.get_layer_measure_parameter_wise({"fc/1": torch.ones(3)}, "fc/1", "min")
    with pytest.raises(ValueError, match="expected \\(2,\\)"):
        backbone.get_layer_measure_parameter_wise(
            {"fc/0": torch.ones(3), "fc/1": torch.ones(3)}, "fc/1", "min"
        )
    with pytest.raises(ValueError, match="not a gated layer"):
        backbone.get_layer_measure_parameter_wise(measure, "fc/5", "min")


def alexnet_with_flatten() -> HATMaskAlexNet:
    plan, (h, w) = alexnet_plan(24, 24)
    assert h * w > 1  # conv -> fc flattening spreads each channel over several positions
    torch.manual_seed(0)
    return registry.create(
        "backbone",
        "hat_mask_alexnet",
        (1, 24, 24),
        channels=[2, 3, 2],
        fc_dims=[3, 2],
        dropout_conv=0.0,
        dropout_fc=0.0,
    )


def test_conv_and_flatten_measures_hand_built() -> None:
    backbone = alexnet_with_flatten()
    repeat = backbone.flatten_repeat
    measure = {
        "conv/0": torch.tensor([1.0, 0.0]),
        "conv/1": torch.tensor([0.0, 1.0, 0.5]),
        "conv/2": torch.tensor([1.0, 0.0]),
        "fc/0": torch.tensor([0.0, 1.0, 0.25]),
        "fc/1": torch.tensor([1.0, 0.0]),
    }
    weight, bias = backbone.get_layer_measure_parameter_wise(measure, "conv/1", "min")
    k = backbone.conv[1].kernel_size
    expected = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]]).view(3, 2, 1, 1).expand(3, 2, *k)
    assert torch.equal(weight, expected)
    assert torch.equal(bias, measure["conv/1"])
    weight_max, _ = backbone.get_layer_measure_parameter_wise(measure, "conv/1", "max")
    expected_max = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.5]]).view(3, 2, 1, 1).expand(3, 2, *k)
    assert torch.equal(weight_max, expected_max)
    # conv/2 (2 channels, h*w positions each) -> fc/0: column c*repeat + p belongs to channel c
    weight, _ = backbone.get_layer_measure_parameter_wise(measure, "fc/0", "min")
    assert weight.shape == (3, 2 * repeat)
    for i in range(3):
        for c in range(2):
            for p in range(repeat):
                assert weight[i, c * repeat + p] == min(measure["fc/0"][i], measure["conv/2"][c])
    first, _ = backbone.get_layer_measure_parameter_wise(measure, "conv/0", "min")
    assert torch.equal(first, measure["conv/0"].view(2, 1, 1, 1).expand_as(backbone.conv[0].weight))


def test_flatten_measure_order_matches_torch_flatten() -> None:
    """Inputs of fc/0 that the measure calls closed are exactly the zeros of the flattened map."""
    backbone = alexnet_with_flatten().eval()
    set_embedding(backbone, {"conv/2": [-1.0, 1.0]})
    with torch.no_grad():
        backbone.conv[2].bias.fill_(5.0)  # open channels strictly positive everywhere
    stored = backbone.store_task_mask(1)
    _, _, hidden = backbone(torch.rand(2, 1, 24, 24), "test", 1)
    zeros = (hidden["conv/2"].flatten(1) == 0).all(dim=0)
    assert torch.equal(zeros, backbone.input_unit_measure(stored, "fc/0") == 0)


@pytest.mark.parametrize("backbone_factory", [lambda: small_mlp(hidden_dims=[8, 8]), alexnet_with_flatten])
def test_max_protects_a_superset_of_min(backbone_factory) -> None:
    backbone = backbone_factory()
    torch.manual_seed(3)
    measure = {n: (torch.rand(u) < 0.5).float() for n, u in backbone.mask_units.items()}
    minimum = backbone.parameter_measures(measure, "min")
    maximum = backbone.parameter_measures(measure, "max")
    for name in backbone.weighted_layer_names:
        assert torch.all(minimum[name][0] <= maximum[name][0])
        protected_min, protected_max = minimum[name][0] == 1, maximum[name][0] == 1
        assert torch.all(protected_max | ~protected_min)
    assert any((maximum[n][0] > minimum[n][0]).any() for n in backbone.weighted_layer_names)
