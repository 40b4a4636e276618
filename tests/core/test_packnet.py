"""PackNet: magnitude pruning of the task's own weights, disjoint owners, frozen old weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from clsweep import registry
from clsweep.experiment import run_experiment
from clsweep.spec import parse_experiment
from clsweep.spec.experiment import TrainConfig


def _packnet(**params: Any) -> Any:
    torch.manual_seed(0)
    backbone = registry.create("backbone", "mlp", (1, 2, 2), hidden_dims=[6, 5])
    algorithm = registry.create(
        "algorithm", "packnet", backbone, registry.create("heads", "til", 5), **params
    )
    algorithm.train_config = TrainConfig(momentum=0.9)
    return algorithm


def _train(algorithm: Any, task_id: int, steps: int, optimizer: str = "sgd") -> None:
    """The loop's hooks for one task: training, pruning, retraining, task end."""
    generator = torch.Generator().manual_seed(task_id)
    x, y = torch.randn(32, 1, 2, 2, generator=generator), torch.randint(0, 3, (32,), generator=generator)
    algorithm.setup_task(task_id, 3)
    algorithm.on_task_start(task_id)
    for phase in (0, 1):
        if phase:
            algorithm.on_post_train_start(task_id)
        params = [p for p in algorithm.parameters() if p.requires_grad]
        opt = (
            torch.optim.SGD(params, lr=0.1, momentum=0.9) if optimizer == "sgd" else torch.optim.Adam(params)
        )
        algorithm.train()
        algorithm.on_train_epoch_start()
        for _ in range(steps):
            out = algorithm.training_step((x, y, torch.full_like(y, task_id)), 0)
            opt.zero_grad()
            out["loss"].backward()
            algorithm.on_before_optimizer_step(opt)
            opt.step()
    algorithm.on_task_end(task_id)
    algorithm.eval()


def test_prune_frees_the_smallest_weights_of_the_task() -> None:
    algorithm = _packnet(prune_ratio=0.5)
    algorithm.setup_task(1, 3)
    algorithm.on_task_start(1)
    layer = algorithm.backbone.fc[1]
    with torch.no_grad():
        layer.weight.copy_(torch.arange(30, dtype=torch.float32).view(5, 6) - 14.5)  # |w|: 14.5 .. 0.5
    algorithm.prune(1)
    kept = (layer.weight.abs() > 7).view(-1)  # the 15 largest magnitudes of 30
    assert torch.equal(algorithm.owner(1).view(-1) == 1, kept)
    assert torch.equal(layer.weight.view(-1) == 0, ~kept)  # freed weights are zeroed
    first = algorithm.owner(0)
    assert int((first == 1).sum()) == round(0.5 * first.numel())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_task_one_is_frozen_and_its_forward_unchanged_after_task_two(optimizer: str) -> None:
    algorithm = _packnet()
    _train(algorithm, 1, 5, optimizer)
    x = torch.randn(7, 1, 2, 2)
    forward_after_one = algorithm.evaluate_logits(x, 1)
    owners_after_one = [algorithm.owner(i).clone() for i in range(len(algorithm.prunable))]
    state_after_one = {k: v.clone() for k, v in algorithm.state_dict().items()}
    _train(algorithm, 2, 5, optimizer)
    for i, (name, before) in enumerate(zip(algorithm.prunable, owners_after_one, strict=True)):
        weight, owner = algorithm.backbone.get_submodule(name).weight, algorithm.owner(i)
        mine = before == 1
        assert torch.equal(owner[mine], before[mine])  # task 1 keeps its weights
        assert torch.equal(weight[mine], state_after_one[f"backbone.{name}.weight"][mine])  # exactly frozen
        assert bool(((owner == 2) <= (before == 0)).all())  # task 2 took only weights free after task 1
        assert int((owner == 2).sum()) > 0 and not bool(((owner == 1) & (owner == 2)).any())
        assert torch.equal(
            algorithm.backbone.get_submodule(name).bias, state_after_one[f"backbone.{name}.bias"]
        )
    assert torch.equal(algorithm.evaluate_logits(x, 1), forward_after_one)  # BWT exactly 0
    with torch.no_grad():  # the newest task sees every weight in use: the mask changes nothing
        assert torch.equal(algorithm.evaluate_logits(x, 2), algorithm(x, "train", 2)[0])


def test_without_retraining_it_prunes_at_the_task_end() -> None:
    algorithm = _packnet(retrain_epochs=0)
    assert algorithm.post_train_epochs(1) == 0
    algorithm.setup_task(1, 3)
    algorithm.on_task_start(1)
    algorithm.on_task_end(1)
    assert algorithm.diagnostics()["packnet_free_fraction"] == pytest.approx(0.75, abs=0.02)


def test_weight_decay_is_refused() -> None:
    algorithm = _packnet()
    algorithm.train_config = TrainConfig(weight_decay=1e-4)
    algorithm.setup_task(1, 3)
    with pytest.raises(ValueError, match="weight_decay must be 0"):
        algorithm.on_task_start(1)


def _cfg() -> Any:
    return parse_experiment(
        {
            "seed": 0,
            "benchmark": {"name": "permuted", "source": "synthetic", "num_tasks": 3},
            "backbone": {"name": "mlp", "hidden_dims": [16]},
            "algorithm": {"name": "packnet", "retrain_epochs": 1},
            "train": {"epochs": 2, "batch_size": 32, "lr": 0.1, "momentum": 0.9},
        }
    )


def test_no_forgetting_and_resume_gives_the_same_numbers(tmp_path: Path) -> None:
    whole = run_experiment(_cfg())
    for j in range(3):
        column = [row[j] for row in whole.test_acc_matrix[j:]]
        assert column == [column[0]] * len(column)
    run_experiment(_cfg(), checkpoint_dir=tmp_path, max_tasks=2)
    resumed = run_experiment(_cfg(), resume_from=tmp_path)
    assert resumed.test_acc_matrix == whole.test_acc_matrix
