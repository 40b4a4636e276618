"""AdaHAT's importance at residual sums and its per-optimiser alpha; CBPHAT's contribution utility by
hand, its importance and its checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from clsweep import registry
from clsweep.algorithms.adahat import AdaHAT
from clsweep.algorithms.cbphat import CBPHAT, min_max_normalise
from clsweep.backbones.hat import HATMaskBackbone, LayerInput, apply_gate
from clsweep.experiment import run_experiment
from clsweep.spec import parse_experiment
from clsweep.spec.experiment import TrainConfig
from clsweep.spec.methods.hat import ADAHAT_DEFAULT_ALPHA


class TwoPaths(HATMaskBackbone):
    """x -> a, x -> b, c reads relu(a + b): the shape of a residual block's sum."""

    def __init__(self) -> None:
        super().__init__((2,), 2, gate="sigmoid")
        self.a, self.b, self.c = nn.Linear(2, 3), nn.Linear(2, 3), nn.Linear(3, 2)
        self.register_hat_layers({"a": LayerInput(), "b": LayerInput(), "c": LayerInput(("a", "b"))})

    def masked_forward(
        self, input: Tensor, mask: dict[str, Tensor], task_id: int | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        h = (apply_gate(self.a(input), mask["a"]) + apply_gate(self.b(input), mask["b"])).relu()
        out = apply_gate(self.c(h).relu(), mask["c"])
        return out, {"a": h, "b": h, "c": out}


def store(backbone: HATMaskBackbone, task_id: int, embeddings: dict[str, list[float]]) -> None:
    with torch.no_grad():
        for name, values in embeddings.items():
            backbone.embedding(name).copy_(torch.tensor(values))
    backbone.store_task_mask(task_id)


def test_importance_at_a_residual_sum_counts_the_tasks_through_any_path() -> None:
    backbone = TwoPaths()
    # unit 0 of the sum: task 1 reaches it through a, task 2 through b; unit 1: task 1 through both
    store(backbone, 1, {"a": [1, 1, -1], "b": [-1, 1, -1], "c": [1, 1]})
    store(backbone, 2, {"a": [-1, -1, -1], "b": [1, -1, -1], "c": [1, 1]})
    assert torch.equal(backbone.summative_input_measure("c"), torch.tensor([2.0, 1.0, 0.0]))
    # the max of the per-path counts would say 1 for unit 0
    assert torch.equal(
        backbone.input_unit_measure(backbone.get_summative_mask(), "c"), torch.tensor([1.0, 1.0, 0.0])
    )
    heads = registry.create("heads", "til", 2)
    adahat: AdaHAT = registry.create("algorithm", "adahat", backbone, heads)
    weight, bias = adahat.layer_importance("c")
    assert torch.equal(weight, torch.tensor([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]]))  # min(c's count 2, input)
    assert bias is not None and torch.equal(bias, torch.tensor([2.0, 2.0]))
    assert backbone.summative_input_measure("a") is None  # reads the network input


def tiny_algorithm(name: str, **params: Any) -> Any:
    torch.manual_seed(0)
    backbone = registry.create("backbone", "hat_mask_mlp", (3,), hidden_dims=[2, 3])
    heads = registry.create("heads", "til", backbone.output_dim)
    return registry.create("algorithm", name, backbone, heads, **params)


def test_default_alpha_follows_the_optimiser_and_sgd_is_not_hat() -> None:
    adahat: AdaHAT = tiny_algorithm("adahat")
    assert adahat.params.alpha is None
    adahat.train_config = TrainConfig(optimizer="sgd")
    assert adahat.alpha == ADAHAT_DEFAULT_ALPHA["sgd"]
    # a weight one earlier task used, while the new task takes half the free units
    sgd_rate = float(adahat.adjustment_rate(torch.tensor([1.0]), 0.5))
    assert sgd_rate > 1e-2  # SGD applies it to the update: the weight really moves
    adahat.train_config = TrainConfig(optimizer="adam", lr=1e-3)
    assert adahat.alpha == ADAHAT_DEFAULT_ALPHA["adam"] == 1e-6
    assert float(adahat.adjustment_rate(torch.tensor([1.0]), 0.5)) < 1e-4  # Adam's normalisation undoes it
    assert tiny_algorithm("adahat", alpha=0.3).alpha == 0.3  # an explicit alpha wins


