"""Fix: Finetuning that freezes the backbone after the first task.

The other naive end of the stability-plasticity range: task 1 shapes the features, later tasks
only train their own new heads. In task-incremental learning (one head per task) task 1's
accuracy never changes. Batch-norm statistics are frozen too (the backbone runs in eval mode from
task 2 on), otherwise running statistics would still drift.
"""

from __future__ import annotations

from clsweep.algorithms.base import CLAlgorithm

__all__ = ["Fix"]


class Fix(CLAlgorithm):
    """Train task 1 normally; from task 2 on the backbone's parameters take no gradient."""

    def on_task_start(self, task_id: int) -> None:
        frozen = task_id > 1
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)

    def on_train_epoch_start(self) -> None:
        if self.task_id > 1:
            self.backbone.eval()  # no batch-norm statistics updates, no dropout in frozen layers
