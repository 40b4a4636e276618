"""A-GEM: the projection (both cases, constructed on a tiny model, against a hand computation),
the per-class episodic memory and the checkpoint round trip."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from clsweep import registry
from clsweep.algorithms.agem import AGEM, _coefficient_number, _dot_sum, project, projection_coefficient
from clsweep.algorithms.replay_buffer import Memory, per_class_subset
from clsweep.experiment import run_experiment
from clsweep.spec import parse_experiment


def test_project_on_vectors() -> None:
    g, g_ref = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 1.0])
    dot = float(g @ g_ref)  # -1.5
    out = project(g, g_ref)
    torch.testing.assert_close(out, g - dot / 2.0 * g_ref)
    assert abs(float(out @ g_ref)) < 1e-6
    aligned = torch.tensor([1.0, 2.0, 0.5])
    assert torch.equal(project(aligned, g_ref), aligned)  # positive dot product: untouched, bit for bit


def test_coefficient_as_a_number_matches_the_tensor_formula() -> None:
    """The CPU path's coefficient, from per-parameter dot products summed as numbers, equals
    projection_coefficient on the flat vectors; 0 when the gradients agree; NaN stays NaN."""
    torch.manual_seed(0)
    g = [torch.randn(3, 4), torch.randn(4)]
    g_ref = [torch.randn(3, 4), torch.randn(4), torch.randn(2)]  # the last: a reference-only tensor
    flat_g = torch.cat([t.reshape(-1) for t in g])
    flat_ref = torch.cat([t.reshape(-1) for t in g_ref])
    dot = _dot_sum(g, g_ref)
    assert dot == pytest.approx(float(flat_g @ flat_ref[: flat_g.numel()]), rel=1e-6)
    for sign in (-1.0, 1.0):
        d = sign * abs(dot)
        want = float(projection_coefficient(torch.tensor(d), flat_ref))
        assert _coefficient_number(d, g_ref) == pytest.approx(want, rel=1e-6)
    assert _coefficient_number(abs(dot), g_ref) == 0.0
    assert math.isnan(_coefficient_number(math.nan, g_ref))


def build() -> Any:
    torch.manual_seed(0)
    backbone = registry.create("backbone", "mlp", (1, 2, 2), hidden_dims=[5])
    heads = registry.create("heads", "til", backbone.output_dim)
    algorithm = registry.create("algorithm", "agem", backbone, heads)
    for t in (1, 2):
        algorithm.setup_task(t, 2)
    algorithm.task_id = 2
    return algorithm


def flat_grads(algorithm: Any) -> Tensor:
    return torch.cat(
        [
            torch.zeros_like(p).reshape(-1) if p.grad is None else p.grad.reshape(-1)
            for p in [*algorithm.backbone.parameters(), *algorithm.heads.parameters()]
        ]
    )


def hand_gradient(algorithm: Any, x: Tensor, y: Tensor, task_id: int) -> Tensor:
    params = [*algorithm.backbone.parameters(), *algorithm.heads.parameters()]
    feature, _ = algorithm.backbone(x, stage="train")
    loss = nn.functional.cross_entropy(algorithm.heads(feature, task_id), y)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads, strict=True)]
    )


def step(algorithm: Any, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The current batch's gradient, then the hook: returns (g before, g after)."""
    algorithm.zero_grad(set_to_none=True)
    algorithm.training_step((x, y, torch.full((x.shape[0],), 2)), 0)["loss"].backward()
    before = flat_grads(algorithm).clone()
    algorithm.on_before_optimizer_step(None)
    return before, flat_grads(algorithm)