def test_sgd_default_alpha_moves_a_protected_weight_in_a_real_step() -> None:
    adahat: AdaHAT = tiny_algorithm("adahat")
    adahat.train_config = TrainConfig(optimizer="sgd")
    store(adahat.backbone, 1, {"fc/0": [1, 1], "fc/1": [1, 1, 1]})  # task 1 used every unit
    adahat.setup_task(2, 2)
    adahat.on_task_start(2)
    out = adahat.training_step((torch.randn(8, 3), torch.randint(0, 2, (8,))), 0)
    out["loss"].backward()
    weight = adahat.backbone.get_layer_by_name("fc/1").weight
    raw = weight.grad.clone()  # type: ignore[union-attr]
    adahat.condition_weight_gradients()
    ratio = (weight.grad / raw)[raw != 0]  # type: ignore[operator]
    assert ratio.min() > 1e-2 and ratio.max() < 1.0, ratio


def test_no_summative_scales_every_gradient_by_r_over_task_index_plus_r() -> None:
    """The ablation AdaHAT-no-sum (§4.3; CLArena's ``adahat_no_sum``): a* = r / (t + r) with t the
    current task's index, the same for every parameter of a layer, used by an earlier task or not."""
    adahat: AdaHAT = tiny_algorithm("adahat", variant="no_summative", alpha=0.3)
    adahat.train_config = TrainConfig(optimizer="sgd")
    store(adahat.backbone, 1, {"fc/0": [1, -1], "fc/1": [1, -1, -1]})  # tasks 1, 2 used some units
    store(adahat.backbone, 2, {"fc/0": [1, -1], "fc/1": [-1, 1, -1]})
    for t in (1, 2, 3):
        adahat.setup_task(t, 2)
    adahat.on_task_start(3)
    out = adahat.training_step((torch.randn(8, 3), torch.randint(0, 2, (8,))), 0)
    out["loss"].backward()
    sparsity = {name: float(r) for name, r in adahat.layer_sparsity().items()}
    layers = {name: adahat.backbone.get_layer_by_name(name) for name in ("fc/0", "fc/1")}
    raw = {name: (layer.weight.grad.clone(), layer.bias.grad.clone()) for name, layer in layers.items()}
    adahat.condition_weight_gradients()
    for name, layer in layers.items():
        r = 0.3 / (sparsity[name] + 0.1)  # eps 0.1; R_l is 0 on layers this narrow (min_free_units)
        torch.testing.assert_close(layer.weight.grad, raw[name][0] * (r / (3 + r)))
        torch.testing.assert_close(layer.bias.grad, raw[name][1] * (r / (3 + r)))


def step(cbphat: CBPHAT, x: Tensor, y: Tensor) -> dict[str, Any]:
    out = cbphat.training_step((x, y), 0)
    cbphat.on_train_batch_end(out, (x, y), 0)
    return out


def by_hand(cbphat: CBPHAT, out: dict[str, Any]) -> dict[str, Tensor]:
    h0, h1 = out["hidden_features"]["fc/0"].detach(), out["hidden_features"]["fc/1"].detach()
    mask = {k: v.detach() for k, v in cbphat._train_mask.items()}
    w1 = cbphat.backbone.fc[1].weight.detach()  # reads fc/0: column j holds unit j's outgoing weights
    head = cbphat.heads.get_head(1).weight.detach()  # fc/1 is the feature layer: the task's head
    v0 = h0.abs().mean(0) * w1.abs().sum(0) * mask["fc/0"]
    v1 = h1.abs().mean(0) * head.abs().sum(0) * mask["fc/1"]
    return {"fc/0": (v0 - v0.min()) / (v0.max() - v0.min()), "fc/1": (v1 - v1.min()) / (v1.max() - v1.min())}


