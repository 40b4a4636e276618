"""ER: the vectorised reservoir against the sequential algorithm, its uniformity, the replay loss by
hand, first-epoch-only filling and the checkpoint round trip."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from clsweep import registry
from clsweep.algorithms.replay_buffer import ReservoirMemory, own_task_cross_entropy, reservoir_slots
from clsweep.experiment import run_experiment
from clsweep.spec import parse_experiment


def sequential_reservoir(seen: int, capacity: int, u: torch.Tensor, buffer: list[int]) -> list[int]:
    """Algorithm R one sample at a time: the reference the vectorised update must equal."""
    buffer = list(buffer)
    for k in range(u.shape[0]):
        i = seen + k
        if i < capacity:
            buffer[i] = k
            continue
        j = min(int(u[k].item() * (i + 1)), i)
        if j < capacity:
            buffer[j] = k
    return buffer


@pytest.mark.parametrize(
    ("seen", "capacity", "batch"),
    [(0, 10, 4), (7, 10, 8), (10, 10, 64), (95, 5, 200), (0, 3, 50), (1000, 100, 64), (3, 20, 1)],
)
def test_vectorised_reservoir_equals_the_sequential_algorithm(seen: int, capacity: int, batch: int) -> None:
    generator = torch.Generator().manual_seed(seen * 31 + batch)
    for _ in range(20):
        u = torch.rand(batch, dtype=torch.float64, generator=generator)
        before = [-1] * capacity
        slots = reservoir_slots(seen, capacity, u)
        vectorised = before + [-1]  # + the scratch row
        for k, s in enumerate(slots.tolist()):  # distinct rows except the scratch row
            vectorised[s] = k
        assert sorted(s for s in slots.tolist() if s < capacity) == sorted(
            set(s for s in slots.tolist() if s < capacity)
        )
        assert vectorised[:capacity] == sequential_reservoir(seen, capacity, u, before)


def test_reservoir_keeps_a_uniform_sample() -> None:
    """Stream 0..999 in batches of 50 into 100 rows, 500 times: every item is kept with frequency
    0.1; Pearson's statistic over the 1000 items stays within 5 standard deviations of its mean."""
    torch.manual_seed(0)
    items, capacity, runs, batch = 1000, 100, 500, 50
    counts = torch.zeros(items)
    stream = torch.arange(items, dtype=torch.float32).view(-1, 1)
    labels = torch.zeros(items, dtype=torch.long)
    for _ in range(runs):
        memory = ReservoirMemory(capacity)
        for start in range(0, items, batch):
            memory.add(
                stream[start : start + batch], labels[start : start + batch], labels[start : start + batch]
            )
        kept = memory.rows()[0].view(-1).long()
        assert kept.unique().numel() == capacity
        counts[kept] += 1
    p = capacity / items
    expected = runs * p
    assert (counts / runs - p).abs().max().item() < 5 * math.sqrt(p * (1 - p) / runs)
    chi2 = float(((counts - expected) ** 2 / (expected * (1 - p))).sum())
    assert abs(chi2 - (items - 1)) < 5 * math.sqrt(2 * (items - 1)), chi2
    # the first and the last batches are kept alike (no bias towards either end of the stream)
    assert abs(counts[:batch].mean().item() - counts[-batch:].mean().item()) / runs < 0.02


def build(paradigm: str = "til", **params: Any) -> Any:
    backbone = registry.create("backbone", "mlp", (1, 2, 2), hidden_dims=[5])
    heads = registry.create("heads", paradigm, backbone.output_dim)
    algorithm = registry.create("algorithm", "er", backbone, heads, **params)
    for t in (1, 2):
        algorithm.setup_task(t, 3)
    return algorithm


@pytest.mark.parametrize("paradigm", ["til", "cil"])
def test_loss_and_metrics_are_the_mean_over_current_and_replay_batches(paradigm: str) -> None:
    torch.manual_seed(0)
    algorithm = build(paradigm, buffer_size=6, replay_batch_size=6)
    offset = 3 if paradigm == "cil" else 0
    old_x, old_y = torch.randn(6, 1, 2, 2), torch.randint(0, 3, (6,))
    algorithm.memory.add(old_x, old_y, torch.ones(6, dtype=torch.long))
    x, y = torch.randn(4, 1, 2, 2), torch.randint(0, 3, (4,)) + offset
    algorithm.task_id = 2
    out = algorithm.training_step((x, y, torch.full((4,), 2)), 0)

    feature_new, _ = algorithm.backbone(x, stage="train")
    feature_old, _ = algorithm.backbone(old_x, stage="train")
    ce = nn.functional.cross_entropy
    new = ce(algorithm.heads(feature_new, 2), y, reduction="sum")
    old = ce(algorithm.heads(feature_old, 1), old_y, reduction="sum")  # the memory holds all 6 rows
    torch.testing.assert_close(out["loss"], (new + old) / 10)
    assert out["loss_cls"] is out["loss"]  # the step's metrics are the union's, as Joint's
    logits_new, logits_old = algorithm.heads(feature_new, 2), algorithm.heads(feature_old, 1)
    hits = (logits_new.argmax(1) == y).sum() + (logits_old.argmax(1) == old_y).sum()
    torch.testing.assert_close(out["acc"], hits.float() / 10)
    assert all(h.shape[0] == 10 for h in out["hidden_features"].values())


