"""Stacked heads: the same logits, gradients and updates as the heads' own parameters, heads that
keep showing the stacked values, a release that keeps them, and what cannot be stacked."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clsweep import registry
from clsweep.heads.stacked import StackedHeads

DIM = 6


def _heads(widths: list[int], name: str = "til", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    heads = registry.create("heads", name, DIM)
    for t, k in enumerate(widths, start=1):
        heads.setup_task_id(t, k)
    return heads


def _batch(task_ids: list[int], widths: list[int], seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor(task_ids)
    labels = torch.stack([torch.randint(0, widths[t - 1], (), generator=g) for t in task_ids])
    return torch.randn(len(task_ids), DIM, generator=g), labels, ids


def _sgd_steps(heads, params, score, batch, steps: int = 3) -> list[torch.Tensor]:
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01, foreach=True)
    feature, labels, ids = batch
    losses = []
    for _ in range(steps):
        for p in params:
            p.grad = None
        loss = F.cross_entropy(score(feature, ids), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return losses


@pytest.mark.parametrize("widths", [[3, 3, 3], [2, 4, 3]])
def test_a_batch_of_every_task_gives_the_numbers_of_the_heads_own_parameters(widths: list[int]) -> None:
    """Rows of every task set up, in mixed order: the stacked step's logits, losses and, after three
    SGD steps with momentum and weight decay, every head's weight and bias are bitwise those of the
    heads' own parameters under TaskHeads.forward_rows."""
    task_ids = [2, 1, 3, 3, 1, 2, 2, 3, 1]
    batch = _batch(task_ids, widths)
    own, stacked_heads = _heads(widths), _heads(widths)
    stack = StackedHeads(stacked_heads)
    torch.testing.assert_close(
        stack.forward_rows(batch[0], batch[2]), own.forward_rows(batch[0], batch[2]), rtol=0, atol=0
    )
    own_losses = _sgd_steps(own, list(own.parameters()), own.forward_rows, batch)
    stacked_losses = _sgd_steps(stacked_heads, stack.parameters(), stack.forward_rows, batch)
    assert [x.item() for x in own_losses] == [x.item() for x in stacked_losses]
    for (name, a), (_, b) in zip(own.state_dict().items(), stacked_heads.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # the heads show the stack's values, updated in place
        assert not torch.equal(a, _heads(widths).state_dict()[name])  # and they did train


def test_the_heads_are_views_of_the_stack_until_released() -> None:
    heads = _heads([3, 3])
    stack = StackedHeads(heads)
    feature = torch.randn(4, DIM)
    with torch.no_grad():
        stack.weight[3:].add_(1.0)  # task 2's rows
        stack.bias[:3].sub_(2.0)  # task 1's
    expected = F.linear(feature, stack.weight, stack.bias)
    torch.testing.assert_close(torch.cat([heads(feature, 1), heads(feature, 2)], 1), expected)
    saved = {k: v.clone() for k, v in heads.state_dict().items()}
    with torch.no_grad():
        stack.weight.zero_()
    heads.load_state_dict(saved)  # a plateau schedule's restore writes through to the stack
    torch.testing.assert_close(stack.weight, torch.cat([saved["heads.1.weight"], saved["heads.2.weight"]]))

    stack.release()
    with torch.no_grad():
        stack.weight.zero_()  # no longer behind the heads
    for name, value in heads.state_dict().items():
        assert torch.equal(value, saved[name]), name
    pointers = {p.data_ptr() for p in heads.parameters()}
    assert len(pointers) == 4 and stack.weight.data_ptr() not in pointers


def test_a_task_absent_from_the_batch_gets_a_zero_gradient() -> None:
    """The one documented difference: the heads' own parameters leave an absent task's head with no
    gradient; the stack gives its rows zeros (so plain SGD leaves them unchanged)."""
    heads = _heads([3, 3, 3])
    stack = StackedHeads(heads)
    feature, labels, ids = _batch([1, 3, 3, 1], [3, 3, 3])
    F.cross_entropy(stack.forward_rows(feature, ids), labels).backward()
    assert stack.weight.grad is not None and stack.bias.grad is not None
    assert torch.equal(stack.weight.grad[3:6], torch.zeros(3, DIM))
    assert torch.equal(stack.bias.grad[3:6], torch.zeros(3))
    assert stack.weight.grad[:3].abs().sum() > 0 and stack.weight.grad[6:].abs().sum() > 0


def test_one_task_is_its_linear_head() -> None:
    heads = _heads([4])
    stack = StackedHeads(heads)
    feature = torch.randn(5, DIM)
    torch.testing.assert_close(
        stack.forward_rows(feature, torch.ones(5, dtype=torch.long)), heads(feature, 1)
    )
    assert stack.members == [heads.get_head(1).weight, heads.get_head(1).bias]


@pytest.mark.parametrize("name", ["cil", "dil", "masked_multihead"])
def test_heads_that_are_not_scored_per_task_block_are_not_stacked(name: str) -> None:
    heads = _heads([3, 3], name=name) if name != "dil" else _heads([3], name=name)
    assert not StackedHeads.supports(heads)
    with pytest.raises(TypeError, match="cannot be stacked"):
        StackedHeads(heads)


def test_frozen_or_empty_heads_are_not_stacked() -> None:
    assert not StackedHeads.supports(registry.create("heads", "til", DIM))  # no task set up yet
    heads = _heads([3, 3])
    assert StackedHeads.supports(heads) and StackedHeads.supports(_heads([3, 3], name="mtl"))
    heads.get_head(1).weight.requires_grad_(False)
    assert not StackedHeads.supports(heads)