def test_cbphat_utility_of_one_step_and_its_decay_by_hand() -> None:
    cbphat: CBPHAT = tiny_algorithm("cbphat", utility_decay=0.9, s_max=10.0)
    cbphat.setup_task(1, 2)
    cbphat.on_task_start(1)
    cbphat.num_batches = 1
    torch.manual_seed(1)
    x, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    first = by_hand(cbphat, step(cbphat, x, y))
    for name, value in first.items():
        torch.testing.assert_close(cbphat.utility.get_buffer(name), value)
    with torch.no_grad():
        cbphat.heads.get_head(1).weight.mul_(-2.0)  # outgoing weights change between steps
    second = by_hand(cbphat, step(cbphat, 2 * x, y))
    for name in first:
        torch.testing.assert_close(cbphat.utility.get_buffer(name), 0.9 * first[name] + second[name])
    cbphat.on_task_end(1)
    for name in first:  # I += U / steps
        torch.testing.assert_close(
            cbphat.unit_importance.get_buffer(name), (0.9 * first[name] + second[name]) / 2
        )


def test_min_max_normalise_of_a_constant_layer_is_zero() -> None:
    assert torch.equal(min_max_normalise(torch.full((4,), 3.0)), torch.zeros(4))
    assert torch.equal(min_max_normalise(torch.tensor([1.0, 3.0, 2.0])), torch.tensor([0.0, 1.0, 0.5]))


def test_cbphat_importance_adds_unit_importance_to_the_summative_mask() -> None:
    cbphat: CBPHAT = tiny_algorithm("cbphat", aggregation="min")
    store(cbphat.backbone, 1, {"fc/0": [1, -1], "fc/1": [1, 1, -1]})
    cbphat.unit_importance.get_buffer("fc/0").copy_(torch.tensor([0.5, 0.25]))
    cbphat.unit_importance.get_buffer("fc/1").copy_(torch.tensor([0.0, 1.0, 0.75]))
    weight, bias = cbphat.layer_importance("fc/1")
    summative = torch.minimum(torch.tensor([1.0, 1.0, 0.0]).view(-1, 1), torch.tensor([1.0, 0.0]).view(1, -1))
    unit = torch.minimum(torch.tensor([0.0, 1.0, 0.75]).view(-1, 1), torch.tensor([0.5, 0.25]).view(1, -1))
    torch.testing.assert_close(weight, summative + unit)
    torch.testing.assert_close(bias, torch.tensor([1.0, 2.0, 0.75]))


def test_cbphat_state_is_in_the_checkpoint_and_a_resumed_run_matches(tmp_path: Path) -> None:
    cfg = parse_experiment(
        {
            "seed": 0,
            "benchmark": {"name": "permuted", "source": "synthetic", "num_tasks": 3},
            "backbone": {"name": "hat_mask_mlp", "hidden_dims": [32, 32]},
            "algorithm": {"name": "cbphat", "test_mask": "soft", "s_max": 20},
            "train": {"epochs": 2, "batch_size": 32, "lr": 0.1},
        }
    )
    whole = run_experiment(cfg)
    run_experiment(cfg, checkpoint_dir=tmp_path, max_tasks=2)
    resumed = run_experiment(cfg, resume_from=tmp_path)
    assert resumed.test_acc_matrix == whole.test_acc_matrix
    assert resumed.val_acc_matrix == whole.val_acc_matrix
    state = torch.load(next(tmp_path.iterdir()), weights_only=False)["model"]
    importance = [k for k in state if k.startswith("unit_importance.")]
    assert len(importance) == 2 and all(float(state[k].sum()) > 0 for k in importance)
    assert "utility_steps" in state and any(k.startswith("utility.") for k in state)


@pytest.mark.parametrize("name", ["adahat", "cbphat"])
def test_adahat_family_on_a_residual_network_runs(name: str) -> None:
    cfg = parse_experiment(
        {
            "seed": 0,
            "benchmark": {"name": "permuted", "source": "synthetic", "num_tasks": 2},
            "backbone": {"name": "hat_mask_resnet18", "base_width": 4, "norm": "task_batch"},
            "algorithm": {"name": name, "s_max": 50, "sparsity_strength": 0.05},
            "train": {"epochs": 1, "batch_size": 32, "lr": 0.05},
        }
    )
    result = run_experiment(cfg)
    assert all(v is not None for v in (result.test_acc_matrix[1][0], result.test_acc_matrix[1][1]))
