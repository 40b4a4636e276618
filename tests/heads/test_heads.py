"""Output heads: creation on task arrival, routing, label spaces, parameters seen by optimisers."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from clsweep import registry
from clsweep.heads import MASKING_VALUE, HeadsTIL, TaskHeads
from clsweep.registry import NoParams

DIM = 6
ALL_HEADS = registry.list_names("heads")


class _DefaultRowsTIL(HeadsTIL):
    """A head written against the base only: ``forward_rows`` is ``TaskHeads``' default (one
    ``forward`` per run of one task), as a user's own head gets it."""

    forward_rows = TaskHeads.forward_rows


def _feature(n: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ALL_HEADS)
def test_every_head_trains_and_round_trips_its_state(name: str) -> None:
    torch.manual_seed(0)
    heads = registry.create("heads", name, DIM)
    heads.setup_task_id(1, 3)
    feature, labels = _feature(), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    logits = heads(feature, 1)
    assert logits.shape == (7, 3)  # scored against the stream's labels as they are
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    params = [p for module in heads.heads_for(1) for p in module.parameters()]
    assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert {id(p) for p in params} <= {id(p) for p in heads.parameters()}  # visible to optimisers

    fresh = registry.create("heads", name, DIM)
    fresh.setup_task_id(1, 3)
    fresh.load_state_dict(heads.state_dict())
    assert torch.equal(fresh(feature, 1), logits.detach())


@pytest.mark.parametrize("name", ALL_HEADS)
def test_every_head_rejects_bad_setup(name: str) -> None:
    heads = registry.create("heads", name, DIM)
    with pytest.raises(ValueError, match="1-based"):
        heads.setup_task_id(0, 3)
    heads.setup_task_id(1, 3)
    with pytest.raises(ValueError, match="3 classes.*4"):
        heads.setup_task_id(1, 4)


def test_til_creates_one_head_per_task_with_string_keys_and_routes_by_task_id() -> None:
    heads = registry.create("heads", "til", DIM)
    heads.setup_task_id(1, 2)
    first = heads.get_head(1)
    heads.setup_task_id(2, 5)
    heads.setup_task_id(1, 2)  # again: keeps the existing head
    assert list(heads.heads.keys()) == ["1", "2"]
    assert heads.get_head(1) is first
    assert heads.task_ids == [1, 2] and heads.num_classes_seen == 7
    feature = _feature()
    assert torch.equal(heads(feature, 2), heads.heads["2"](feature))
    assert heads(feature, 1).shape == (7, 2) and heads(feature, 2).shape == (7, 5)
    with pytest.raises(KeyError, match="setup_task_id\\(3"):
        heads(feature, 3)


def test_cil_concatenates_all_heads_in_task_order_with_offsets() -> None:
    heads = registry.create("heads", "cil", DIM)
    for task_id, k in ((1, 2), (2, 3), (3, 4)):
        heads.setup_task_id(task_id, k)
    feature = _feature()
    logits = heads(feature)
    assert logits.shape == (7, 9)
    assert [heads.offset(t) for t in (1, 2, 3)] == [0, 2, 5]
    for task_id in (1, 2, 3):
        start, k = heads.offset(task_id), heads.num_classes(task_id)
        assert torch.equal(logits[:, start : start + k], heads.get_head(task_id)(feature))
    assert torch.equal(heads(feature, 2), logits)  # the task id is ignored
    decreasing = registry.create("heads", "cil", DIM)
    decreasing.setup_task_id(2, 2)
    with pytest.raises(ValueError, match="increasing order"):
        decreasing.setup_task_id(1, 2)


def test_cil_grows_as_tasks_arrive() -> None:
    heads = registry.create("heads", "cil", DIM)
    heads.setup_task_id(1, 2)
    feature = _feature()
    before = heads(feature)
    heads.setup_task_id(2, 3)
    after = heads(feature)
    assert before.shape == (7, 2) and after.shape == (7, 5)
    assert torch.equal(after[:, :2], before)


def test_dil_shares_one_head_and_rejects_a_different_class_count() -> None:
    heads = registry.create("heads", "dil", DIM)
    heads.setup_task_id(1, 4)
    heads.setup_task_id(2, 4)
    assert heads.heads_for(1)[0] is heads.heads_for(2)[0]
    assert len(list(heads.parameters())) == 2 and heads.num_classes_seen == 4
    feature = _feature()
    assert torch.equal(heads(feature, 1), heads(feature, 2))
    with pytest.raises(ValueError, match="shares one head of 4 classes"):
        heads.setup_task_id(3, 5)


def test_mtl_routes_a_mixed_batch_like_per_sample_heads() -> None:
    heads = registry.create("heads", "mtl", DIM)
    heads.setup_tasks([1, 2, 3], {1: 2, 2: 4, 3: 3})
    feature = _feature(9)
    task_ids = torch.tensor([3, 1, 2, 2, 1, 3, 1, 2, 3])
    logits = heads(feature, task_ids)
    assert logits.shape == (9, 4)
    for i, task_id in enumerate(task_ids.tolist()):
        expected = heads.get_head(task_id)(feature[i : i + 1])[0]
        k = expected.shape[0]
        torch.testing.assert_close(logits[i, :k], expected)
        assert torch.all(logits[i, k:] == MASKING_VALUE)
    assert torch.equal(heads(feature, 2), heads.get_head(2)(feature))  # int: one task, unpadded


