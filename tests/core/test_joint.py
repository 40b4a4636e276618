"""Joint: the union of the seen tasks' data, each sample scored by its own task's head."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from clsweep import registry
from clsweep.experiment import run_experiment
from clsweep.spec import parse_experiment


def _joint(heads: str = "til", classes: tuple[int, ...] = (2, 3)) -> Any:
    torch.manual_seed(0)
    backbone = registry.create("backbone", "mlp", (1, 2, 2), hidden_dims=[5])
    algorithm = registry.create("algorithm", "joint", backbone, registry.create("heads", heads, 5))
    for t, k in enumerate(classes, start=1):
        algorithm.setup_task(t, k)
    return algorithm


def _data(n: int, k: int, offset: int = 0) -> SimpleNamespace:
    return SimpleNamespace(train_x=torch.randn(n, 1, 2, 2), train_y=torch.randint(0, k, (n,)) + offset)


def test_training_set_is_the_union_with_task_ids() -> None:
    algorithm = _joint()
    one, two = _data(4, 2), _data(3, 3)
    algorithm.on_task_data(1, one)
    algorithm.on_task_data(2, two)
    x, y, ids = algorithm.training_set(2, two)
    assert torch.equal(x, torch.cat([one.train_x, two.train_x]))
    assert torch.equal(y, torch.cat([one.train_y, two.train_y]))
    assert ids.tolist() == [1, 1, 1, 1, 2, 2, 2]
    assert algorithm.training_set(1, one)[2].tolist() == [1] * 4  # task 1 alone: its own data


def test_til_loss_uses_each_samples_own_head() -> None:
    algorithm = _joint()
    x = torch.randn(6, 1, 2, 2)
    y = torch.tensor([0, 2, 1, 0, 1, 2])
    ids = torch.tensor([1, 2, 1, 2, 1, 2])
    out = algorithm.training_step((x, y, ids), 0)
    feature, _ = algorithm.backbone(x, stage="train")
    by_hand = [
        nn.functional.cross_entropy(algorithm.heads(feature[i : i + 1], int(ids[i])), y[i : i + 1])
        for i in range(6)
    ]
    assert out["loss"].item() == pytest.approx(torch.stack(by_hand).mean().item(), rel=1e-6)
    preds = [algorithm.heads(feature[i : i + 1], int(ids[i])).argmax().item() for i in range(6)]
    assert out["acc"].item() == pytest.approx(sum(p == t for p, t in zip(preds, y.tolist(), strict=True)) / 6)


def test_cil_loss_is_the_cross_entropy_over_all_seen_classes() -> None:
    algorithm = _joint("cil")
    x = torch.randn(5, 1, 2, 2)
    y = torch.tensor([0, 4, 1, 3, 2])  # global labels: task 1 owns 0-1, task 2 owns 2-4
    ids = torch.tensor([1, 2, 1, 2, 2])
    out = algorithm.training_step((x, y, ids), 0)
    feature, _ = algorithm.backbone(x, stage="train")
    by_hand = nn.functional.cross_entropy(algorithm.heads(feature), y)
    assert out["loss"].item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_missing_earlier_data_raises_instead_of_training_on_less() -> None:
    algorithm = _joint()
    with pytest.raises(RuntimeError, match=r"data of tasks \[1\] were never handed"):
        algorithm.training_set(2, _data(3, 3))


def test_resume_gives_the_uninterrupted_numbers(tmp_path: Path) -> None:
    cfg = parse_experiment(
        {
            "seed": 0,
            "benchmark": {"name": "permuted", "source": "synthetic", "num_tasks": 3},
            "backbone": {"name": "mlp", "hidden_dims": [16]},
            "algorithm": {"name": "joint"},
            "train": {"epochs": 2, "batch_size": 32, "lr": 0.1},
        }
    )
    whole = run_experiment(cfg)
    run_experiment(cfg, checkpoint_dir=tmp_path, max_tasks=2)
    resumed = run_experiment(cfg, resume_from=tmp_path)  # tasks 1-2's data are handed again
    assert resumed.test_acc_matrix == whole.test_acc_matrix


def test_plateau_validates_on_every_seen_task_by_hand() -> None:
    from clsweep.training import _validation_loss

    algorithm = _joint()
    one, two = _data(5, 2), _data(3, 3)
    one.val_x, one.val_y = torch.randn(7, 1, 2, 2), torch.randint(0, 2, (7,))
    two.val_x, two.val_y = torch.randn(2, 1, 2, 2), torch.randint(0, 3, (2,))
    algorithm.on_task_data(1, one)
    algorithm.training_set(2, two)
    sets = algorithm.validation_sets(2, two)
    assert [t for _, _, t in sets] == [1, 2]
    algorithm.eval()
    with torch.no_grad():
        x, y = torch.cat([one.val_x, two.val_x]), torch.cat([one.val_y, two.val_y])
        feature, _ = algorithm.backbone(x, stage="validation")
        task = [1] * 7 + [2] * 2
        by_hand = [
            nn.functional.cross_entropy(algorithm.heads(feature[i : i + 1], task[i]), y[i : i + 1])
            for i in range(9)
        ]
    # the mean over all 9 samples (7 of task 1, 2 of task 2), in batches of 4 that split task 1
    got = _validation_loss(algorithm, sets, batch_size=4)
    assert got == pytest.approx(torch.stack(by_hand).mean().item(), rel=1e-6)
    current_only = _validation_loss(algorithm, [(two.val_x, two.val_y, 2)], batch_size=4)
    assert current_only == pytest.approx(torch.stack(by_hand[7:]).mean().item(), rel=1e-6)
    assert got != pytest.approx(current_only)


def test_joint_trains_under_the_plateau_schedule() -> None:
    cfg = parse_experiment(
        {
            "seed": 0,
            "benchmark": {"name": "permuted", "source": "synthetic", "num_tasks": 2},
            "backbone": {"name": "mlp", "hidden_dims": [16]},
            "algorithm": {"name": "joint"},
            "train": {"lr": 0.1, "schedule": {"name": "plateau", "max_epochs": 3, "patience": 1}},
        }
    )
    result = run_experiment(cfg)
    assert len(result.per_task) == 2 and all(a is not None for a in result.test_acc_matrix[1])
    assert all(1 <= p["epochs_run"] <= 3 for p in result.per_task)
