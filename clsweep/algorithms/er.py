"""Experience replay with a reservoir buffer (Chaudhry et al. 2019, "On Tiny Episodic Memories in
Continual Learning", arXiv:1902.10486, Algorithm 1).

A fixed-size memory of ``(x, y, task id)`` holds a uniform sample of the training stream, kept by
reservoir sampling. Every step draws a replay batch from it and trains on the current batch and
the replay batch concatenated (the paper's ``B = B_n u B_M``; Mammoth's ``models/er.py`` does the
same): the loss is the mean cross-entropy over the union, each sample scored by its own task's head
in TIL (:meth:`TaskHeads.forward_rows`), by all seen classes in CIL. After the step the current
batch is written into the memory.

Several epochs per task: the paper trains a single pass, so each sample enters the stream once.
Here the memory is updated during a task's first epoch only (later epochs, and PackNet-style second
phases, replay but write nothing), so the reservoir stays a uniform sample over distinct samples
rather than being biased towards the tasks that were trained longer. Mammoth instead re-adds every
epoch's batches (each sample counted once per epoch).

The heads while a task trains (TIL): the heads of every task set up so far are held in one
weight matrix and one bias vector (:class:`~clsweep.heads.stacked.StackedHeads`, built with each
optimiser, released at the task's end), so a step scores its mixed batch with one matrix product
and the optimiser updates two head tensors, not two per task. Every seen task's head therefore
takes part in every step, with a zero gradient when the batch holds none of its rows (momentum and
weight decay reach it then too, as they reach every class of Mammoth's single classifier); a step
whose batch holds rows of every task gives the same numbers as scoring with the heads' own
parameters. CIL and one-layer heads are scored by ``heads.forward_rows`` as they are.

State in the checkpoint (``extra_state``): the buffer rows and the stream count. Randomness (the
reservoir draws, the replay batches) comes from the global generator, which the task loop seeds at
every task start, so a resumed run replays the same numbers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from clsweep.algorithms.base import CLAlgorithm
from clsweep.algorithms.replay_buffer import ReservoirMemory
from clsweep.backbones.base import CLBackbone
from clsweep.heads.stacked import StackedHeads
from clsweep.spec.methods.er import ERParams

__all__ = ["ER"]


class ER(CLAlgorithm):
    """Train on each batch concatenated with a replay batch from a reservoir memory."""

    params: ERParams

    def __init__(self, backbone: CLBackbone, heads: nn.Module, *, params: ERParams) -> None:
        super().__init__(backbone, heads, params=params)
        self.memory = ReservoirMemory(self.params.buffer_size)
        self._epoch = 0
        self._stack: StackedHeads | None = None
        """The heads stacked for the optimiser being used (TIL), from make_optimizer to task end."""

    def on_task_data(self, task_id: int, data: Any) -> None:
        self.memory.to(data.train_x.device)  # a resumed memory comes back on the CPU

    def on_task_start(self, task_id: int) -> None:
        self._epoch = 0

    def on_train_epoch_start(self) -> None:
        self._epoch += 1

    def make_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """Stack the heads afresh (every task set up, the current one included), then build the
        optimiser over the stack in place of the heads' own parameters."""
        self._stack = StackedHeads(self.heads) if StackedHeads.supports(self.heads) else None
        return super().make_optimizer(lr)

    def optimizer_parameters(self) -> list[nn.Parameter]:
        params = super().optimizer_parameters()
        if self._stack is None:
            return params
        members = {id(p) for p in self._stack.members}
        return [p for p in params if id(p) not in members] + self._stack.parameters()

    def on_task_end(self, task_id: int) -> None:
        if self._stack is not None:  # the heads own their storage again before evaluation and checkpoint
            self._stack.release()
            self._stack = None

    def _replay_batch_size(self) -> int:
        size = self.params.replay_batch_size
        return self.train_config.batch_size if size is None else int(size)

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> dict[str, Any]:  # type: ignore[override]
        x, y, task_ids = batch
        if len(self.memory):
            mx, my, mt = self.memory.sample(self._replay_batch_size())
            x, y, task_ids = torch.cat([mx, x]), torch.cat([my, y]), torch.cat([mt, task_ids])
        feature, hidden = self.backbone(x, stage="train", task_id=self.task_id)
        score = self.heads.forward_rows if self._stack is None else self._stack.forward_rows
        logits = score(feature, task_ids)
        loss = nn.functional.cross_entropy(logits, y)
        # the step's metrics are those of the batch it trains on, B_n u B_M (as Joint's are of its
        # mixed batch): computing the current rows' apart would cost every step for nothing read
        return {
            "loss": loss,
            "loss_cls": loss,
            "acc": (logits.argmax(1) == y).float().mean(),
            "hidden_features": hidden,
        }

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._epoch == 1:
            x, y, task_ids = batch
            self.memory.add(x, y, task_ids)

    def diagnostics(self) -> dict[str, float]:
        return {"er_buffer_filled": float(len(self.memory))}

    def extra_state(self) -> dict[str, Any]:
        return {"memory": self.memory.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.memory.load(state["memory"])
