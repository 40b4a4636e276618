"""SI against a hand computation on a tiny model: the path integral over two plain SGD steps, the
importance at the task end, and the task-loss gradient once the surrogate term is active."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from clsweep import registry
from clsweep.experiment import run_experiment
from clsweep.spec import parse_experiment
from tests.core.test_experiment import tiny

LR, C, XI = 0.5, 3.0, 0.1


def _model() -> Any:
    torch.manual_seed(0)
    backbone = registry.create("backbone", "mlp", (1, 1, 3), hidden_dims=[4])
    heads = registry.create("heads", "til", 4)
    return registry.create("algorithm", "si", backbone, heads, strength=C, damping=XI)


def _batches(seed: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(3, 1, 1, 3, generator=g), torch.randint(0, 3, (3,), generator=g), torch.ones(3).long())
        for _ in range(2)
    ]


def _setup(model: Any, task_id: int) -> None:
    torch.manual_seed(100 + task_id)  # the same initial head for the hooked and the hand-made run
    model.setup_task(task_id, 3)


def _train_with_hooks(algorithm: Any, task_id: int, batches: list[Any], *, end: bool = True) -> None:
    _setup(algorithm, task_id)
    algorithm.on_task_start(task_id)
    optimizer = torch.optim.SGD(algorithm.parameters(), lr=LR)
    for i, batch in enumerate(batches):
        out = algorithm.training_step(batch, i)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        algorithm.on_before_optimizer_step(optimizer)
        optimizer.step()
        algorithm.on_train_batch_end(out, batch, i)
    if end:
        algorithm.on_task_end(task_id)


def _train_by_hand(
    model: Any,
    task_id: int,
    batches: list[Any],
    importance: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Plain SGD on CE + C * sum Omega (theta - theta_start)^2; returns (omega, Omega gained)."""
    _setup(model, task_id)
    backbone = dict(model.backbone.named_parameters())
    start = {n: p.detach().clone() for n, p in backbone.items()}
    omega = {n: torch.zeros_like(p) for n, p in backbone.items()}
    everything = list(model.parameters())
    for x, y, _ in batches:
        feature, _ = model.backbone(x, stage="train")
        ce = F.cross_entropy(model.heads(feature, task_id), y)
        surrogate = sum((importance[n] * (backbone[n] - start[n]) ** 2).sum() for n in importance)
        total = ce + C * surrogate
        task_grad = dict(
            zip(backbone, torch.autograd.grad(ce, list(backbone.values()), retain_graph=True), strict=True)
        )
        full_grad = torch.autograd.grad(total, everything, allow_unused=True)
        before = {n: p.detach().clone() for n, p in backbone.items()}
        with torch.no_grad():
            for p, g in zip(everything, full_grad, strict=True):
                if g is not None:
                    p -= LR * g
        for n, p in backbone.items():
            omega[n] -= task_grad[n] * (p.detach() - before[n])  # -g * delta theta
    gained = {n: omega[n] / ((backbone[n].detach() - start[n]) ** 2 + XI) for n in backbone}
    return omega, gained


def test_path_integral_and_importance_over_two_sgd_steps() -> None:
    algorithm = _model()
    reference = copy.deepcopy(algorithm)
    batches = _batches(1)
    _train_with_hooks(algorithm, 1, batches, end=False)
    omega, gained = _train_by_hand(reference, 1, batches, {})
    for n in omega:  # with plain SGD, -g * delta = LR * g^2 >= 0 on the first task
        torch.testing.assert_close(algorithm.path[n], omega[n])
        assert (omega[n] >= 0).all()
    algorithm.on_task_end(1)
    for n in gained:
        torch.testing.assert_close(algorithm.importance[n], gained[n])
    assert set(algorithm.importance) == {"fc.0.weight", "fc.0.bias"}  # the backbone only


def test_second_task_uses_the_task_loss_gradient_and_accumulates_importance() -> None:
    algorithm = _model()
    reference = copy.deepcopy(algorithm)
    first, second = _batches(2), _batches(3)
    _train_with_hooks(algorithm, 1, first)
    _, omega1 = _train_by_hand(reference, 1, first, {})
    _train_with_hooks(algorithm, 2, second)
    _, omega2 = _train_by_hand(reference, 2, second, omega1)
    for n, p in algorithm.backbone.named_parameters():
        torch.testing.assert_close(p, dict(reference.backbone.named_parameters())[n])
        torch.testing.assert_close(algorithm.importance[n], omega1[n] + omega2[n])


def test_surrogate_loss_is_c_times_importance_weighted_squared_distance() -> None:
    algorithm = _model()
    _train_with_hooks(algorithm, 1, _batches(4))
    _setup(algorithm, 2)
    algorithm.on_task_start(2)
    assert algorithm.surrogate_loss().item() == 0.0
    start = {n: p.detach().clone() for n, p in algorithm.backbone.named_parameters()}
    with torch.no_grad():
        for p in algorithm.backbone.parameters():
            p.add_(0.2)
    want = C * sum(
        (algorithm.importance[n] * (p - start[n]) ** 2).sum()
        for n, p in algorithm.backbone.named_parameters()
    )
    torch.testing.assert_close(algorithm.surrogate_loss(), want)  # type: ignore[arg-type]


def test_resume_gives_the_uninterrupted_numbers(tmp_path: Path) -> None:
    cfg = parse_experiment(tiny("si"))
    whole = run_experiment(cfg)
    run_experiment(cfg, checkpoint_dir=tmp_path, max_tasks=2)
    resumed = run_experiment(cfg, resume_from=tmp_path)
    assert resumed.test_acc_matrix == whole.test_acc_matrix


def test_validation_loss_is_the_cross_entropy_plus_the_surrogate() -> None:
    """The plateau schedule watches the training objective, as FACIL's eval does (its criterion)."""
    algorithm = _model()
    _train_with_hooks(algorithm, 1, _batches(4))
    _setup(algorithm, 2)
    algorithm.on_task_start(2)
    start = {n: p.detach().clone() for n, p in algorithm.backbone.named_parameters()}
    with torch.no_grad():
        for p in algorithm.backbone.parameters():
            p.add_(0.2)
    x, y, _ = _batches(5)[0]
    algorithm.eval()
    with torch.no_grad():
        ce = F.cross_entropy(algorithm.heads(algorithm.backbone(x, stage="test")[0], 2), y)
        surrogate = C * sum(
            (algorithm.importance[n] * (p - start[n]) ** 2).sum()
            for n, p in algorithm.backbone.named_parameters()
        )
        got = algorithm.validation_loss(x, y, 2)
    assert float(surrogate) > 0  # type: ignore[arg-type]
    torch.testing.assert_close(got, ce + surrogate)