def test_memory_is_written_in_the_first_epoch_only(tmp_path: Path) -> None:
    cfg = parse_experiment(
        {
            "seed": 0,
            "benchmark": {"name": "permuted", "source": "synthetic", "num_tasks": 2},
            "backbone": {"name": "mlp", "hidden_dims": [8]},
            "algorithm": {"name": "er", "buffer_size": 10_000},
            "train": {"epochs": 3, "batch_size": 32, "lr": 0.1},
        }
    )
    run_experiment(cfg, checkpoint_dir=tmp_path)
    state = torch.load(tmp_path / "state.pt", weights_only=False)["extra"]["memory"]
    stream = registry.create("benchmark", "permuted", "til", params=cfg.benchmark.params)
    n = [stream.task(t).train_x.shape[0] for t in (1, 2)]
    assert state["seen"] == sum(n) and state["x"].shape[0] == sum(n)  # every sample once, not once per epoch
    assert state["task_ids"].bincount().tolist() == [0, n[0], n[1]]


def test_resume_gives_the_uninterrupted_numbers(tmp_path: Path) -> None:
    cfg = parse_experiment(
        {
            "seed": 0,
            "benchmark": {"name": "permuted", "source": "synthetic", "num_tasks": 3},
            "backbone": {"name": "mlp", "hidden_dims": [16]},
            "algorithm": {"name": "er", "buffer_size": 50},
            "train": {"epochs": 2, "batch_size": 32, "lr": 0.1},
        }
    )
    whole = run_experiment(cfg)
    run_experiment(cfg, checkpoint_dir=tmp_path, max_tasks=2)
    resumed = run_experiment(cfg, resume_from=tmp_path)
    assert resumed.test_acc_matrix == whole.test_acc_matrix
    assert resumed.val_acc_matrix == whole.val_acc_matrix


def test_mixed_task_cross_entropy_of_tasks_with_different_class_counts() -> None:
    """Rows of tasks with 2, 4 and 3 classes, tasks interleaved: the same per-row loss and
    correctness as one cross-entropy per task, and the same gradients."""
    torch.manual_seed(0)
    heads = registry.create("heads", "til", 5)
    for t, k in ((1, 2), (2, 4), (3, 3)):
        heads.setup_task_id(t, k)
    feature = torch.randn(7, 5, requires_grad=True)
    task_ids, y = torch.tensor([2, 1, 3, 2, 1, 3, 2]), torch.tensor([3, 1, 2, 0, 0, 1, 2])
    losses, correct = own_task_cross_entropy(heads, feature, y, task_ids)
    order = torch.argsort(task_ids, stable=True)  # rows of task 1, then 2, then 3
    by_task = [heads(f, t) for t, f in zip((1, 2, 3), feature[order].split([2, 3, 2]), strict=True)]
    want = torch.zeros(7).index_put_(
        (order,),
        torch.cat(
            [
                nn.functional.cross_entropy(lg, yy, reduction="none")
                for lg, yy in zip(by_task, y[order].split([2, 3, 2]), strict=True)
            ]
        ),
    )
    torch.testing.assert_close(losses, want)
    predicted = torch.zeros(7, dtype=torch.long).index_put_(
        (order,), torch.cat([lg.argmax(1) for lg in by_task])
    )
    assert torch.equal(correct, predicted == y)
    got = torch.autograd.grad(losses.sum(), [feature, *heads.parameters()])
    expected = torch.autograd.grad(want.sum(), [feature, *heads.parameters()])
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


def test_the_optimiser_updates_the_stacked_heads_until_the_task_ends() -> None:
    """TIL: make_optimizer stacks every head set up (StackedHeads) and optimises the stack in place
    of the heads' own parameters; on_task_end gives the heads their own storage back."""
    algorithm = build("til")
    optimizer = algorithm.make_optimizer(0.1)
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    stack = algorithm._stack
    assert stack is not None and {id(p) for p in stack.parameters()} <= optimised
    assert not optimised & {id(p) for p in algorithm.heads.parameters()}
    assert {id(p) for p in algorithm.backbone.parameters()} <= optimised
    algorithm.on_task_end(2)
    assert algorithm._stack is None
    assert stack.weight.data_ptr() not in {p.data_ptr() for p in algorithm.heads.parameters()}
    cil = build("cil")
    cil.make_optimizer(0.1)
    assert cil._stack is None  # CIL rows range over every class: scored by the heads as they are


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_stacked_heads_train_to_the_numbers_of_the_heads_own_parameters(
    optimizer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every step's batch holds rows of every task here (a buffer of both tasks), so the stacked
    heads must give ER's numbers with the heads' own parameters exactly, momentum and decay on."""
    from clsweep.heads.stacked import StackedHeads

    train = {"epochs": 2, "batch_size": 32, "lr": 0.1 if optimizer == "sgd" else 0.01, "optimizer": optimizer}
    train |= {"momentum": 0.9} if optimizer == "sgd" else {}
    cfg = parse_experiment(
        {
            "seed": 0,
            "benchmark": {"name": "permuted", "source": "synthetic", "num_tasks": 2},
            "backbone": {"name": "mlp", "hidden_dims": [16]},
            "algorithm": {"name": "er", "buffer_size": 50},
            "train": {**train, "weight_decay": 0.01},
        }
    )
    stacked = run_experiment(cfg)
    monkeypatch.setattr(StackedHeads, "supports", staticmethod(lambda heads: False))
    own = run_experiment(cfg)
    assert stacked.test_acc_matrix == own.test_acc_matrix
    assert [t["loss_train"] for t in stacked.per_task] == [t["loss_train"] for t in own.per_task]
