"""Output heads: the linear classifiers that turn a backbone's feature into logits, one per CL paradigm.

- :class:`HeadsTIL` (task-incremental): an independent head per task; the task id picks it.
- :class:`HeadsCIL` (class-incremental): a head per task, the logits of every task set up so far
  concatenated, so a prediction ranges over all classes seen.
- :class:`HeadDIL` (domain-incremental): a single head shared by every task.
- :class:`HeadsMTL` (multi-task / joint training): a head per task; a batch may mix tasks.
- :class:`HeadSTL` (single task): the DIL head limited to one task.
- :class:`MaskedMultiHead` (from :mod:`clsweep.heads.masked`): one linear layer over the classes of
  every task, other tasks' logits masked per sample.

All are built as ``Heads(input_dim, params=NoParams())`` (heads take no hyperparameters; build them
with ``registry.create("heads", name, input_dim)``) and are called as ``heads(feature, task_id)``.
Heads are created when a task arrives (``setup_task_id``) and kept in an ``nn.ModuleDict`` keyed by
the task id as a string (``"1"``, ``"2"``, ...), so that Lightning and ``state_dict`` see their
parameters. To load a checkpoint, set the same tasks up first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from clsweep.heads._base import MASKING_VALUE, TaskHeads, row_blocks
from clsweep.heads.masked import MaskedMultiHead
from clsweep.registry import NoParams

__all__ = [
    "MASKING_VALUE",
    "HeadDIL",
    "HeadSTL",
    "HeadsCIL",
    "HeadsMTL",
    "HeadsTIL",
    "MaskedMultiHead",
    "TaskHeads",
]


def _positions(ids: list[int], task_ids: Tensor) -> Tensor:
    """Each row's position among ``ids`` (ascending, every id of ``task_ids`` among them)."""
    lookup = [0] * (ids[-1] + 1)
    for i, t in enumerate(ids):
        lookup[t] = i
    return torch.tensor(lookup, device=task_ids.device)[task_ids]


def own_blocks(logits: Tensor, ids: list[int], widths: list[int], task_ids: Tensor) -> Tensor:
    """Each row's own task's columns out of ``logits`` computed by the heads of ``ids`` at once.

    ``logits``: ``(N, sum of widths)``, the columns of task ``ids[i]`` (ascending, with
    ``widths[i]`` classes) in that order; ``task_ids``: each row's task, one of ``ids``. Row ``n``
    of the result holds its task's logits, padded on the right to the widest task with
    :data:`MASKING_VALUE` (as :meth:`TaskHeads.forward_rows` returns them)."""
    n, count, lo = logits.shape[0], len(ids), ids[0]
    width = max(widths)
    consecutive = ids[-1] - lo + 1 == count  # then a row's position among the ids is id - lo
    if min(widths) == width:  # equal widths: row n's block is row n * P + position of a view
        if consecutive:
            rows = task_ids + torch.arange(-lo, n * count - lo, count, device=logits.device)
        else:
            rows = _positions(ids, task_ids) + torch.arange(0, n * count, count, device=logits.device)
        return logits.reshape(n * count, width).index_select(0, rows)
    position = task_ids - lo if consecutive else _positions(ids, task_ids)
    counts = torch.tensor(widths, device=logits.device)
    starts = torch.cumsum(counts, 0) - counts
    return row_blocks(logits, starts[position], counts[position], width, MASKING_VALUE)


class _PerTaskHeads(TaskHeads):
    """An ``nn.Linear`` per task in ``self.heads`` (keys ``"1"``, ``"2"``, ...)."""

    def __init__(self, input_dim: int, *, params: NoParams) -> None:
        super().__init__(input_dim, params=params)
        self.heads: nn.ModuleDict = nn.ModuleDict()

    def _create(self, task_id: int, num_classes: int) -> None:
        self.heads[str(task_id)] = nn.Linear(self.input_dim, num_classes)

    def get_head(self, task_id: int) -> nn.Linear:
        """The head of task ``task_id``."""
        self._check_known(int(task_id))
        return self.heads[str(int(task_id))]  # type: ignore[return-value]

    def heads_for(self, task_id: int) -> list[nn.Module]:
        return [self.get_head(task_id)]

    def forward_rows(self, feature: Tensor, task_ids: Tensor) -> Tensor:
        """Each row through its own task's head (see :meth:`TaskHeads.forward_rows` for the shape
        and padding), rows in any order, with one device sync for the tasks present.

        The heads of the tasks present are stacked into one weight matrix, so a batch costs one
        matrix product over all rows and tasks present (``N x sum k``) and a gather of each row's
        own block, instead of one small product per task (what dominates a replay step on a small
        backbone). The heads of tasks absent from the batch take no part and get no gradient."""
        self._check_rows(feature, task_ids)
        if not len(task_ids):
            return feature.new_empty((0, 0))
        ids, modules = self._present_ids(task_ids), self.heads
        heads = [modules[str(t)] for t in ids]
        if len(heads) == 1:
            return nn.functional.linear(feature, heads[0].weight, heads[0].bias)
        weight = torch.cat([h.weight for h in heads])
        bias = torch.cat([h.bias for h in heads])
        logits = torch.addmm(bias, feature, weight.t())  # (N, sum of the present tasks' k)
        return own_blocks(logits, ids, [h.out_features for h in heads], task_ids)