def test_mtl_padding_does_not_change_loss_or_gradients() -> None:
    heads = registry.create("heads", "mtl", DIM)
    heads.setup_tasks([1, 2], [2, 4])
    feature, task_ids = _feature(6), torch.tensor([1, 2, 1, 2, 2, 1])
    labels = torch.tensor([1, 3, 0, 2, 0, 1])
    loss = F.cross_entropy(heads(feature, task_ids), labels, reduction="sum")
    per_task = sum(
        F.cross_entropy(heads(feature[task_ids == t], t), labels[task_ids == t], reduction="sum")
        for t in (1, 2)
    )
    torch.testing.assert_close(loss, per_task)
    heads.zero_grad()
    loss.backward()
    assert heads.get_head(1).weight.grad.abs().sum() > 0 and heads.get_head(2).weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["til", "mtl", "base-default"])
@pytest.mark.parametrize(
    "rows, unknown",
    [([1, 5], [5]), ([0, 1], [0]), ([-2, 3], [-2]), ([2, 3, 1], [2]), ([1, 10**12], [10**12])],
    ids=["above", "zero", "negative", "gap", "huge"],
)
def test_a_mixed_batch_with_a_task_that_has_no_head_is_a_clear_error(
    name: str, rows: list[int], unknown: list[int]
) -> None:
    """Tasks 1 and 3 set up: any other id in a mixed batch is named in one KeyError."""
    heads = (
        _DefaultRowsTIL(DIM, params=NoParams())
        if name == "base-default"
        else registry.create("heads", name, DIM)
    )
    heads.setup_task_id(1, 2)
    heads.setup_task_id(3, 2)
    with pytest.raises(KeyError, match=re.escape(f"tasks {unknown} have no head")):
        heads.forward_rows(_feature(len(rows)), torch.tensor(rows))


@pytest.mark.parametrize("name", ["til", "mtl"])
def test_task_ids_that_are_not_integers_are_a_clear_error(name: str) -> None:
    heads = registry.create("heads", name, DIM)
    heads.setup_task_id(1, 2)
    with pytest.raises(TypeError, match="integer task ids, got torch.float32"):
        heads.forward_rows(_feature(2), torch.tensor([1.0, 1.0]))


def test_stl_serves_exactly_one_task() -> None:
    heads = registry.create("heads", "stl", DIM)
    heads.setup_task(3)
    feature = _feature()
    assert torch.equal(heads(feature), heads(feature, 1))
    assert heads(feature).shape == (7, 3)
    with pytest.raises(ValueError, match="single task"):
        heads.setup_task_id(2, 3)


def test_forward_before_any_task_is_a_clear_error() -> None:
    for name in ("cil", "dil", "stl"):
        with pytest.raises(RuntimeError, match="no task set up"):
            registry.create("heads", name, DIM)(_feature())


@pytest.mark.parametrize("name", [*ALL_HEADS, "base-default"])
@pytest.mark.parametrize("classes", [[2, 4, 3], [3, 3, 3]], ids=["widths-differ", "widths-equal"])
@pytest.mark.parametrize(
    "rows",
    [[3, 1, 2, 2, 1, 3, 1], [1, 1, 1, 2, 2, 3, 3], [3, 1, 3, 1, 1, 3, 3]],
    ids=["interleaved", "grouped", "task-2-absent"],
)
def test_every_head_scores_a_mixed_batch_like_one_call_per_row(
    name: str, classes: list[int], rows: list[int]
) -> None:
    """forward_rows (a replay or joint batch, tasks in any order): row n is heads(row, its task),
    padded to the widest task present with MASKING_VALUE; the same loss gradients as scoring each
    row alone, and a head whose task is absent from the batch gets no gradient at all."""
    torch.manual_seed(0)
    if name == "base-default":
        heads = _DefaultRowsTIL(DIM, params=NoParams())
    else:
        heads = registry.create("heads", name, DIM)
    classes = {"stl": [3], "dil": [3, 3, 3, 3]}.get(name, [*classes, 2])
    for t, k in enumerate(classes, start=1):
        heads.setup_task_id(t, k)
    task_ids = torch.tensor(rows) if len(classes) > 1 else torch.ones(7, dtype=torch.long)
    feature = _feature().requires_grad_(True)
    alone = [heads(feature[n : n + 1], int(t)) for n, t in enumerate(task_ids.tolist())]
    width = max(r.shape[1] for r in alone)
    want = torch.cat([F.pad(r, (0, width - r.shape[1]), value=MASKING_VALUE) for r in alone])
    got = heads.forward_rows(feature, task_ids)
    torch.testing.assert_close(got, want)
    labels = torch.zeros(7, dtype=torch.long)
    params = list(heads.parameters())
    got_grads = torch.autograd.grad(F.cross_entropy(got, labels), [feature, *params], allow_unused=True)
    want_grads = torch.autograd.grad(F.cross_entropy(want, labels), [feature, *params], allow_unused=True)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w)
    if name in ("til", "mtl", "base-default"):  # task 4's head took no part: no gradient, not a zero one
        index = next(i for i, p in enumerate(params) if p is heads.get_head(4).weight)
        assert got_grads[1 + index] is None


@pytest.mark.parametrize("name", ["til", "mtl", "masked_multihead", "base-default"])
def test_a_mixed_batch_of_one_task_is_that_tasks_logits(name: str) -> None:
    """Rows of a single task through forward_rows: exactly heads(feature, task), no padding."""
    heads = (
        _DefaultRowsTIL(DIM, params=NoParams())
        if name == "base-default"
        else registry.create("heads", name, DIM)
    )
    for t, k in enumerate([2, 4], start=1):
        heads.setup_task_id(t, k)
    feature = _feature()
    assert torch.equal(heads.forward_rows(feature, torch.full((7,), 2)), heads(feature, 2))
    assert heads.forward_rows(feature[:0], torch.ones(0, dtype=torch.long)).shape[0] == 0
    with pytest.raises(ValueError, match="task_ids must have shape"):
        heads.forward_rows(feature, torch.ones(6, dtype=torch.long))
