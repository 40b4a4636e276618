"""EWC against hand computations on a tiny model: the Fisher, the penalty, the online update."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from clsweep import registry
from clsweep.backbones.base import CLBackbone
from clsweep.experiment import run_experiment
from clsweep.spec import parse_experiment
from tests.core.test_experiment import tiny


def _model(**params: Any) -> Any:
    torch.manual_seed(0)
    backbone = registry.create("backbone", "mlp", (1, 1, 3), hidden_dims=[4])
    heads = registry.create("heads", "til", 4)
    algorithm = registry.create("algorithm", "ewc", backbone, heads, **params)
    algorithm.setup_task(1, 3)
    return algorithm


def _hand_fisher(algorithm: Any, x: torch.Tensor, y: torch.Tensor, task_id: int) -> dict[str, torch.Tensor]:
    """Mean over samples of (d log p(y_n | x_n) / d theta)^2, one sample at a time."""
    named = dict(algorithm.backbone.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in named.items()}
    for xn, yn in zip(x, y, strict=True):
        logits, _ = algorithm(xn.unsqueeze(0), stage="test", task_id=task_id)
        log_p = torch.log_softmax(logits, dim=1)[0, yn]
        grads = torch.autograd.grad(log_p, list(named.values()))
        for n, g in zip(named, grads, strict=True):
            total[n] += g**2
    return {n: t / x.shape[0] for n, t in total.items()}


def _data(seed: int, n: int = 3) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(
        train_x=torch.randn(n, 1, 1, 3, generator=g), train_y=torch.randint(0, 3, (n,), generator=g)
    )


def _finish_task(algorithm: Any, task_id: int, data: SimpleNamespace) -> None:
    algorithm.on_task_data(task_id, data)
    algorithm.on_task_start(task_id)
    algorithm.on_task_end(task_id)


def test_fisher_is_the_mean_squared_per_sample_gradient() -> None:
    algorithm = _model()
    data = _data(1)
    got = algorithm.fisher_diagonal(data.train_x, data.train_y, 1)
    want = _hand_fisher(algorithm, data.train_x, data.train_y, 1)
    assert got.keys() == want.keys() == {"fc.0.weight", "fc.0.bias"}  # the backbone only, no head
    for n in want:
        torch.testing.assert_close(got[n], want[n])
    assert any(f.abs().sum() > 0 for f in got.values())


class _Reuse(CLBackbone):
    """A layer run twice and a weight read outside its layer: the cases the closed form refuses."""

    def __init__(self) -> None:
        super().__init__((1, 1, 3), 4)
        self.fc, self.twice, self.tied = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(3, 4)

    def forward(self, input: Tensor, stage: str, task_id: int | None = None) -> tuple[Tensor, dict]:  # type: ignore[override]
        x = input.flatten(1)
        h = self.twice(self.twice(self.fc(x).relu()).tanh())
        return h + self.tied(x).tanh() + x @ self.tied.weight.t(), {}


@pytest.mark.parametrize("backbone", ["mlp", "batch_norm", "reuse"])
def test_fast_fisher_equals_the_per_sample_autograd_fisher(backbone: str) -> None:
    """Closed form for linear layers, vmap for the rest: equal to one backward pass per sample."""
    torch.manual_seed(0)
    if backbone == "reuse":
        net: Any = _Reuse()
    else:
        hidden = {"hidden_dims": [5, 4], "batch_norm": backbone == "batch_norm"}
        net = registry.create("backbone", "mlp", (1, 1, 3), **hidden)
    algorithm = registry.create("algorithm", "ewc", net, registry.create("heads", "til", 4))
    algorithm.setup_task(1, 3)
    if backbone == "batch_norm":  # running statistics that are not the identity
        for bn in net.bn:
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    algorithm.train_config = algorithm.train_config.model_copy(update={"eval_batch_size": 16})  # 3 chunks
    data = _data(7, n=40)
    got = algorithm.fisher_diagonal(data.train_x, data.train_y, 1)
    assert algorithm.training  # back in training mode
    algorithm.eval()  # the Fisher's mode: batch norm on its running statistics
    want = _hand_fisher(algorithm, data.train_x, data.train_y, 1)
    assert got.keys() == want.keys()
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-6, atol=1e-6)
    closed = set(algorithm._linear_squared_grads(data.train_x, data.train_y, 1))
    expected = {
        "mlp": set(want),
        "batch_norm": {n for n in want if n.startswith("fc.")},
        "reuse": {"fc.weight", "fc.bias", "tied.bias"},
    }[backbone]
    assert closed == expected


def test_predicted_labels_use_the_model_argmax() -> None:
    algorithm = _model(fisher_labels="predicted")
    data = _data(2)
    predicted = algorithm(data.train_x, stage="test", task_id=1)[0].argmax(1)
    got = algorithm.fisher_diagonal(data.train_x, data.train_y, 1)
    want = _hand_fisher(algorithm, data.train_x, predicted, 1)
    for n in want:
        torch.testing.assert_close(got[n], want[n])


def _moved_after_task_one() -> tuple[Any, SimpleNamespace, torch.Tensor]:
    """EWC (strength 7) after task 1, its backbone then moved off the anchor; with the penalty
    computed by hand from the hand-made Fisher."""
    algorithm = _model(strength=7.0)
    data = _data(3)
    fisher = _hand_fisher(algorithm, data.train_x, data.train_y, 1)
    anchor = {n: p.detach().clone() for n, p in algorithm.backbone.named_parameters()}
    _finish_task(algorithm, 1, data)
    assert algorithm.penalty().item() == 0.0  # still at the anchor
    with torch.no_grad():
        for p in algorithm.backbone.parameters():
            p.add_(torch.linspace(-0.3, 0.5, p.numel()).view_as(p))
    want = (
        7.0
        / 2
        * sum((fisher[n] * (p - anchor[n]) ** 2).sum() for n, p in algorithm.backbone.named_parameters())
    )
    return algorithm, data, want  # type: ignore[return-value]


def test_penalty_is_half_strength_times_fisher_weighted_squared_distance() -> None:
    algorithm, data, want = _moved_after_task_one()
    torch.testing.assert_close(algorithm.penalty(), want)
    algorithm.setup_task(2, 3)
    batch = (data.train_x, torch.tensor([0, 1, 2]), torch.full((3,), 2))
    out = algorithm.training_step(batch, 0)
    params = list(algorithm.backbone.parameters())
    expected = torch.autograd.grad(out["loss_cls"] + want, params, retain_graph=True)  # the whole objective
    out["loss"].backward()
    algorithm.on_before_optimizer_step(None)  # adds the penalty's gradient
    for p, g in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, g)


@pytest.mark.parametrize("online", [False, True])
def test_step_gradient_follows_the_fishers_of_every_finished_task(online: bool) -> None:
    """The per-step gradient update (its terms built once per aggregation) equals autograd's
    gradient of loss_cls + penalty() after the first task and again after the second."""
    algorithm = _model(online=online, gamma=0.6, strength=3.0)
    params = list(algorithm.backbone.parameters())
    for task in (1, 2):
        _finish_task(algorithm, task, _data(10 + task))
        algorithm.setup_task(task + 1, 3)
        with torch.no_grad():  # move away from the anchors
            for p in params:
                p.add_(0.1 * task)
        for _ in range(2):  # the second step reuses the terms built by the first
            batch = (_data(20 + task).train_x, torch.tensor([0, 1, 2]), torch.full((3,), task + 1))
            out = algorithm.training_step(batch, 0)
            expected = torch.autograd.grad(out["loss_cls"] + algorithm.penalty(), params, retain_graph=True)
            algorithm.zero_grad(set_to_none=True)
            out["loss"].backward()
            algorithm.on_before_optimizer_step(None)
            for p, g in zip(params, expected, strict=True):
                torch.testing.assert_close(p.grad, g)


@pytest.mark.parametrize("online", [False, True])
def test_two_tasks_offline_keeps_both_online_decays_and_sums(online: bool) -> None:
    algorithm = _model(online=online, gamma=0.6, strength=2.0)
    first, second = _data(4), _data(5)
    f1 = _hand_fisher(algorithm, first.train_x, first.train_y, 1)
    a1 = {n: p.detach().clone() for n, p in algorithm.backbone.named_parameters()}
    _finish_task(algorithm, 1, first)
    algorithm.setup_task(2, 3)
    with torch.no_grad():  # "training" task 2 moves the weights
        for p in algorithm.backbone.parameters():
            p.mul_(1.5)
    f2 = _hand_fisher(algorithm, second.train_x, second.train_y, 2)
    a2 = {n: p.detach().clone() for n, p in algorithm.backbone.named_parameters()}
    _finish_task(algorithm, 2, second)
    with torch.no_grad():
        for p in algorithm.backbone.parameters():
            p.add_(0.1)
    theta = dict(algorithm.backbone.named_parameters())
    if online:
        assert len(algorithm.fishers) == len(algorithm.anchors) == 1
        for n in f1:
            torch.testing.assert_close(algorithm.fishers[0][n], 0.6 * f1[n] + f2[n])
            torch.testing.assert_close(algorithm.anchors[0][n], a2[n])
        want = sum(((0.6 * f1[n] + f2[n]) * (theta[n] - a2[n]) ** 2).sum() for n in f1)
    else:
        assert len(algorithm.fishers) == 2
        want = sum((f1[n] * (theta[n] - a1[n]) ** 2 + f2[n] * (theta[n] - a2[n]) ** 2).sum() for n in f1)
    torch.testing.assert_close(algorithm.penalty(), 2.0 / 2 * want)  # type: ignore[operator]


def test_fisher_samples_draws_a_subset() -> None:
    algorithm = _model(fisher_samples=2)
    data = _data(6, n=5)
    torch.manual_seed(11)
    keep = torch.randperm(5)[:2]
    want = _hand_fisher(algorithm, data.train_x[keep], data.train_y[keep], 1)
    torch.manual_seed(11)
    _finish_task(algorithm, 1, data)
    for n in want:
        torch.testing.assert_close(algorithm.fishers[0][n], want[n])


@pytest.mark.parametrize("online", [False, True])
def test_resume_gives_the_uninterrupted_numbers(online: bool, tmp_path: Path) -> None:
    cfg = parse_experiment(tiny("ewc", algorithm__online=online, algorithm__strength=100.0))
    whole = run_experiment(cfg)
    run_experiment(cfg, checkpoint_dir=tmp_path, max_tasks=2)
    resumed = run_experiment(cfg, resume_from=tmp_path)
    assert resumed.test_acc_matrix == whole.test_acc_matrix


def test_validation_loss_is_the_cross_entropy_plus_the_penalty() -> None:
    """The plateau schedule watches the training objective, as joansj/hat's and FACIL's eval do."""
    algorithm, data, penalty = _moved_after_task_one()
    algorithm.setup_task(2, 3)
    algorithm.eval()
    x, y = data.train_x, torch.tensor([0, 1, 2])
    with torch.no_grad():
        ce = nn.functional.cross_entropy(algorithm.heads(algorithm.backbone(x, stage="test")[0], 2), y)
        got = algorithm.validation_loss(x, y, 2)
    assert float(penalty) > 0.01
    torch.testing.assert_close(got, ce + penalty)
