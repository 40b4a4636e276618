"""Bookkeeping shared by every output head: which tasks are set up, their class counts, offsets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from clsweep.registry import NoParams

__all__ = ["MASKING_VALUE", "TaskHeads", "fill_value", "stack_padded"]

MASKING_VALUE: float = -1e10
"""Logit written where a class must never win: its softmax weight is exactly 0 in float32.
The same order as the masking value of SequeL's multi-head backbones (-10e10)."""


def fill_value(dtype: torch.dtype, value: float = MASKING_VALUE) -> float:
    """``value`` clipped to what ``dtype`` can hold (half precision tops out near -65504)."""
    return max(value, torch.finfo(dtype).min)


def stack_padded(parts: Sequence[Tensor]) -> Tensor:
    """Row blocks of logits stacked, each padded on the right to the widest with
    :data:`MASKING_VALUE`."""
    if len(parts) == 1:
        return parts[0]
    width = max(part.shape[1] for part in parts)
    return torch.cat(
        [
            part
            if part.shape[1] == width
            else nn.functional.pad(part, (0, width - part.shape[1]), value=fill_value(part.dtype))
            for part in parts
        ]
    )


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

    def forward_runs(self, feature: Tensor, task_ids: Sequence[int], sizes: Sequence[int]) -> Tensor:
        """Logits of a batch whose rows come in runs of one task: ``sizes[i]`` rows of task
        ``task_ids[i]``, in that order (a replay batch grouped by task). Row ``n`` holds
        ``self(feature[n], its task)``, padded to the widest run with :data:`MASKING_VALUE` (as
        :class:`~clsweep.heads.HeadsMTL` pads per-sample task ids), so cross-entropy and argmax
        against the local label behave as on the unpadded logits. One ``forward`` per run here;
        heads that can do with less override it (the same numbers)."""
        parts = [self(f, t) for t, f in zip(task_ids, feature.split(list(sizes)), strict=True)]
        return stack_padded(parts)

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
