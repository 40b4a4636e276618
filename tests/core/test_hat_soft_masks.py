"""HAT's `test_mask: soft` (the authors' code): stored and cumulative masks by hand, the gradient
multipliers they give, the checkpoint round trip, and the effect on forgetting against s_max."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from clsweep import registry
from clsweep.algorithms.hat import HAT
from clsweep.experiment import run_experiment
from clsweep.spec import parse_experiment

EMBEDDINGS = {  # two tasks' final embeddings of a 3 -> 2 -> 3 MLP
    1: {"fc/0": [0.02, -0.01], "fc/1": [0.5, -0.003, 0.0]},
    2: {"fc/0": [-0.004, 0.01], "fc/1": [-0.02, 0.001, 0.3]},
}


def tiny_hat(**params: Any) -> HAT:
    torch.manual_seed(0)
    backbone = registry.create("backbone", "hat_mask_mlp", (3,), hidden_dims=[2, 3])
    heads = registry.create("heads", "til", backbone.output_dim)
    return registry.create("algorithm", "hat", backbone, heads, **params)  # type: ignore[no-any-return]


def train_two_tasks(hat: HAT) -> None:
    """Two 'tasks' whose training ended with the embeddings above (no steps needed)."""
    for task_id, values in EMBEDDINGS.items():
        hat.setup_task(task_id, 2)
        hat.on_task_start(task_id)
        with torch.no_grad():
            for name, v in values.items():
                hat.backbone.embedding(name).copy_(torch.tensor(v))
        hat.on_task_end(task_id)


def test_soft_masks_and_cumulative_mask_by_hand() -> None:
    s_max = 100.0
    hat = tiny_hat(s_max=s_max, test_mask="soft")
    train_two_tasks(hat)
    expected = {
        t: {n: torch.sigmoid(s_max * torch.tensor(v)) for n, v in e.items()} for t, e in EMBEDDINGS.items()
    }
    for task_id in (1, 2):
        for name, mask in hat.backbone.get_task_mask(task_id).items():
            torch.testing.assert_close(mask, expected[task_id][name])
            assert not torch.equal(mask, mask.round())  # really soft
    cumulative = hat.backbone.get_cumulative_mask()
    summative = hat.backbone.get_summative_mask()
    for name in ("fc/0", "fc/1"):
        torch.testing.assert_close(cumulative[name], torch.maximum(expected[1][name], expected[2][name]))
        torch.testing.assert_close(summative[name], expected[1][name] + expected[2][name])
    # task 3's gradient multipliers: 1 - min(a_i, a_j) of the soft cumulative mask (Eq. 2, unthresholded)
    hat.setup_task(3, 2)
    hat.on_task_start(3)
    multipliers = {id(p): m for p, m in hat._protected}
    fc1 = hat.backbone.get_layer_by_name("fc/1")
    by_hand = 1.0 - torch.minimum(cumulative["fc/1"].view(-1, 1), cumulative["fc/0"].view(1, -1))
    torch.testing.assert_close(multipliers[id(fc1.weight)], by_hand)
    torch.testing.assert_close(multipliers[id(fc1.bias)], 1.0 - cumulative["fc/1"])
    # the test-stage forward of task 1 uses the soft mask
    x = torch.randn(4, 3)
    h0 = torch.relu(hat.backbone.fc[0](x)) * expected[1]["fc/0"]
    h1 = torch.relu(hat.backbone.fc[1](h0)) * expected[1]["fc/1"]
    feature, _, _ = hat.backbone(x, "test", 1)
    torch.testing.assert_close(feature, h1)


def test_binary_is_the_default_and_thresholds() -> None:
    hat = tiny_hat(s_max=100.0)
    assert hat.params.test_mask == "binary"
    train_two_tasks(hat)
    assert torch.equal(hat.backbone.get_task_mask(2)["fc/1"], torch.tensor([0.0, 1.0, 1.0]))
    assert torch.equal(hat.backbone.get_cumulative_mask()["fc/1"], torch.tensor([1.0, 1.0, 1.0]))


def test_soft_masks_survive_a_checkpoint_exactly() -> None:
    trained = tiny_hat(s_max=3.0, test_mask="soft")
    train_two_tasks(trained)
    fresh = tiny_hat(s_max=3.0, test_mask="soft")
    for task_id in (1, 2):
        fresh.setup_task(task_id, 2)
    fresh.load_state_dict(trained.state_dict(), strict=True)
    for task_id in (1, 2):
        for name, mask in trained.backbone.get_task_mask(task_id).items():
            assert torch.equal(fresh.backbone.get_task_mask(task_id)[name], mask)
    for name, mask in trained.backbone.get_cumulative_mask().items():
        assert torch.equal(fresh.backbone.get_cumulative_mask()[name], mask)
    x = torch.randn(5, 3)
    assert torch.equal(fresh.evaluate_logits(x, 1), trained.evaluate_logits(x, 1))


def forgetting_cfg(s_max: float, test_mask: str) -> Any:
    """Two permuted synthetic tasks, 4 epochs of batch 8: enough for HAT to learn task 1 at any s_max
    here. No sparsity term (c = 0), so only s_max decides how soft the stored gates are."""
    return parse_experiment(
        {
            "seed": 0,
            "benchmark": {"name": "permuted", "source": "synthetic", "num_tasks": 2},
            "backbone": {"name": "hat_mask_mlp", "hidden_dims": [64, 64]},
            "algorithm": {"name": "hat", "s_max": s_max, "sparsity_strength": 0.0, "test_mask": test_mask},
            "train": {"epochs": 4, "batch_size": 8, "lr": 0.1},
        }
    )


@pytest.mark.parametrize("s_max", [1.0, 2.0])
def test_soft_masks_forget_at_a_small_s_max(s_max: float) -> None:
    # measured (seed 0): BWT -0.37 at s_max 1, -0.18 at 2 (the gates sigmoid(s_max e) stay far from 0/1)
    result = run_experiment(forgetting_cfg(s_max, "soft")).to_dict()
    assert result["test_acc_matrix"][0][0] > 0.5, result["test_acc_matrix"]  # task 1 was learned
    assert result["bwt"] < -0.05, result["test_acc_matrix"]


def test_soft_masks_barely_forget_at_the_paper_s_max() -> None:
    result = run_experiment(forgetting_cfg(400.0, "soft")).to_dict()
    assert result["test_acc_matrix"][0][0] > 0.8
    assert abs(result["bwt"]) < 0.02, result["test_acc_matrix"]


@pytest.mark.parametrize("s_max", [1.0, 2.0, 400.0])
def test_binary_masks_never_forget(s_max: float) -> None:
    assert run_experiment(forgetting_cfg(s_max, "binary")).to_dict()["bwt"] == 0.0
