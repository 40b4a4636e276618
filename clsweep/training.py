"""Training one task under its schedule: the inner loop of :mod:`clsweep.experiment`.

- ``fixed``: ``train.epochs`` epochs at ``train.lr``.
- ``plateau`` (the HAT paper's code, joansj/hat src/approaches/hat.py): after every epoch the
  current task's validation loss (the method's criterion, :meth:`CLAlgorithm.validation_loss`:
  cross-entropy plus any term its training loss adds); ``patience`` epochs without a new best divide the learning
  rate by ``factor`` and start a fresh optimiser (patience reset); the task stops when the
  learning rate falls below ``min_lr`` or after ``max_epochs``; then the weights of the best
  epoch (backbone, heads, HAT's embeddings: every parameter and buffer of the algorithm) are
  restored. HAT's annealing of s restarts every epoch as before. One validation pass per epoch,
  over the algorithm's ``validation_sets``: the current task's validation split (Joint's: those of
  tasks 1..t, as FACIL's src/approach/joint.py concatenates them); the test splits are never read.

Then the algorithm's optional second phase (PackNet's retraining after pruning):
``post_train_epochs(task_id)`` more epochs at ``train.lr`` with a fresh optimiser.

Batches are drawn by index from the tensors on the device: ``(x, y, task_ids)``, the task ids a
long tensor (all equal to the current task unless the algorithm's ``training_set`` mixes tasks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from clsweep.algorithms.base import CLAlgorithm
from clsweep.spec.experiment import PlateauSchedule, TrainConfig

__all__ = ["NonFiniteLossError", "TaskTraining", "train_task"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite (e.g. an absurd learning rate).

    ``task`` and ``epoch`` (1-based) say where; the task loop adds ``result``, the experiment's
    results up to the last completed task."""

    def __init__(self, message: str, *, task: int, epoch: int) -> None:
        super().__init__(message)
        self.task, self.epoch = task, epoch
        self.result: Any = None


@dataclass(frozen=True)
class TaskTraining:
    """How the task's training went."""

    epochs_run: int
    """Epochs trained, the post-training phase included."""
    loss_train: float
    """Mean training loss per batch over the last epoch."""
    best_epoch: int | None = None
    """Plateau schedule: the epoch whose weights were kept (1-based)."""
    final_lr: float = 0.0


def _validation_loss(
    algorithm: CLAlgorithm, sets: list[tuple[Tensor, Tensor, int]], batch_size: int
) -> float:
    """Mean of ``algorithm.validation_loss`` over every sample of ``sets`` (its validation_sets)."""
    algorithm.eval()
    total, count = sets[0][0].new_zeros(()), 0
    with torch.no_grad():
        for x, y, task_id in sets:
            for start in range(0, x.shape[0], batch_size):
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                total += algorithm.validation_loss(xb, yb, task_id) * xb.shape[0]
            count += x.shape[0]
    return float(total.item()) / max(1, count)


class _Epochs:
    """Runs epochs of one task: batches by index from the device tensors, in a seeded order."""

    def __init__(
        self,
        fabric: Any,
        module: Any,
        algorithm: CLAlgorithm,
        data: Any,
        task_id: int,
        train: TrainConfig,
        generator: torch.Generator,
    ) -> None:
        self.fabric, self.module, self.algorithm = fabric, module, algorithm
        self.task_id, self.batch_size, self.generator = task_id, train.batch_size, generator
        self.x, self.y, self.task_ids = algorithm.training_set(task_id, data)
        self.n = int(self.x.shape[0])
        algorithm.num_batches = self.num_batches = math.ceil(self.n / self.batch_size)
        self.done = 0

    def optimizer(self, lr: float) -> Any:
        return self.fabric.setup_optimizers(self.algorithm.make_optimizer(lr))

    def run(self, optimizer: Any) -> float:
        """One epoch; returns the mean training loss per batch."""
        algorithm, bs = self.algorithm, self.batch_size
        algorithm.train()
        algorithm.on_train_epoch_start()
        order = torch.randperm(self.n, generator=self.generator, device=self.x.device)
        epoch_loss = torch.zeros((), device=self.x.device)
        # optimizer.zero_grad(set_to_none=True) is exactly this; written out, it skips the
        # optimiser's profiling context and per-group loops, a measurable share of a small step
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for b in range(self.num_batches):
            idx = order[b * bs : (b + 1) * bs]
            batch = (self.x[idx], self.y[idx], self.task_ids[idx])
            out = self.module.training_step(batch, b)
            for p in params:
                p.grad = None
            self.fabric.backward(out["loss"])
            algorithm.on_before_optimizer_step(optimizer)
            optimizer.step()
            algorithm.on_train_batch_end(out, batch, b)
            epoch_loss += out["loss"].detach()
        self.done += 1
        if not torch.isfinite(epoch_loss):
            raise NonFiniteLossError(
                f"training loss is {epoch_loss.item()} in task {self.task_id}, epoch {self.done}",
                task=self.task_id,
                epoch=self.done,
            )
        return float(epoch_loss.item()) / self.num_batches


def train_task(
    fabric: Any,
    module: Any,
    algorithm: CLAlgorithm,
    data: Any,
    task_id: int,
    train: TrainConfig,
    generator: torch.Generator,
) -> TaskTraining:
    """Train task ``task_id`` (its device-resident data ``data``) under ``train.schedule``."""
    epochs = _Epochs(fabric, module, algorithm, data, task_id, train, generator)
    lr = train.lr
    schedule = train.schedule
    best_epoch = None
    if isinstance(schedule, PlateauSchedule):
        loss, best_epoch, lr = _plateau(epochs, schedule, train, data, task_id)
    else:
        optimizer = epochs.optimizer(lr)
        loss = math.nan
        for _ in range(train.epochs):
            loss = epochs.run(optimizer)
    extra = algorithm.post_train_epochs(task_id)
    if extra:
        algorithm.on_post_train_start(task_id)
        optimizer = epochs.optimizer(train.lr)
        for _ in range(extra):
            loss = epochs.run(optimizer)
    return TaskTraining(epochs.done, loss, best_epoch, lr)


def _plateau(
    epochs: _Epochs, schedule: PlateauSchedule, train: TrainConfig, data: Any, task_id: int
) -> tuple[float, int | None, float]:
    algorithm = epochs.algorithm
    lr, patience = train.lr, schedule.patience
    optimizer = epochs.optimizer(lr)
    best_loss, best_epoch, best_state = math.inf, None, None
    val_sets = algorithm.validation_sets(task_id, data)
    loss = math.nan
    for epoch in range(1, schedule.max_epochs + 1):
        loss = epochs.run(optimizer)
        val_loss = _validation_loss(algorithm, val_sets, train.eval_batch_size)
        if val_loss < best_loss:
            best_loss, best_epoch, patience = val_loss, epoch, schedule.patience
            if schedule.restore_best:
                best_state = {k: v.detach().clone() for k, v in algorithm.state_dict().items()}
            continue
        patience -= 1
        if patience <= 0:
            lr /= schedule.factor
            if lr < schedule.min_lr:
                break
            patience = schedule.patience
            optimizer = epochs.optimizer(lr)
    if best_state is not None:
        algorithm.load_state_dict(best_state)
    return loss, best_epoch, lr
