"""Bookkeeping shared by every output head: which tasks are set up, their class counts, offsets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clsweep.registry import NoParams

__all__ = ["MASKING_VALUE", "TaskHeads", "fill_value", "row_blocks"]

MASKING_VALUE: float = -1e10
"""Logit written where a class must never win: its softmax weight is exactly 0 in float32.
The same order as the masking value of SequeL's multi-head backbones (-10e10)."""


def fill_value(dtype: torch.dtype, value: float = MASKING_VALUE) -> float:
    """``value`` clipped to what ``dtype`` can hold (half precision tops out near -65504)."""
    return max(value, torch.finfo(dtype).min)


def row_blocks(logits: Tensor, starts: Tensor, counts: Tensor, width: int, value: float) -> Tensor:
    """Row ``n`` of the result holds ``logits[n, starts[n] : starts[n] + counts[n]]``, padded on the
    right to ``width`` columns with ``value`` (clipped to the dtype): each row's own block of
    columns out of logits computed for several tasks at once, in one gather."""
    columns = torch.arange(width, device=logits.device)
    index = (starts[:, None] + columns).clamp(max=logits.shape[1] - 1)
    beyond = columns >= counts[:, None]
    return logits.gather(1, index).masked_fill(beyond, fill_value(logits.dtype, value))


