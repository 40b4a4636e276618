"""ResNet specifics: masked shortcut projections, per-task batch norm, residual-aware measures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clsweep import registry
from clsweep.backbones import HATMaskResNet, TaskBatchNorm2d

X = (3, 16, 16)


def hat_resnet(norm: str = "task_batch", name: str = "hat_mask_resnet18") -> HATMaskResNet:
    torch.manual_seed(0)
    backbone = registry.create("backbone", name, X, base_width=8, norm=norm)
    backbone.setup_task_id(1)
    return backbone


def task_state(backbone: nn.Module, task_id: int) -> dict[str, torch.Tensor]:
    """Copies of every parameter and buffer of one task's batch-norm layers."""
    state = {}
    for name, module in backbone.named_modules():
        if isinstance(module, TaskBatchNorm2d):
            for key, value in module.bns[str(task_id)].state_dict().items():
                state[f"{name}.{key}"] = value.clone()
    return state


def test_shortcut_projections_are_weighted_and_masked() -> None:
    backbone = hat_resnet().eval()
    shortcuts = [n for n in backbone.weighted_layer_names if n.endswith("shortcut")]
    assert shortcuts == ["layer2/0/shortcut", "layer3/0/shortcut", "layer4/0/shortcut"]
    assert backbone.mask_units["layer2/0/shortcut"] == 16
    with torch.no_grad():
        for e in backbone.embedding_parameters():
            e.fill_(1.0)
    backbone.store_task_mask(1)
    with torch.no_grad():
        backbone.embedding("layer2/0/shortcut").fill_(-1.0)
    backbone.setup_task_id(2)
    backbone.store_task_mask(2)
    x = torch.randn(2, *X)
    feature_open, _, hidden_open = backbone(x, "test", 1)
    feature_closed, mask, hidden_closed = backbone(x, "test", 2)
    assert torch.equal(mask["layer2/0/shortcut"], torch.zeros(16))
    assert torch.all(hidden_closed["layer2/0/shortcut"] == 0)
    assert hidden_open["layer2/0/shortcut"].abs().sum() > 0
    assert not torch.allclose(feature_open, feature_closed)  # the shortcut path is really used


def test_residual_inputs_are_declared_per_block() -> None:
    backbone = hat_resnet()
    assert backbone.input_layer_names("conv1") == ()
    assert backbone.input_layer_names("layer1/0/conv1") == ("conv1",)
    assert backbone.input_layer_names("layer1/0/conv2") == ("layer1/0/conv1",)
    assert backbone.input_layer_names("layer1/1/conv1") == ("layer1/0/conv2", "conv1")
    block_input = ("layer1/1/conv2", "layer1/0/conv2", "conv1")
    assert backbone.input_layer_names("layer2/0/conv1") == block_input
    assert backbone.input_layer_names("layer2/0/shortcut") == block_input
    assert backbone.input_layer_names("layer2/1/conv1") == ("layer2/0/conv2", "layer2/0/shortcut")
    bottleneck = hat_resnet(name="hat_mask_resnet50")
    assert bottleneck.input_layer_names("layer1/0/conv3") == ("layer1/0/conv2",)
    assert bottleneck.input_layer_names("layer1/1/conv1") == ("layer1/0/conv3", "layer1/0/shortcut")


def test_measure_after_a_residual_sum_takes_the_max_of_both_paths() -> None:
    backbone = hat_resnet()
    measure = {n: torch.ones(u) for n, u in backbone.mask_units.items()}
    measure["layer2/0/conv2"] = torch.tensor([1.0, 0.0, 0.0, 0.5] * 4)
    measure["layer2/0/shortcut"] = torch.tensor([0.0, 1.0, 0.0, 0.25] * 4)
    measure["layer2/1/conv1"] = torch.tensor([1.0] * 8 + [0.5] * 8)
    weight, bias = backbone.get_layer_measure_parameter_wise(measure, "layer2/1/conv1", "min")
    assert bias is None  # convolutions before batch norm have no bias
    block_output = torch.tensor([1.0, 1.0, 0.0, 0.5] * 4)
    expected = torch.minimum(measure["layer2/1/conv1"].view(-1, 1), block_output.view(1, -1))
    assert weight.shape == backbone.get_layer_by_name("layer2/1/conv1").weight.shape
    assert torch.equal(weight[:, :, 1, 1], expected)
    assert torch.equal(weight, expected.view(16, 16, 1, 1).expand_as(weight))
    weight_max, _ = backbone.get_layer_measure_parameter_wise(measure, "layer2/1/conv1", "max")
    assert torch.equal(
        weight_max[:, :, 0, 0], torch.maximum(measure["layer2/1/conv1"].view(-1, 1), block_output)
    )


