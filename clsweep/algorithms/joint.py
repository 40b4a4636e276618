"""Joint: at task t, train on the union of the training splits of tasks 1..t (multi-task learning).

The upper reference of a CL comparison: it stores every past task's data, which a continual
learner may not, and shows what one backbone reaches when nothing is ever out of reach
(Caruana, "Multitask Learning", Machine Learning 1997; FACIL's incremental joint training,
mmasana/FACIL src/approach/joint.py, which scores every sample on all heads concatenated even in
TIL; here a TIL sample sees only its own task's head, as at test time).

Budget: the train config's number of epochs is kept for every task (as FACIL's joint keeps
``nepochs``), so at task t an epoch runs over t tasks' data: about t times the steps of task 1,
and a 5-task run costs about 15 single-task trainings instead of 5.

Labels: each batch mixes tasks. In TIL a sample is scored by its own task's head
(:meth:`TaskHeads.forward_rows`: the present tasks' heads stacked, one matrix product over
the shuffled batch, each row's own block kept); in CIL the heads ignore the task id and the labels are
already global, so the same call gives the plain cross-entropy over all seen classes.

Validation (plateau schedule): the mean loss over the validation splits of tasks 1..t, each
sample through its own task's head, the criterion it trains with.

Resume: a resumed run hands ``on_task_data`` again for every completed task (see
:mod:`clsweep.algorithms.base`), so the union is whole again. Should a task's data be missing
anyway, :meth:`training_set` raises rather than train on less than an uninterrupted run.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from clsweep.algorithms.base import CLAlgorithm
from clsweep.algorithms.replay_buffer import own_task_cross_entropy
from clsweep.backbones.base import CLBackbone

__all__ = ["Joint"]


class Joint(CLAlgorithm):
    """Train each task on the data of every task seen so far; evaluation is the shared loop's."""

    def __init__(self, backbone: CLBackbone, heads: nn.Module, *, params: BaseModel) -> None:
        super().__init__(backbone, heads, params=params)
        self._data: dict[int, Any] = {}
        """Each seen task's splits, on the device (references; not in the checkpoint)."""

    def on_task_data(self, task_id: int, data: Any) -> None:
        self._data[task_id] = data

    def training_set(self, task_id: int, data: Any) -> tuple[Tensor, Tensor, Tensor]:
        self._data[task_id] = data
        missing = [t for t in range(1, task_id) if t not in self._data]
        if missing:
            raise RuntimeError(
                f"joint: task {task_id} trains on tasks 1..{task_id}, but the data of tasks {missing} "
                "were never handed to on_task_data; the task loop must hand every seen task's data, "
                "a resumed run included"
            )
        xs, ys, ids = [], [], []
        for t in range(1, task_id + 1):
            x, y, i = super().training_set(t, self._data[t])
            xs.append(x)
            ys.append(y)
            ids.append(i)
        return torch.cat(xs), torch.cat(ys), torch.cat(ids)

    def validation_sets(self, task_id: int, data: Any) -> list[tuple[Tensor, Tensor, int]]:
        """The validation splits of tasks 1..t: the plateau schedule watches the loss on the data
        Joint trains on (FACIL src/approach/joint.py validates on the union as well)."""
        return [(self._data[t].val_x, self._data[t].val_y, t) for t in range(1, task_id + 1)]

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> dict[str, Any]:  # type: ignore[override]
        """Cross-entropy averaged over the batch, each sample through its own task's head."""
        x, y, task_ids = batch
        feature, hidden = self.backbone(x, stage="train", task_id=self.task_id)
        losses, correct = own_task_cross_entropy(self.heads, feature, y, task_ids)
        loss = losses.mean()
        return {"loss": loss, "loss_cls": loss, "acc": correct.float().mean(), "hidden_features": hidden}