class TaskHeads(nn.Module):
    """Base of the heads: records the tasks set up so far, in arrival order, and their class counts.

    Subclasses create their parameters in :meth:`_create` and implement ``forward``. Every head is
    called as ``heads(feature, task_id)`` with the same second argument, and its logits are scored
    against the labels the benchmark stream gives for that paradigm, unchanged, so a task loop
    treats all heads alike.

    Built as ``Heads(input_dim, params=NoParams())`` (through :func:`clsweep.registry.create`).
    Parameters created for a new task are new ``nn.Parameter`` objects: build the optimiser after
    :meth:`setup_task_id` (a fresh optimiser per task, as the task loop does).
    """

    def __init__(self, input_dim: int, *, params: NoParams) -> None:
        super().__init__()
        self.params = params
        """The validated hyperparameters (heads take none today)."""
        if input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {input_dim}")
        self.input_dim: int = input_dim
        """Width of the feature vector the heads read (the backbone's ``output_dim``)."""
        self._classes: dict[int, int] = {}

    # ---- what is set up -----------------------------------------------------------------------

    @property
    def task_ids(self) -> list[int]:
        """Ids of the tasks set up so far, in the order they arrived."""
        return list(self._classes)

    def num_classes(self, task_id: int) -> int:
        """Number of outputs the head of task ``task_id`` has."""
        self._check_known(task_id)
        return self._classes[task_id]

    @property
    def num_classes_seen(self) -> int:
        """Classes over all tasks set up so far (the width of the concatenated / masked logits)."""
        return sum(self._classes.values())

    def offset(self, task_id: int) -> int:
        """Classes of the tasks set up before ``task_id``: where its classes start in a global index."""
        self._check_known(task_id)
        total = 0
        for tid, k in self._classes.items():
            if tid == task_id:
                return total
            total += k
        raise AssertionError("unreachable")

    def heads_for(self, task_id: int) -> list[nn.Module]:
        """The modules whose parameters produce the logits of task ``task_id``."""
        raise NotImplementedError

    def forward_rows(self, feature: Tensor, task_ids: Tensor) -> Tensor:
        """Logits of a batch that mixes tasks: row ``n`` holds ``self(feature[n], task_ids[n])``,
        padded on the right to the widest task present with :data:`MASKING_VALUE`, so
        cross-entropy and argmax against each row's local label behave as on its unpadded logits
        (a replay batch, a joint batch).

        This default makes one ``forward`` call per run of rows of one task, on that run only (no
        head scores rows of another task): rows already grouped by task are used as they come,
        after one device sync for the runs; otherwise they are sorted by task id (a second sync),
        scored, and put back in their order. It serves any head written against this base; the
        shipped heads override it with one matrix product (``tests/heads`` checks every head's
        numbers and gradients against one call per row)."""
        self._check_rows(feature, task_ids)
        ids, sizes = self._runs(task_ids)
        if len(set(ids)) == len(ids):  # grouped by task: one run per task
            return self._score_runs(feature, ids, sizes)
        sorted_ids, order = torch.sort(task_ids, stable=True)
        ids, sizes = self._runs(sorted_ids)
        grouped = self._score_runs(feature.index_select(0, order), ids, sizes)
        return torch.empty_like(grouped).index_copy(0, order, grouped)

    def _runs(self, task_ids: Tensor) -> tuple[list[int], list[int]]:
        """The task id and length of each run of equal ids, in order (one device sync); a clear
        error for an id that has no head."""
        runs, counts = torch.unique_consecutive(task_ids, return_counts=True)
        ids, sizes = torch.stack([runs.long(), counts]).tolist() if len(task_ids) else ([], [])
        self._check_row_ids(ids)
        return ids, sizes

    @staticmethod
    def _check_rows(feature: Tensor, task_ids: Tensor) -> None:
        """``forward_rows``' arguments: one task id per row of ``feature``."""
        if task_ids.ndim != 1 or task_ids.shape[0] != feature.shape[0]:
            raise ValueError(f"task_ids must have shape ({feature.shape[0]},), got {tuple(task_ids.shape)}")

    def _check_row_ids(self, ids: list[int]) -> None:
        """One clear error naming the ids of a mixed batch that have no head."""
        unknown = sorted(set(ids) - set(self._classes))
        if unknown:
            raise KeyError(f"{type(self).__name__}: tasks {unknown} have no head; set up: {self.task_ids}")

    def _present_ids(self, task_ids: Tensor) -> list[int]:
        """The task ids that occur in ``task_ids``, ascending, with one device sync and no sort
        (a count per id set up); a clear error for an id that has no head."""
        if task_ids.dtype.is_floating_point or task_ids.dtype.is_complex or task_ids.dtype == torch.bool:
            raise TypeError(f"task_ids must hold integer task ids, got {task_ids.dtype}")
        top = max(self._classes, default=0)
        try:  # ids above top are counted in bin top + 1, a negative id raises
            counts = torch.bincount(task_ids.clamp(max=top + 1), minlength=top + 1).tolist()
        except RuntimeError:
            counts = [1]
        if counts[0] or len(counts) > top + 1:  # ids outside 1 .. top, where no head is set up
            self._check_row_ids(torch.unique(task_ids).tolist())  # raises, naming the ids
        ids = [t for t in range(1, top + 1) if counts[t]]
        self._check_row_ids(ids)
        return ids

    def _score_runs(self, feature: Tensor, ids: list[int], sizes: list[int]) -> Tensor:
        if not ids:
            return feature.new_empty((0, 0))
        if len(ids) == 1:
            return self._run_logits(feature, ids[0])
        parts = [self._run_logits(f, t) for t, f in zip(ids, feature.split(sizes), strict=True)]
        width = max(part.shape[1] for part in parts)
        padded = [
            F.pad(part, (0, width - part.shape[1]), value=fill_value(part.dtype))
            if part.shape[1] < width
            else part
            for part in parts
        ]
        return torch.cat(padded)

    def _run_logits(self, feature: Tensor, task_id: int) -> Tensor:
        """The logits of rows that all belong to task ``task_id``."""
        return self(feature, task_id)

    # ---- setting up ---------------------------------------------------------------------------

    def setup_task_id(self, task_id: int, num_classes: int) -> None:
        """Create the head of task ``task_id`` (1-based) with ``num_classes`` outputs when the task
        first arrives; calling it again for a task already set up keeps its head. Must run before
        ``forward`` sees that task."""
        task_id, num_classes = int(task_id), int(num_classes)
        if task_id < 1:
            raise ValueError(f"task ids are 1-based, got {task_id}")
        if num_classes < 1:
            raise ValueError(f"task {task_id}: num_classes must be >= 1, got {num_classes}")
        if task_id in self._classes:
            if self._classes[task_id] != num_classes:
                raise ValueError(
                    f"task {task_id} was set up with {self._classes[task_id]} classes, "
                    f"now asked for {num_classes}"
                )
            return
        self._create(task_id, num_classes)
        self._classes[task_id] = num_classes

    def _create(self, task_id: int, num_classes: int) -> None:
        raise NotImplementedError

    def _check_known(self, task_id: int) -> None:
        if task_id not in self._classes:
            raise KeyError(
                f"{type(self).__name__}: task {task_id} has no head yet; call "
                f"setup_task_id({task_id}, num_classes) first (set up: {self.task_ids})"
            )

    def _check_increasing(self, task_id: int) -> None:
        """For heads whose global class index depends on arrival order."""
        if self._classes and task_id < max(self._classes):
            raise ValueError(
                f"{type(self).__name__}: tasks must be set up in increasing order (got task "
                f"{task_id} after {max(self._classes)}); the class offsets would shift"
            )

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, classes={self._classes}"
