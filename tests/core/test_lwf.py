"""LwF against hand computations: the distillation term at temperature T on fixed logits, the loss
of a TIL and a CIL step, the frozen old model, and a checkpoint resume."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from clsweep import registry
from clsweep.algorithms.lwf import distillation
from clsweep.experiment import run_experiment
from clsweep.spec import parse_experiment
from tests.core.test_experiment import tiny


def _softmax(z: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def test_distillation_at_temperature_matches_the_hand_formula() -> None:
    new = [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]]
    old = [[3.0, 1.0, 0.0], [0.0, 0.0, 2.0]]
    T = 2.0
    want = 0.0
    for zn, zo in zip(new, old, strict=True):  # -sum_c softmax(old/T)_c log softmax(new/T)_c
        p_old, p_new = _softmax(zo, T), _softmax(zn, T)
        want += -sum(a * math.log(b) for a, b in zip(p_old, p_new, strict=True))
    want /= len(new)
    got = distillation(torch.tensor(new), torch.tensor(old), T)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # equal logits: the term is the entropy of softmax(old / T), its minimum over the new logits
    same = distillation(torch.tensor(old), torch.tensor(old), T).item()
    entropy = sum(-sum(p * math.log(p) for p in _softmax(z, T)) for z in old) / len(old)
    assert same == pytest.approx(entropy, rel=1e-6) and same < got.item()


def _model(heads: str, **params: Any) -> Any:
    torch.manual_seed(0)
    backbone = registry.create("backbone", "mlp", (1, 1, 3), hidden_dims=[4])
    algorithm = registry.create("algorithm", "lwf", backbone, registry.create("heads", heads, 4), **params)
    for t in (1, 2):
        algorithm.setup_task(t, 2)
    algorithm.on_task_start(2)
    return algorithm


def _move(algorithm: Any) -> None:
    with torch.no_grad():
        for p in algorithm.parameters():
            p.add_(torch.linspace(-0.4, 0.4, p.numel()).view_as(p))


def test_old_model_is_a_frozen_copy_outside_the_state_dict() -> None:
    algorithm = _model("til")
    keys = set(algorithm.state_dict())
    old_backbone, old_heads = algorithm._old_model
    before = {n: p.clone() for n, p in old_backbone.named_parameters()}
    _move(algorithm)
    assert set(algorithm.state_dict()) == keys
    assert all(not p.requires_grad for p in [*old_backbone.parameters(), *old_heads.parameters()])
    for n, p in old_backbone.named_parameters():
        torch.testing.assert_close(p, before[n])
    algorithm.train()
    assert not old_backbone.training


def test_til_step_is_ce_plus_strength_times_distillation_of_each_old_head() -> None:
    algorithm = _model("til", strength=0.7, temperature=3.0)
    old_backbone, old_heads = algorithm._old_model
    x, y = torch.randn(5, 1, 1, 3), torch.tensor([0, 1, 1, 0, 1])
    _move(algorithm)
    out = algorithm.training_step((x, y, torch.full((5,), 2)), 0)
    feature, _ = algorithm.backbone(x, stage="train")
    old_feature, _ = old_backbone(x, stage="test")
    distil = distillation(algorithm.heads(feature, 1), old_heads(old_feature, 1), 3.0)
    ce = F.cross_entropy(algorithm.heads(feature, 2), y)
    torch.testing.assert_close(out["loss"], ce + 0.7 * distil)
    torch.testing.assert_close(out["loss_distill"], distil.detach())


def test_validation_loss_is_the_training_criterion_on_the_validation_inputs() -> None:
    """CE + strength * distillation, as joansj/hat's and FACIL's eval compute it (the old model
    run on the validation inputs)."""
    algorithm = _model("til", strength=0.7, temperature=3.0)
    old_backbone, old_heads = algorithm._old_model
    x, y = torch.randn(5, 1, 1, 3), torch.tensor([0, 1, 1, 0, 1])
    _move(algorithm)
    algorithm.eval()
    with torch.no_grad():
        feature, old_feature = algorithm.backbone(x, stage="test")[0], old_backbone(x, stage="test")[0]
        distil = distillation(algorithm.heads(feature, 1), old_heads(old_feature, 1), 3.0)
        ce = F.cross_entropy(algorithm.heads(feature, 2), y)
        got = algorithm.validation_loss(x, y, 2)
    assert distil.item() > 0
    torch.testing.assert_close(got, ce + 0.7 * distil)


@pytest.mark.parametrize("classes", ["current", "seen"])
def test_cil_distils_the_old_classes_logits_only(classes: str) -> None:
    """The old classes' columns are distilled; the new task's cross-entropy ranges over its own
    classes (``current``, FACIL) or over every class seen (``seen``, Mammoth), in training and in
    the validation loss alike."""
    algorithm = _model("cil", strength=1.0, temperature=2.0, cil_cross_entropy=classes)
    old_backbone, old_heads = algorithm._old_model
    x, y = torch.randn(4, 1, 1, 3), torch.tensor([2, 3, 3, 2])  # global labels of task 2
    _move(algorithm)
    out = algorithm.training_step((x, y, torch.full((4,), 2)), 0)
    feature, _ = algorithm.backbone(x, stage="train")
    logits, old_logits = algorithm.heads(feature), old_heads(old_backbone(x, stage="test")[0])
    assert logits.shape == (4, 4)
    distil = distillation(logits[:, :2], old_logits[:, :2], 2.0)
    # by hand: -log softmax over the classes the cross-entropy ranges over, at each label
    columns = [2, 3] if classes == "current" else [0, 1, 2, 3]
    ce = -sum(
        row[label] - torch.logsumexp(row[columns], 0) for row, label in zip(logits, y.tolist(), strict=True)
    ) / len(y)
    torch.testing.assert_close(out["loss"], ce + distil)
    torch.testing.assert_close(out["loss_cls"], ce)
    algorithm.eval()
    with torch.no_grad():
        feature, old_feature = algorithm.backbone(x, stage="test")[0], old_backbone(x, stage="test")[0]
        logits = algorithm.heads(feature)
        ce = -sum(
            row[label] - torch.logsumexp(row[columns], 0)
            for row, label in zip(logits, y.tolist(), strict=True)
        ) / len(y)
        distil = distillation(logits[:, :2], old_heads(old_feature)[:, :2], 2.0)
        torch.testing.assert_close(algorithm.validation_loss(x, y, 2), ce + distil)


def test_first_task_has_no_distillation() -> None:
    torch.manual_seed(0)
    backbone = registry.create("backbone", "mlp", (1, 1, 3), hidden_dims=[4])
    algorithm = registry.create("algorithm", "lwf", backbone, registry.create("heads", "til", 4))
    algorithm.setup_task(1, 2)
    algorithm.on_task_start(1)
    out = algorithm.training_step((torch.randn(3, 1, 1, 3), torch.tensor([0, 1, 0]), torch.ones(3).long()), 0)
    assert out["loss_distill"].item() == 0.0 and torch.equal(out["loss"], out["loss_cls"])


@pytest.mark.parametrize("paradigm", ["til", "cil"])
def test_resume_rebuilds_the_old_model_from_the_restored_weights(paradigm: str, tmp_path: Path) -> None:
    cfg = parse_experiment(tiny("lwf", paradigm=paradigm, benchmark__name="split", benchmark__num_tasks=3))
    whole = run_experiment(cfg)
    run_experiment(cfg, checkpoint_dir=tmp_path, max_tasks=2)
    resumed = run_experiment(cfg, resume_from=tmp_path)
    assert resumed.test_acc_matrix == whole.test_acc_matrix
