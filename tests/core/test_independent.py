"""Independent: a re-initialised backbone per task, only the current one trained, BWT exactly 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from clsweep import registry
from clsweep.experiment import run_experiment
from clsweep.spec import parse_experiment
from clsweep.spec.experiment import TrainConfig


def _independent(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    backbone = registry.create("backbone", "mlp", (1, 2, 2), hidden_dims=[5])
    return registry.create("algorithm", "independent", backbone, registry.create("heads", "til", 5))


def _weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_each_task_gets_a_fresh_seeded_backbone() -> None:
    algorithm = _independent()
    algorithm.setup_task(1, 2)
    algorithm.setup_task(2, 2)
    one, two = _weights(algorithm.backbones["1"]), _weights(algorithm.backbones["2"])
    template = _weights(algorithm.backbone)
    assert not any(torch.equal(a, b) for a, b in zip(one, two, strict=True))  # re-initialised, not copied
    assert not any(torch.equal(a, b) for a, b in zip(one, template, strict=True))
    algorithm.setup_task(1, 2)  # again (the loop after evaluate_future, a resume): kept
    assert all(torch.equal(a, b) for a, b in zip(one, _weights(algorithm.backbones["1"]), strict=True))
    torch.manual_seed(123)  # the global RNG at setup_task does not matter
    again = _independent()
    again.setup_task(2, 2)
    assert all(torch.equal(a, b) for a, b in zip(two, _weights(again.backbones["2"]), strict=True))


def test_optimiser_holds_only_the_current_backbone_and_head() -> None:
    algorithm = _independent()
    for t in (1, 2):
        algorithm.setup_task(t, 3)
    algorithm.on_task_start(2)
    optimised = {id(p) for group in algorithm.make_optimizer(0.1).param_groups for p in group["params"]}
    current = {id(p) for p in algorithm.backbones["2"].parameters()}
    current |= {id(p) for p in algorithm.heads.get_head(2).parameters()}
    assert optimised == current


def _cfg(**train: Any) -> Any:
    return parse_experiment(
        {
            "seed": 0,
            "benchmark": {"name": "permuted", "source": "synthetic", "num_tasks": 3},
            "backbone": {"name": "mlp", "hidden_dims": [16]},
            "algorithm": {"name": "independent"},
            "train": {"epochs": 2, "batch_size": 32, "lr": 0.1, "momentum": 0.9, **train},
        }
    )


def test_no_forgetting_and_resume_gives_the_same_numbers(tmp_path: Path) -> None:
    whole = run_experiment(_cfg())
    for j in range(3):  # every task's accuracy is fixed once it is trained
        column = [row[j] for row in whole.test_acc_matrix[j:]]
        assert column == [column[0]] * len(column)
    assert whole.per_task[-1]["bwt_test"] == 0.0
    run_experiment(_cfg(), checkpoint_dir=tmp_path, max_tasks=2)
    resumed = run_experiment(_cfg(), resume_from=tmp_path)
    assert resumed.test_acc_matrix == whole.test_acc_matrix


def test_one_layer_heads_keep_old_rows_only_without_weight_decay() -> None:
    """masked_multihead's one layer is in the optimiser at every task, old tasks' rows included:
    with no decay their zero gradient leaves them exactly where they were; with decay the
    algorithm refuses (Adam's L2 decay would move them by about lr per step)."""
    torch.manual_seed(0)
    backbone = registry.create("backbone", "mlp", (1, 2, 2), hidden_dims=[5])
    algorithm = registry.create(
        "algorithm", "independent", backbone, registry.create("heads", "masked_multihead", 5)
    )
    algorithm.train_config = TrainConfig(optimizer="adam")
    for t in (1, 2):
        algorithm.setup_task(t, 3)
    algorithm.on_task_start(2)
    layer = algorithm.heads.layer
    before = layer.weight.detach().clone()
    optimiser = algorithm.make_optimizer(0.1)
    for _ in range(3):
        optimiser.zero_grad()
        logits = algorithm.heads(
            algorithm.backbones["2"](torch.randn(4, 1, 2, 2), stage="train", task_id=2)[0], 2
        )
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
        optimiser.step()
    rows = algorithm.heads.offset(1), algorithm.heads.offset(2)
    assert torch.equal(layer.weight[rows[0] : rows[1]], before[rows[0] : rows[1]])  # task 1's rows
    assert not torch.equal(layer.weight[rows[1] :], before[rows[1] :])  # task 2's rows trained
    algorithm.train_config = TrainConfig(optimizer="adam", weight_decay=0.01)
    with pytest.raises(ValueError, match="weight_decay must be 0 with heads MaskedMultiHead"):
        algorithm.on_task_start(2)
