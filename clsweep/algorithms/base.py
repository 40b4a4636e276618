"""The interface every CL algorithm implements: a LightningModule that owns only its learning rule.

The task loop (:mod:`clsweep.experiment`) owns the sequence of tasks, the optimiser's lifetime,
batching, evaluation and metrics, so numbers stay comparable between algorithms. It calls, per task:

1. ``setup_task(task_id, num_classes)``: backbone and heads learn the new task id (a new head).
2. ``on_task_data(task_id, data)``: the task's splits, already on the device (``train_x``,
   ``train_y``, ``val_x``, ... of :class:`clsweep.benchmarks.streams.TaskData`); keep a reference
   if the rule needs them (Joint's union, a Fisher estimate). A resumed run calls it again for
   every completed task, in order, before it trains on: keep references here, change no state.
3. ``on_task_start(task_id)``, then ``training_set(task_id, data)``: the ``(x, y, task_ids)``
   tensors the task's batches are drawn from (the current task's training split by default; Joint
   returns every task seen so far).
4. per epoch: ``on_train_epoch_start()``, then per batch ``training_step(batch, batch_idx)`` with
   ``batch = (x, y, task_ids)`` -> backward -> ``on_before_optimizer_step(optimizer)`` (condition
   gradients here) -> optimiser step -> ``on_train_batch_end(outputs, batch, batch_idx)``. The
   optimiser comes from ``make_optimizer(lr)``: a fresh one at each task start and at each
   learning-rate drop of the plateau schedule, so its state never leaks from one task into the
   next. Under the plateau schedule, ``validation_loss(x, y, task_id)`` after every epoch.
5. ``post_train_epochs(task_id)`` more epochs, after ``on_post_train_start(task_id)``, when the
   method asks for a second phase (PackNet retrains after pruning; 0 by default).
6. ``on_task_end(task_id)``, then evaluation of every seen task with ``evaluate_logits``, then
   ``diagnostics()`` is reported with the task's metrics.

Every algorithm is built as ``Cls(backbone, heads, params=<its validated params model>)`` (through
:func:`clsweep.registry.create`) and reads its hyperparameters from ``self.params``; the defaults
live only in the params model.

``batch_idx`` is 0-based as in Lightning; ``num_batches`` (batches per epoch) is set by the loop.
State that must survive a checkpoint lives in modules' parameters and buffers (``state_dict()``)
or in ``extra_state()`` / ``load_extra_state()`` for plain Python values.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from pydantic import BaseModel
from torch import Tensor, nn

from clsweep.backbones.base import CLBackbone
from clsweep.spec.experiment import TrainConfig

__all__ = ["CLAlgorithm"]


class CLAlgorithm(L.LightningModule):
    """Base class of CL algorithms (Finetuning behaviour by default)."""

    backbone: CLBackbone
    heads: Any  # one of clsweep.heads: setup_task_id(task_id, num_classes), forward(feature, task_id)

    def __init__(self, backbone: CLBackbone, heads: nn.Module, *, params: BaseModel) -> None:
        super().__init__()
        self.params = params
        """The validated hyperparameters: an instance of the algorithm's registered params model."""
        self.backbone = backbone
        self.heads = heads
        self.criterion = nn.CrossEntropyLoss()
        self.task_id = 0
        self.num_batches = 1
        self.train_config = TrainConfig()

    # ---- task set-up and hooks ------------------------------------------------------------
    def setup_task(self, task_id: int, num_classes: int) -> None:
        """Tell backbone and heads which task comes; heads create the task's output layer."""
        self.task_id = task_id
        self.backbone.setup_task_id(task_id)
        self.heads.setup_task_id(task_id, num_classes)

    def on_task_data(self, task_id: int, data: Any) -> None:
        """The task's splits, on the device, before ``on_task_start``."""

    def on_task_start(self, task_id: int) -> None:
        """Called before the first epoch of a task (after ``setup_task`` and ``on_task_data``)."""

    def training_set(self, task_id: int, data: Any) -> tuple[Tensor, Tensor, Tensor]:
        """``(x, y, task_ids)`` the task's batches are drawn from: its training split by default."""
        ids = torch.full((data.train_x.shape[0],), task_id, dtype=torch.long, device=data.train_x.device)
        return data.train_x, data.train_y, ids

    def post_train_epochs(self, task_id: int) -> int:
        """Epochs of a second training phase after the schedule's (PackNet's retraining); 0: none."""
        return 0

    def on_post_train_start(self, task_id: int) -> None:
        """Called before the second phase's first epoch (PackNet prunes here)."""

    def on_task_end(self, task_id: int) -> None:
        """Called after the last epoch of a task, before evaluation."""

    def diagnostics(self) -> dict[str, float]:
        """Per-task diagnostics reported with the metrics (e.g. HAT's capacity use)."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Plain-Python state saved with a checkpoint (tensors belong in buffers)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    # ---- forward and steps ----------------------------------------------------------------
    def forward(self, x: Tensor, stage: str, task_id: int) -> tuple[Tensor, dict[str, Tensor]]:  # type: ignore[override]
        """Logits of task ``task_id`` (the heads decide what that means per paradigm) and the
        backbone's hidden features."""
        feature, hidden = self.backbone(x, stage=stage, task_id=task_id)
        return self.heads(feature, task_id), hidden

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> dict[str, Any]:  # type: ignore[override]
        """One step on the current task: the reference's output contract (loss, loss_cls, acc,
        hidden_features). ``batch = (x, y, task_ids)``."""
        x, y = batch[0], batch[1]
        logits, hidden = self(x, stage="train", task_id=self.task_id)
        loss_cls = self.criterion(logits, y)
        return {
            "loss": loss_cls,
            "loss_cls": loss_cls,
            "acc": (logits.argmax(1) == y).float().mean(),
            "hidden_features": hidden,
        }

    @torch.no_grad()
    def evaluate_logits(self, x: Tensor, task_id: int) -> Tensor:
        """Logits for test/validation data of task ``task_id`` (model in eval mode)."""
        logits, _ = self(x, stage="test", task_id=task_id)
        return logits

    def validation_loss(self, x: Tensor, y: Tensor, task_id: int) -> Tensor:
        """Mean loss on validation data of ``task_id`` (eval mode, no grad): what the plateau
        schedule watches. The training criterion, as the references validate (joansj/hat
        src/approaches/*.py and FACIL src/approach/*.py call their ``criterion`` in ``eval``):
        cross-entropy of the validation-stage logits here, and a method whose training loss adds a
        term (HAT's sparsity, EWC's penalty, SI's surrogate, LwF's distillation) adds it too."""
        logits, _ = self(x, stage="validation", task_id=task_id)
        return nn.functional.cross_entropy(logits, y)

    def validation_sets(self, task_id: int, data: Any) -> list[tuple[Tensor, Tensor, int]]:
        """The validation splits the plateau schedule scores while task ``task_id`` trains, each as
        (inputs, labels, their task id); its loss is the mean of :meth:`validation_loss` over all
        their samples. The current task's split here; a method that trains on other tasks' data
        validates on their splits too (Joint: tasks 1..t)."""
        return [(data.val_x, data.val_y, task_id)]

    def optimizer_parameters(self) -> list[nn.Parameter]:
        """What :meth:`make_optimizer` updates: every trainable parameter."""
        return [p for p in self.parameters() if p.requires_grad]

    def make_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """A fresh optimiser over :meth:`optimizer_parameters` at ``lr``, the rest from the train config."""
        cfg = self.train_config
        params = self.optimizer_parameters()
        if cfg.optimizer == "sgd":
            # foreach: one call over all parameters, where SGD's default off CUDA is a Python loop
            # per parameter (a visible share of a small model's step, more so with a head per
            # task); it applies the same per-tensor arithmetic, bit for bit (tests/core/test_schedule.py)
            return torch.optim.SGD(
                params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True
            )
        if cfg.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Lightning's hook: the optimiser at the train config's learning rate."""
        return self.make_optimizer(self.train_config.lr)
