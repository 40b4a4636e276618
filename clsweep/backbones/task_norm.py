"""Per-task batch normalisation: :class:`TaskBatchNorm2d`.

Shared batch norm leaks forgetting into a HAT network even when every weight of an old task is
frozen: training a new task moves the running mean and variance (and the affine parameters) that
the old task's test pass uses. Here every task owns a separate ``BatchNorm2d``; a forward for task
``t`` reads and updates only task ``t``'s layer, so old tasks' statistics and affine parameters
are never touched.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["TaskBatchNorm2d"]


class TaskBatchNorm2d(nn.Module):
    """One ``BatchNorm2d`` per task, kept in ``bns`` (an ``nn.ModuleDict`` keyed ``"1"``, ``"2"``...).

    Layers are created by :meth:`add_task` (the backbone's ``setup_task_id`` calls it), and when a
    state dict holding more tasks than this module is loaded, the missing layers are created first,
    so ``load_state_dict(strict=True)`` into a freshly built backbone works. A new task's layer
    starts from the default initialisation (weight 1, bias 0, mean 0, variance 1), so optimisers
    must be built after ``setup_task_id`` (HAT builds a fresh one per task anyway).
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.bns = nn.ModuleDict()
        # Follows .to(device / dtype) so that layers created later land where the model lives.
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)

    @property
    def task_ids(self) -> list[int]:
        """The tasks that have a batch-norm layer here."""
        return [int(k) for k in self.bns]

    def add_task(self, task_id: int) -> None:
        """Create the layer of ``task_id`` (on this module's device and dtype) if it does not
        exist yet; an existing one is kept."""
        key = str(int(task_id))
        if key not in self.bns:
            anchor: Tensor = self._anchor  # type: ignore[assignment]
            self.bns[key] = nn.BatchNorm2d(self.num_features, device=anchor.device, dtype=anchor.dtype)

    def forward(self, x: Tensor, task_id: int | None) -> Tensor:  # type: ignore[override]
        key = None if task_id is None else str(int(task_id))
        if key is None or key not in self.bns:
            raise KeyError(
                f"no batch-norm layer for task {task_id}; tasks with one: {self.task_ids} "
                "(call the backbone's setup_task_id(task_id) before training a task)"
            )
        return self.bns[key](x)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        head = prefix + "bns."
        for key in state_dict:
            if key.startswith(head):
                task = key[len(head) :].split(".", 1)[0]
                if task.isdigit() and task not in self.bns:
                    self.add_task(int(task))
        super()._load_from_state_dict(state_dict, prefix, *args)
