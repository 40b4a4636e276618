"""A single linear layer over the classes of every task, with other tasks' logits masked per sample.

This is the multi-head output of SequeL's backbones written as one layer: the layer's rows are the
classes of task 1, then of task 2, and so on; for a sample of task t only the rows of task t keep
their logits, every other logit is replaced by :data:`~clsweep.heads._base.MASKING_VALUE`. With
that value the softmax gives the masked classes exactly zero weight, so the loss and the argmax
behave as if each task had its own head, and the gradient reaching other tasks' rows is zero.

Label convention: the same as every other head, the task's local labels ``0 .. k-1``.
    ``forward(feature, task_id)`` with one task id returns that task's ``(N, k)`` logits (the
    masked row without its masked columns); with a tensor of per-sample task ids it returns
    ``(N, K)``, ``K`` the largest class count of the tasks present, each row holding its task's
    logits in columns ``0 .. k-1`` and the masking value after them (as :class:`HeadsMTL`). So the
    task loop scores it against the stream's TIL labels unchanged.

    The full masked logits of the reference, over all classes with column ``offset(t) + j`` for
    class ``j`` of task ``t``, are :meth:`MaskedMultiHead.masked_logits`; score those against
    :meth:`MaskedMultiHead.global_labels`. Both conventions give the same loss and predictions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clsweep.heads._base import MASKING_VALUE, TaskHeads, fill_value, row_blocks
from clsweep.registry import NoParams

__all__ = ["MaskedMultiHead"]


class MaskedMultiHead(TaskHeads):
    """One ``nn.Linear`` whose output grows by the new task's classes at each ``setup_task_id``.

    Growing keeps the rows of earlier tasks exactly (they are copied into the larger layer; the new
    rows get ``nn.Linear``'s usual initialisation) but replaces the ``nn.Parameter`` objects, so the
    optimiser must be built after the task is set up. Tasks must be set up in increasing order.
    """

    masking_value: float = MASKING_VALUE
    _starts: Tensor
    _ends: Tensor

    def __init__(self, input_dim: int, *, params: NoParams) -> None:
        super().__init__(input_dim, params=params)
        self.layer: nn.Linear | None = None
        # Lookup tables indexed by task id (entry 0 unused): first and one-past-last row of the task.
        self.register_buffer("_starts", torch.zeros(1, dtype=torch.long), persistent=False)
        self.register_buffer("_ends", torch.zeros(1, dtype=torch.long), persistent=False)

    # ---- setting up ---------------------------------------------------------------------------

    def setup_task_id(self, task_id: int, num_classes: int) -> None:
        if int(task_id) not in self._classes:
            self._check_increasing(int(task_id))
        super().setup_task_id(task_id, num_classes)

    def _create(self, task_id: int, num_classes: int) -> None:
        old = self.layer
        seen = self.num_classes_seen
        device = old.weight.device if old is not None else self._starts.device
        dtype = old.weight.dtype if old is not None else None
        new = nn.Linear(self.input_dim, seen + num_classes, device=device, dtype=dtype)
        if old is not None:
            with torch.no_grad():
                new.weight[:seen].copy_(old.weight)
                new.bias[:seen].copy_(old.bias)
        self.layer = new
        starts = torch.zeros(task_id + 1, dtype=torch.long)
        ends = torch.zeros(task_id + 1, dtype=torch.long)
        starts[: self._starts.numel()] = self._starts.cpu()
        ends[: self._ends.numel()] = self._ends.cpu()
        starts[task_id], ends[task_id] = seen, seen + num_classes
        self._starts = starts.to(device)
        self._ends = ends.to(device)

    def heads_for(self, task_id: int) -> list[nn.Module]:
        """The shared layer; rows ``offset(task_id) .. offset(task_id) + k - 1`` belong to the task."""
        self._check_known(int(task_id))
        return [self.layer]  # type: ignore[list-item]

    # ---- forward ------------------------------------------------------------------------------

    def forward(self, feature: Tensor, task_ids: int | Tensor) -> Tensor:
        """Logits in each sample's local label space (see the module docstring for the shapes)."""
        layer = self._layer()
        if not isinstance(task_ids, Tensor):
            start = self.offset(int(task_ids))
            stop = start + self._classes[int(task_ids)]
            return F.linear(feature, layer.weight[start:stop], layer.bias[start:stop])
        ids, present = self._checked_ids(task_ids, feature.shape[0])
        logits = layer(feature)
        starts, counts = self._starts[ids], self._ends[ids] - self._starts[ids]
        width = max((self._classes[t] for t in present), default=0)  # the widest task present
        return row_blocks(logits, starts, counts, width, self.masking_value)

    def forward_rows(self, feature: Tensor, task_ids: Tensor) -> Tensor:
        """The per-sample ``forward``: one product with the shared layer, then a gather."""
        return self(feature, task_ids)

    def masked_logits(self, feature: Tensor, task_ids: int | Tensor) -> Tensor:
        """Logits over every class set up so far, ``(N, num_classes_seen)``, the classes of other
        tasks than the sample's set to the masking value; indexed globally (:meth:`global_labels`).

        ``task_ids`` is one task id for the whole batch or a tensor of per-sample ids, shape ``(N,)``.
        """
        logits = self._layer()(feature)
        columns = torch.arange(logits.shape[-1], device=logits.device)
        if isinstance(task_ids, Tensor):
            ids, _ = self._checked_ids(task_ids, feature.shape[0])
            own = (columns >= self._starts[ids][:, None]) & (columns < self._ends[ids][:, None])
        else:
            start = self.offset(int(task_ids))
            own = (columns >= start) & (columns < start + self._classes[int(task_ids)])
        return logits.masked_fill(~own, fill_value(logits.dtype, self.masking_value))

    def global_labels(self, local_labels: Tensor, task_ids: int | Tensor) -> Tensor:
        """Local labels ``0 .. k-1`` of each sample's task -> column indices of :meth:`masked_logits`."""
        if isinstance(task_ids, Tensor):
            ids, _ = self._checked_ids(task_ids, local_labels.shape[0])
            return local_labels + self._starts[ids]
        return local_labels + self.offset(int(task_ids))

    # ---- helpers ------------------------------------------------------------------------------

    def _layer(self) -> nn.Linear:
        if self.layer is None:
            raise RuntimeError("MaskedMultiHead: no task set up yet; call setup_task_id first")
        return self.layer

    def _checked_ids(self, task_ids: Tensor, batch: int) -> tuple[Tensor, list[int]]:
        """``task_ids`` as longs and the ids present, ascending (one device sync per batch); an
        unknown id is a clear error, where it would silently mask every class of its rows."""
        if task_ids.ndim != 1 or task_ids.shape[0] != batch:
            raise ValueError(f"task_ids must have shape ({batch},), got {tuple(task_ids.shape)}")
        ids = task_ids.long()
        return ids, self._present_ids(ids)
