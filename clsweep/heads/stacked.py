"""The per-task linear heads held in one weight matrix and one bias vector while a task trains, for
a step that scores rows of every task seen so far (experience replay's current + replay batch).

:class:`StackedHeads` copies the heads of every task set up in a :class:`~clsweep.heads.HeadsTIL`
(or :class:`~clsweep.heads.HeadsMTL`), in ascending task order, into one ``(sum of k, d)`` weight
parameter and one ``(sum of k,)`` bias parameter, and points each head's own ``weight`` and
``bias`` at its rows of those two (their ``.data`` become views, the layout of PyTorch FSDP's flat
parameter). The heads keep showing the current values: evaluation, ``state_dict``, a plateau
schedule's snapshot and its restore read and write them as before. A training step scores a mixed
batch with one matrix product over the stacked weight and takes each row's own block
(:meth:`StackedHeads.forward_rows`); its gradient lands in the stacked pair, and an optimiser built
over :meth:`StackedHeads.parameters` in place of the heads' own parameters updates every head in
place. :meth:`StackedHeads.release` gives each head its own storage again (a copy of its values).

Why: :meth:`TaskHeads.forward_rows` over the heads' own parameters concatenates them at every step;
autograd then splits the gradient back per head and the optimiser updates two tensors per task. On
a small model that bookkeeping is most of what experience replay costs over Finetuning
(``benchmarks/bench_er_step.py``); stacked, it is two tensors whatever the number of tasks.

The one difference from scoring with the heads' own parameters: every task's head takes part in
every step, its gradient zero when the batch holds none of its rows, so momentum and weight decay
reach it at that step too (as they reach every class of a single classifier over all tasks, e.g.
Mammoth's). A step whose batch holds rows of every task set up computes the same logits, gradients
and update, number for number (``tests/heads/test_stacked.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clsweep.heads._base import TaskHeads
from clsweep.heads.heads import _PerTaskHeads, own_blocks

__all__ = ["StackedHeads"]


class StackedHeads:
    """The heads of every task set up in ``heads``, held in one weight and one bias parameter."""

    def __init__(self, heads: TaskHeads) -> None:
        if not self.supports(heads):
            raise TypeError(
                f"{type(heads).__name__} cannot be stacked: StackedHeads takes per-task linear heads "
                "(til, mtl) with biases, every one trainable"
            )
        self.ids: list[int] = sorted(heads.task_ids)
        self._linears: list[nn.Linear] = [heads.get_head(t) for t in self.ids]  # type: ignore[attr-defined]
        self.widths = [h.out_features for h in self._linears]
        self.weight = nn.Parameter(torch.cat([h.weight.detach() for h in self._linears]))
        self.bias = nn.Parameter(torch.cat([h.bias.detach() for h in self._linears]))
        rows = zip(
            self.weight.detach().split(self.widths), self.bias.detach().split(self.widths), strict=True
        )
        for head, (weight, bias) in zip(self._linears, rows, strict=True):
            head.weight.data, head.bias.data = weight, bias

    @staticmethod
    def supports(heads: TaskHeads) -> bool:
        """Whether ``heads`` are per-task linear heads scored by their own task's block (til, mtl;
        not cil, whose rows range over every class, nor one-layer heads), each with a bias and
        all trainable, with at least one task set up."""
        if not isinstance(heads, _PerTaskHeads) or type(heads).forward_rows is not _PerTaskHeads.forward_rows:
            return False
        linears = list(heads.heads.values())
        return bool(linears) and all(
            isinstance(h, nn.Linear)
            and h.bias is not None
            and h.weight.requires_grad
            and h.bias.requires_grad
            for h in linears
        )

    @property
    def members(self) -> list[nn.Parameter]:
        """The heads' own parameters, now views into the stack; an optimiser takes
        :meth:`parameters` instead of these (both would update every head twice)."""
        return [p for head in self._linears for p in (head.weight, head.bias)]

    def parameters(self) -> list[nn.Parameter]:
        """The stacked weight and bias: what an optimiser updates in place of :attr:`members`."""
        return [self.weight, self.bias]

    def forward_rows(self, feature: Tensor, task_ids: Tensor) -> Tensor:
        """Each row through its own task's head, as :meth:`TaskHeads.forward_rows` returns it
        (padded on the right to the widest task with :data:`MASKING_VALUE`), from one matrix
        product over every head. Every id of ``task_ids`` must be one of :attr:`ids` (not checked:
        a replay batch's ids are those of the tasks set up)."""
        if len(self.ids) == 1:
            return F.linear(feature, self.weight, self.bias)
        logits = torch.addmm(self.bias, feature, self.weight.t())
        return own_blocks(logits, self.ids, self.widths, task_ids)

    def release(self) -> None:
        """Give every head its own storage again, holding its current values; the stack is then
        no longer behind the heads (and an optimiser over it no longer updates them)."""
        for head in self._linears:
            head.weight.data, head.bias.data = head.weight.data.clone(), head.bias.data.clone()