def test_training_a_new_task_leaves_old_batch_norm_untouched() -> None:
    backbone = hat_resnet().train()
    optimiser = torch.optim.SGD(backbone.parameters(), lr=0.1)
    feature, _, _ = backbone(torch.randn(4, *X), "train", s_max=10.0, batch_idx=1, num_batches=1)
    feature.sum().backward()
    optimiser.step()
    backbone.store_task_mask(1)
    before = task_state(backbone, 1)
    assert before and any(k.endswith("running_mean") and v.abs().sum() > 0 for k, v in before.items())

    backbone.setup_task_id(2)
    optimiser = torch.optim.SGD(backbone.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    task2_before = task_state(backbone, 2)
    for _ in range(2):
        optimiser.zero_grad()
        feature, _, _ = backbone(torch.randn(4, *X) * 3 + 1, "train", s_max=10.0, batch_idx=1, num_batches=1)
        feature.sum().backward()
        optimiser.step()
    after = task_state(backbone, 1)
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    task2_after = task_state(backbone, 2)
    assert any(
        not torch.equal(task2_after[k], v) for k, v in task2_before.items() if k.endswith("running_mean")
    )


def test_checkpoint_with_task_batch_norm_loads_into_a_fresh_model() -> None:
    trained = hat_resnet().train()
    for task_id in (1, 2, 3):
        trained.setup_task_id(task_id)
        trained.initialise_task_embedding("U-11")
        trained(torch.randn(4, *X) + task_id, "train", s_max=10.0, batch_idx=1, num_batches=1)
        trained.store_task_mask(task_id)
    fresh = registry.create("backbone", "hat_mask_resnet18", X, base_width=8, norm="task_batch")
    fresh.load_state_dict(trained.state_dict(), strict=True)
    trained.eval(), fresh.eval()
    x = torch.randn(3, *X)
    for task_id in (1, 2, 3):
        torch.testing.assert_close(fresh(x, "test", task_id)[0], trained(x, "test", task_id)[0])
    assert fresh.stored_task_ids == [1, 2, 3]


def test_mixed_task_batch_runs_each_task_with_its_own_batch_norm() -> None:
    backbone = hat_resnet().train()
    for task_id in (1, 2):
        backbone.setup_task_id(task_id)
        backbone.initialise_task_embedding("U-11")
        backbone(torch.randn(4, *X) * task_id, "train", s_max=10.0, batch_idx=1, num_batches=1)
        backbone.store_task_mask(task_id)
    backbone.eval()
    x = torch.randn(5, *X)
    ids = torch.tensor([1, 2, 2, 1, 2])
    feature, mask, hidden = backbone(x, "test", ids)
    assert mask["conv1"].shape == (5, 8)
    for task_id in (1, 2):
        rows = ids == task_id
        expected, _, expected_hidden = backbone(x[rows], "test", task_id)
        torch.testing.assert_close(feature[rows], expected)
        torch.testing.assert_close(hidden["layer3/0/shortcut"][rows], expected_hidden["layer3/0/shortcut"])


def test_a_task_without_batch_norm_layers_is_a_clear_error() -> None:
    backbone = hat_resnet().eval()
    backbone.store_task_mask(3)  # never set up: no batch norm for task 3
    with pytest.raises(KeyError, match="setup_task_id"):
        backbone(torch.randn(2, *X), "test", 3)


def test_norm_none_has_no_batch_norm_and_biased_convolutions() -> None:
    backbone = hat_resnet(norm="none")
    assert not any(isinstance(m, (nn.BatchNorm2d, TaskBatchNorm2d)) for m in backbone.modules())
    measure = {n: torch.ones(u) for n, u in backbone.mask_units.items()}
    for name, (_, bias) in backbone.parameter_measures(measure, "min").items():
        assert bias is not None and bias.shape == backbone.get_layer_by_name(name).bias.shape
    feature, _, _ = backbone(torch.randn(2, *X), "validation", s_max=10.0)
    assert feature.shape == (2, 64)
    with pytest.raises(ValueError, match="norm"):
        registry.create("backbone", "hat_mask_resnet18", X, base_width=8, norm="batch")


def test_plain_resnet_shares_batch_norm_and_imagenet_stem_builds() -> None:
    backbone = registry.create("backbone", "resnet18", (3, 32, 32), base_width=8, small_input=False)
    assert isinstance(backbone.bn1, nn.BatchNorm2d)
    assert backbone.get_layer_by_name("conv1").kernel_size == (7, 7)
    feature, hidden = backbone(torch.randn(2, 3, 32, 32), "train")
    assert feature.shape == (2, 64)
    assert hidden["conv1"].shape == (2, 8, 8, 8)  # stride-2 conv then stride-2 max-pool


def test_batch_norm_of_a_new_task_follows_the_model_dtype() -> None:
    backbone = hat_resnet().double()
    backbone.setup_task_id(2)
    assert backbone.bn1.bns["2"].weight.dtype == torch.float64
    feature, _, _ = backbone(torch.randn(2, *X, dtype=torch.float64), "validation", s_max=10.0)
    assert feature.dtype == torch.float64
    assert backbone.store_task_mask(2)["conv1"].dtype == torch.float64