@pytest.fixture(params=["number", "tensor"])
def update_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of applying the update: ``alpha`` read as a number (what the CPU does) and kept in
    tensors (what an accelerator does, forced here on the CPU)."""
    if request.param == "tensor":
        monkeypatch.setattr(AGEM, "_reads_coefficient", staticmethod(lambda device: False))
    return str(request.param)


def test_gradient_is_untouched_when_it_agrees_with_the_memory(update_mode: str) -> None:
    algorithm = build()
    x, y = torch.randn(3, 1, 2, 2), torch.tensor([0, 1, 1])
    algorithm.memory.append(x, y, torch.full((3,), 2))  # memory = the batch itself: g_ref = g
    g, after = step(algorithm, x, y)
    g_ref = hand_gradient(algorithm, x, y, 2)
    assert float(g @ g_ref) > 0
    assert torch.equal(after, g)
    # task 1's head is in neither batch: no gradient (None), so weight decay or momentum skip it
    assert all(p.grad is None for p in algorithm.heads.get_head(1).parameters())


def test_gradient_is_projected_when_it_opposes_the_memory(update_mode: str) -> None:
    algorithm = build()
    x, y = torch.randn(1, 1, 2, 2), torch.tensor([0])
    # memory: the batch's sample with its label flipped (2 classes: its gradient is a negative
    # multiple of the batch's), plus a sample of task 1 through the old head
    old = torch.randn(1, 1, 2, 2)
    algorithm.memory.append(torch.cat([x, old]), torch.tensor([1, 0]), torch.tensor([2, 1]))
    g, after = step(algorithm, x, y)
    flipped = hand_gradient(algorithm, x, torch.tensor([1]), 2)
    g_ref = 0.5 * (flipped + hand_gradient(algorithm, old, torch.tensor([0]), 1))
    dot = float(g @ g_ref)
    assert dot < 0, "the construction must give an opposing reference gradient"
    torch.testing.assert_close(after, g - dot / float(g_ref @ g_ref) * g_ref)
    assert float(after @ g_ref) >= -1e-6 * float(g.norm() * g_ref.norm())
    n_backbone = algorithm.backbone.num_flat_params()
    assert torch.equal(after[:n_backbone], algorithm.backbone.get_grads())
    old_head = torch.cat([p.grad.reshape(-1) for p in algorithm.heads.get_head(1).parameters()])
    assert old_head.abs().sum() > 0  # the projection moves the old head along -g_ref


def test_no_memory_no_change() -> None:
    algorithm = build()
    x, y = torch.randn(3, 1, 2, 2), torch.tensor([0, 1, 1])
    g, after = step(algorithm, x, y)
    assert torch.equal(after, g)


def test_per_class_subset() -> None:
    torch.manual_seed(0)
    y = torch.tensor([2, 0, 0, 1, 2, 2, 0, 2, 0, 0])
    keep = per_class_subset(y, 2)
    assert keep.unique().numel() == keep.numel()
    assert y[keep].bincount().tolist() == [2, 1, 2]


def test_memory_sample_is_a_distinct_uniform_draw_of_whole_rows() -> None:
    """A sample is the rows ``randperm`` picks for the seed (distinct, in that order), each row's x,
    y and task id kept together, and the state round trip keeps every row."""
    memory = Memory()
    for t in (2, 1, 3):  # 4 rows per task; x encodes (task, row), y the row
        ids = torch.full((4,), t)
        memory.append((10 * ids + torch.arange(4)).float().view(4, 1), torch.arange(4), ids)
    torch.manual_seed(0)
    x, y, task_ids = memory.sample(7)
    torch.manual_seed(0)
    drawn = torch.randperm(12)[:7]
    assert torch.equal(x.view(-1), memory.x.view(-1)[drawn])
    assert torch.equal(x.view(-1), (10 * task_ids + y).float())
    assert x.view(-1).unique().numel() == 7
    assert memory.sample(50)[0].shape[0] == 12  # never more than stored, never a repeat
    restored = Memory()
    restored.load(memory.state())
    assert all(torch.equal(a, b) for a, b in zip(restored.rows(), memory.rows(), strict=True))


def test_memory_keeps_samples_per_class_of_every_finished_task(tmp_path: Path) -> None:
    cfg = parse_experiment(
        {
            "seed": 0,
            "benchmark": {"name": "permuted", "source": "synthetic", "num_tasks": 3},
            "backbone": {"name": "mlp", "hidden_dims": [16]},
            "algorithm": {"name": "agem", "samples_per_class": 3},
            "train": {"epochs": 2, "batch_size": 32, "lr": 0.1},
        }
    )
    whole = run_experiment(cfg)
    run_experiment(cfg, checkpoint_dir=tmp_path, max_tasks=2)
    memory = torch.load(tmp_path / "state.pt", weights_only=False)["extra"]["memory"]
    classes = int(memory["y"].max()) + 1
    assert memory["task_ids"].bincount().tolist() == [0, 3 * classes, 3 * classes]
    assert all(memory["y"][memory["task_ids"] == t].bincount().tolist() == [3] * classes for t in (1, 2))
    assert whole.per_task[1]["agem_projected_fraction"] > 0
    resumed = run_experiment(cfg, resume_from=tmp_path)
    assert resumed.test_acc_matrix == whole.test_acc_matrix
    assert resumed.val_acc_matrix == whole.val_acc_matrix


@pytest.mark.parametrize("paradigm", ["cil"])
def test_runs_class_incremental(paradigm: str) -> None:
    cfg = parse_experiment(
        {
            "seed": 0,
            "paradigm": paradigm,
            "benchmark": {"name": "split", "source": "synthetic", "num_tasks": 2},
            "backbone": {"name": "mlp", "hidden_dims": [16]},
            "algorithm": {"name": "agem"},
            "train": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        }
    )
    result = run_experiment(cfg)
    assert result.test_acc_matrix[1][1] is not None
