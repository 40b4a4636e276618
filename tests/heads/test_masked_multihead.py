"""MaskedMultiHead: one layer over all tasks' classes, other tasks' logits masked per sample."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clsweep import registry
from clsweep.heads import MASKING_VALUE, MaskedMultiHead
from clsweep.heads._base import fill_value

DIM = 5


def _head(*sizes: int) -> MaskedMultiHead:
    torch.manual_seed(0)
    head = registry.create("heads", "masked_multihead", DIM)
    for task_id, k in enumerate(sizes, start=1):
        head.setup_task_id(task_id, k)
    return head


def _feature(n: int) -> torch.Tensor:
    return torch.randn(n, DIM, generator=torch.Generator().manual_seed(1))


def test_masked_logits_keep_the_own_task_and_mask_all_others() -> None:
    head = _head(2, 3, 4)
    feature, task_ids = _feature(8), torch.tensor([1, 2, 3, 3, 2, 1, 2, 3])
    logits = head.masked_logits(feature, task_ids)
    raw = head.layer(feature)
    assert logits.shape == (8, 9)
    for i, task_id in enumerate(task_ids.tolist()):
        start, stop = head.offset(task_id), head.offset(task_id) + head.num_classes(task_id)
        assert torch.equal(logits[i, start:stop], raw[i, start:stop])
        others = torch.cat([logits[i, :start], logits[i, stop:]])
        assert torch.all(others == MASKING_VALUE)
    assert torch.equal(head.masked_logits(feature, 2), head.masked_logits(feature, torch.full((8,), 2)))


def test_forward_gives_each_sample_its_own_task_logits_in_local_label_space() -> None:
    head = _head(2, 3, 4)
    feature, task_ids = _feature(8), torch.tensor([1, 2, 3, 3, 2, 1, 2, 3])
    raw = head.layer(feature)
    logits = head(feature, task_ids)
    assert logits.shape == (8, 4)
    for i, task_id in enumerate(task_ids.tolist()):
        start, k = head.offset(task_id), head.num_classes(task_id)
        assert torch.equal(logits[i, :k], raw[i, start : start + k])
        assert torch.all(logits[i, k:] == MASKING_VALUE)
        single = head(feature[i : i + 1], task_id)  # one task id: that task's (N, k) logits
        assert single.shape == (1, k)
        torch.testing.assert_close(single[0], raw[i, start : start + k])


def test_local_and_global_label_conventions_give_the_same_loss_and_predictions() -> None:
    head = _head(2, 3, 4)
    feature, task_ids = _feature(6), torch.tensor([1, 3, 2, 3, 1, 2])
    local = torch.tensor([1, 3, 2, 0, 0, 1])
    targets = head.global_labels(local, task_ids)
    assert targets.tolist() == [1, 8, 4, 5, 0, 3]
    assert torch.equal(head.global_labels(local[:1], 3), torch.tensor([6]))
    masked = head.masked_logits(feature, task_ids)
    global_loss = F.cross_entropy(masked, targets, reduction="sum")
    local_loss = F.cross_entropy(head(feature, task_ids), local, reduction="sum")
    per_task = sum(
        F.cross_entropy(head(feature[task_ids == t], t), local[task_ids == t], reduction="sum")
        for t in (1, 2, 3)
    )
    torch.testing.assert_close(global_loss, local_loss)
    torch.testing.assert_close(global_loss, per_task)
    offsets = torch.tensor([head.offset(t) for t in task_ids.tolist()])
    assert torch.equal(masked.argmax(1) - offsets, head(feature, task_ids).argmax(1))


def test_gradient_reaches_only_the_rows_of_the_batch_task() -> None:
    head = _head(2, 3)
    feature = _feature(4)
    F.cross_entropy(head(feature, 2), torch.tensor([0, 1, 2, 0])).backward()
    grad = head.layer.weight.grad
    assert torch.all(grad[:2] == 0) and grad[2:].abs().sum() > 0
    head.zero_grad(set_to_none=True)
    F.cross_entropy(head.masked_logits(feature, 2), torch.tensor([2, 3, 4, 2])).backward()
    assert torch.all(head.layer.weight.grad[:2] == 0)


def test_growing_keeps_the_rows_of_earlier_tasks_exactly() -> None:
    head = _head(2, 3)
    weight, bias = head.layer.weight.detach().clone(), head.layer.bias.detach().clone()
    feature = _feature(3)
    before = head(feature, 2)
    head.setup_task_id(3, 4)
    assert head.layer.out_features == 9 and head.num_classes_seen == 9
    assert torch.equal(head.layer.weight[:5], weight) and torch.equal(head.layer.bias[:5], bias)
    assert torch.equal(head(feature, 2), before)
    head.setup_task_id(2, 3)  # an existing task: nothing changes
    assert head.layer.out_features == 9
    assert head.heads_for(3) == [head.layer]


def test_unknown_or_out_of_order_tasks_are_clear_errors() -> None:
    head = _head(2, 3)
    with pytest.raises(KeyError, match="tasks \\[4\\] have no head"):
        head(_feature(2), torch.tensor([1, 4]))
    with pytest.raises(KeyError, match="tasks \\[0\\] have no head"):
        head(_feature(2), torch.tensor([0, 1]))
    out_of_order = registry.create("heads", "masked_multihead", DIM)
    out_of_order.setup_task_id(2, 2)
    with pytest.raises(ValueError, match="increasing order"):
        out_of_order.setup_task_id(1, 2)


def test_masking_value_fits_half_precision() -> None:
    assert fill_value(torch.float32) == MASKING_VALUE
    assert fill_value(torch.float16) == torch.finfo(torch.float16).min
    head = _head(2, 2).half()
    for logits in (
        head(_feature(3).half(), torch.tensor([1, 2, 1])),
        head.masked_logits(_feature(3).half(), torch.tensor([1, 2, 1])),
    ):
        assert logits.dtype == torch.float16 and torch.isfinite(logits).all()