class HeadsTIL(_PerTaskHeads):
    """Task-incremental heads: each task has its own head, chosen by the task id the data carry.

    ``forward(feature, task_id)`` returns that task's logits, shape ``(N, num_classes(task_id))``,
    scored against the task's local labels ``0 .. k-1``.
    """

    def forward(self, feature: Tensor, task_id: int) -> Tensor:
        return self.get_head(int(task_id))(feature)


class HeadsCIL(_PerTaskHeads):
    """Class-incremental heads: one head per task, the logits of all heads set up so far concatenated
    in task order, so the class index is global: ``offset(task) + local index``.

    ``forward(feature, task_id=None)`` ignores ``task_id`` (the task is unknown at test time in CIL)
    and returns ``(N, num_classes_seen)``. Tasks must be set up in increasing order.
    """

    def setup_task_id(self, task_id: int, num_classes: int) -> None:
        if int(task_id) not in self._classes:
            self._check_increasing(int(task_id))
        super().setup_task_id(task_id, num_classes)

    def forward(self, feature: Tensor, task_id: int | None = None) -> Tensor:
        if not self._classes:
            raise RuntimeError("HeadsCIL: no task set up yet; call setup_task_id first")
        return torch.cat([self.heads[str(t)](feature) for t in self._classes], dim=-1)

    def forward_rows(self, feature: Tensor, task_ids: Tensor) -> Tensor:
        """The task id is ignored: one call over every row."""
        return self(feature)


class HeadDIL(TaskHeads):
    """Domain-incremental head: a single head shared by every task, created when the first task
    arrives. Every later task must have the same number of classes. ``forward`` ignores the task id.
    """

    single_task: bool = False
    """Serve one task only (:class:`HeadSTL`)."""

    def __init__(self, input_dim: int, *, params: NoParams) -> None:
        super().__init__(input_dim, params=params)
        self.head: nn.Linear | None = None

    def setup_task(self, num_classes: int) -> None:
        """Create the head (as task 1)."""
        self.setup_task_id(1, num_classes)

    def setup_task_id(self, task_id: int, num_classes: int) -> None:
        name = type(self).__name__
        if self.single_task and self._classes and int(task_id) not in self._classes:
            raise ValueError(
                f"{name} serves a single task (task {self.task_ids[0]}); got task {task_id}. "
                "Use the til, cil or dil heads for several tasks"
            )
        if self.head is not None and int(num_classes) != self.head.out_features:
            raise ValueError(
                f"{name} shares one head of {self.head.out_features} classes across tasks; "
                f"task {task_id} asks for {num_classes}"
            )
        super().setup_task_id(task_id, num_classes)

    def _create(self, task_id: int, num_classes: int) -> None:
        if self.head is None:
            self.head = nn.Linear(self.input_dim, num_classes)

    @property
    def num_classes_seen(self) -> int:
        return 0 if self.head is None else self.head.out_features

    def offset(self, task_id: int) -> int:
        self._check_known(task_id)
        return 0

    def heads_for(self, task_id: int) -> list[nn.Module]:
        self._check_known(int(task_id))
        return [self.head]  # type: ignore[list-item]

    def forward(self, feature: Tensor, task_id: int | None = None) -> Tensor:
        if self.head is None:
            raise RuntimeError(f"{type(self).__name__}: no task set up yet; call setup_task_id first")
        return self.head(feature)

    def forward_rows(self, feature: Tensor, task_ids: Tensor) -> Tensor:
        """The task id is ignored: one call over every row."""
        return self(feature)


class HeadSTL(HeadDIL):
    """Single-task head: the DIL head restricted to one task, for a run with ``num_tasks: 1``.

    ``setup_task(num_classes)`` (or ``setup_task_id(task_id, num_classes)`` with one task id) creates
    it; a second, different task is an error. ``forward`` ignores the task id.
    """

    single_task = True


class HeadsMTL(_PerTaskHeads):
    """Multi-task heads: an independent head per task, for joint training on batches that mix tasks.

    ``forward(feature, task_ids)``:

    - ``task_ids`` an ``int``: that task's logits, ``(N, num_classes(task_id))``, as in TIL;
    - ``task_ids`` a tensor of per-sample task ids, shape ``(N,)``: each sample goes through its own
      task's head (:meth:`forward_rows`: one matrix product with the present tasks' heads
      stacked, never one per sample). The result has shape ``(N, K)`` with ``K`` the largest class
      count of the tasks present; a sample's columns ``0 .. k-1`` hold its task's logits and the
      columns beyond its task's ``k`` hold :data:`MASKING_VALUE`, so cross-entropy and argmax
      against the sample's local label behave exactly as on the unpadded logits.
    """

    def setup_tasks(self, task_ids: Sequence[int], num_classes: Mapping[int, int] | Sequence[int]) -> None:
        """Set up several tasks at once; ``num_classes`` maps each id to its class count (or lists the
        counts in the order of ``task_ids``)."""
        for i, task_id in enumerate(task_ids):
            k = num_classes[task_id] if isinstance(num_classes, Mapping) else num_classes[i]
            self.setup_task_id(task_id, k)

    def forward(self, feature: Tensor, task_ids: int | Tensor) -> Tensor:
        if not isinstance(task_ids, Tensor):
            return self.get_head(int(task_ids))(feature)
        return self.forward_rows(feature, task_ids)
