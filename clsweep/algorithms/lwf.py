"""LwF: Learning without Forgetting (Li & Hoiem, TPAMI 2017).

At the start of every task after the first, a frozen copy of the model (backbone and heads)
records what the old tasks' outputs were. Training on the new task's data adds the distillation
loss of Eq. 2 to the new task's cross-entropy (Eq. 1)::

    loss = CE(new task) + strength * sum over old outputs of -sum_c p_old,c log p_new,c,
    p = softmax(logits / temperature)

the paper's "modified cross-entropy": both recorded and current probabilities raised to 1/T and
renormalised, which is the softmax at temperature T; no T^2 factor (as in FACIL's
src/approach/lwf.py, whose ``cross_entropy(..., exp=1/T)`` is this term up to its 1e-5 smoothing).
It differs from KL(p_old || p_new) by the old model's entropy, a constant, so the gradients agree.

What "the old outputs" are depends on the heads:

- TIL: each old task's head is a separate classifier with its own softmax; one term per old task,
  summed ("for multiple old tasks ... we take the loss for each output", §3).
- CIL (``HeadsCIL``): one softmax over the logits of every class of the earlier tasks (the first
  ``offset(current task)`` columns), as FACIL concatenates the old heads.

The new task's cross-entropy in CIL ranges over the current task's classes by default (FACIL's
LwF without exemplars), or over every class seen (``cil_cross_entropy: seen``, Mammoth's); in
TIL it is the current head's. The same criterion is the validation loss. The paper's warm-up
(training the new head alone before the joint phase, §3) is not done: FACIL's default
(``--warmup-nepochs 0``) also skips it, and the paper reports it "not so crucial".

The copy is not saved: it is rebuilt at each task start from the current weights, which after a
checkpoint resume are the restored weights of the finished task, so a resumed run distils from
the same model as an uninterrupted one. The copy runs in eval mode (FACIL ``model_old.eval()``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from clsweep.algorithms.base import CLAlgorithm
from clsweep.heads import HeadsCIL
from clsweep.spec.methods.lwf import LwFParams

__all__ = ["LwF", "distillation"]


def distillation(logits: Tensor, old_logits: Tensor, temperature: float) -> Tensor:
    """Mean over the batch of -sum_c softmax(old / T)_c * log softmax(logits / T)_c (Li & Hoiem Eq. 2)."""
    target = torch.softmax(old_logits / temperature, dim=1)
    return -(target * torch.log_softmax(logits / temperature, dim=1)).sum(1).mean()


class LwF(CLAlgorithm):
    """Finetuning plus distillation of the previous model's old-task outputs on the new data."""

    params: LwFParams

    def __init__(self, backbone: Any, heads: Any, *, params: LwFParams) -> None:
        super().__init__(backbone, heads, params=params)
        # a tuple, not submodules: the copy stays out of state_dict(), parameters() and train()
        self._old_model: tuple[nn.Module, nn.Module] | None = None

    def on_task_start(self, task_id: int) -> None:
        self._old_model = None
        if task_id <= 1:
            return
        old = (copy.deepcopy(self.backbone), copy.deepcopy(self.heads))
        for module in old:
            module.eval()
            for p in module.parameters():
                p.grad = None
                p.requires_grad_(False)
        self._old_model = old

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> dict[str, Any]:  # type: ignore[override]
        x, y = batch[0], batch[1]
        feature, hidden = self.backbone(x, stage="train", task_id=self.task_id)
        logits = self.heads(feature, self.task_id)
        loss_cls = self._task_cross_entropy(logits, y, self.task_id)
        loss_distill = self.distillation_loss(x, feature)
        return {
            "loss": loss_cls + self.params.strength * loss_distill,
            "loss_cls": loss_cls,
            "loss_distill": loss_distill.detach(),
            "acc": (logits.argmax(1) == y).float().mean(),
            "hidden_features": hidden,
        }

    def validation_loss(self, x: Tensor, y: Tensor, task_id: int) -> Tensor:
        """CE + strength * distillation on the validation inputs: the criterion joansj/hat
        (src/approaches/lwf.py ``eval``) and FACIL (src/approach/lwf.py ``eval``) evaluate."""
        feature, _ = self.backbone(x, stage="validation", task_id=task_id)
        loss_cls = self._task_cross_entropy(self.heads(feature, task_id), y, task_id)
        return loss_cls + self.params.strength * self.distillation_loss(x, feature)

    def _task_cross_entropy(self, logits: Tensor, y: Tensor, task_id: int) -> Tensor:
        """The new task's cross-entropy: in CIL with ``cil_cross_entropy: current``, over the
        current task's columns against labels shifted to them; otherwise over ``logits`` as given."""
        if isinstance(self.heads, HeadsCIL) and self.params.cil_cross_entropy == "current":
            offset = self.heads.offset(task_id)
            end = offset + self.heads.num_classes(task_id)
            return nn.functional.cross_entropy(logits[:, offset:end], y - offset)
        return nn.functional.cross_entropy(logits, y)

    def distillation_loss(self, x: Tensor, feature: Tensor) -> Tensor:
        """The distillation term on inputs ``x`` whose current backbone feature is ``feature``
        (0 while no old model exists)."""
        if self._old_model is None:
            return feature.new_zeros(())
        old_backbone, old_heads = self._old_model
        t, temperature = self.task_id, self.params.temperature
        with torch.no_grad():
            old_feature, _ = old_backbone(x, stage="test", task_id=t)
        if isinstance(self.heads, HeadsCIL):
            seen = self.heads.offset(t)
            with torch.no_grad():
                old_logits = old_heads(old_feature, t)[:, :seen]
            return distillation(self.heads(feature, t)[:, :seen], old_logits, temperature)
        total = feature.new_zeros(())
        for j in [j for j in self.heads.task_ids if j < t]:  # not the heads of future tasks (evaluate_future)
            with torch.no_grad():
                old_logits = old_heads(old_feature, j)
            total = total + distillation(self.heads(feature, j), old_logits, temperature)
        return total
