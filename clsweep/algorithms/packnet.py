"""PackNet: Mallya & Lazebnik, "PackNet: Adding Multiple Tasks to a Single Network by Iterative
Pruning", CVPR 2018.

Every weight of a prunable layer (``nn.Linear``, ``nn.Conv2d`` of the backbone) has an owner: the
task that keeps it, or 0 while it is free. Task t:

1. takes every free weight (owner 0 -> t) and trains it; the weights of tasks < t take part in
   the forward pass but their gradients are zeroed before every optimiser step (frozen);
2. after the schedule's epochs, ``on_post_train_start`` prunes, in each layer, the fraction
   ``prune_ratio`` of task t's weights with the smallest magnitude: they are set to 0 and freed
   (owner 0) for the next task (the paper §3; arunmallya/packnet src/prune.py ``pruning_mask``);
3. the kept weights retrain for ``retrain_epochs`` (the loop's second phase), the freed ones
   held at 0, then stay frozen for good.

At test time task j uses only the weights of tasks 1..j: the others are masked to 0 in a
functional forward (the parameters themselves are not touched), as the authors' ``apply_mask``
does. Biases and batch-norm parameters train with task 1 and are frozen afterwards, batch norm in
eval mode from task 2 on (the authors' sequence runs without ``--train_biases --train_bn``).
So task j's test forward never changes after task j: BWT is exactly 0.

Weight decay would shrink the frozen weights (the step adds it after the gradients are zeroed),
so a non-zero ``train.weight_decay`` is refused at the first task.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from clsweep.algorithms.base import CLAlgorithm
from clsweep.backbones.base import CLBackbone
from clsweep.spec.methods.packnet import PackNetParams

__all__ = ["PackNet"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


class PackNet(CLAlgorithm):
    """Iterative magnitude pruning: disjoint weight subsets per task, older ones frozen."""

    params: PackNetParams

    def __init__(self, backbone: CLBackbone, heads: nn.Module, *, params: PackNetParams) -> None:
        super().__init__(backbone, heads, params=params)
        self.prunable: list[str] = [
            name for name, m in backbone.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
        ]
        """Module paths (``fc.0``, ...) of the backbone's prunable layers."""
        for i, name in enumerate(self.prunable):
            self.register_buffer(f"owner_{i}", torch.zeros_like(self._layer(name).weight, dtype=torch.int16))

    # ---- bookkeeping ----------------------------------------------------------------------
    def _layer(self, name: str) -> nn.Linear | nn.Conv2d:
        layer = self.backbone.get_submodule(name)
        assert isinstance(layer, (nn.Linear, nn.Conv2d))
        return layer

    def owner(self, i: int) -> Tensor:
        """Owner map of prunable layer ``i``: the task that keeps each weight, 0 where free."""
        return getattr(self, f"owner_{i}")  # type: ignore[no-any-return]

    def _layers(self) -> list[tuple[Tensor, Tensor]]:
        return [(self._layer(n).weight, self.owner(i)) for i, n in enumerate(self.prunable)]

    def _shared(self) -> list[Tensor]:
        """Parameters every task shares whole: the prunable layers' biases and normalisation."""
        shared: list[Tensor | None] = [self._layer(n).bias for n in self.prunable]
        shared += [p for m in self.backbone.modules() if isinstance(m, _NORMS) for p in m.parameters()]
        return [p for p in shared if p is not None]

    # ---- hooks ----------------------------------------------------------------------------
    def on_task_start(self, task_id: int) -> None:
        if self.train_config.weight_decay > 0:
            raise ValueError(
                "packnet: train.weight_decay must be 0; decay moves the frozen weights of earlier tasks"
            )
        for _, owner in self._layers():
            owner[owner == 0] = task_id  # the free weights become this task's
        for p in self._shared():
            p.requires_grad_(task_id == 1)

    def on_train_epoch_start(self) -> None:
        if self.task_id > 1:  # frozen normalisation: no running-statistics updates either
            for m in self.backbone.modules():
                if isinstance(m, _NORMS):
                    m.eval()

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Zero the gradients of weights that are not the current task's (frozen or pruned)."""
        for weight, owner in self._layers():
            if weight.grad is not None:
                weight.grad.mul_(owner == self.task_id)

    def post_train_epochs(self, task_id: int) -> int:
        return self.params.retrain_epochs

    def on_post_train_start(self, task_id: int) -> None:
        self.prune(task_id)

    def on_task_end(self, task_id: int) -> None:
        if self.params.retrain_epochs == 0:  # no second phase: prune without retraining
            self.prune(task_id)

    @torch.no_grad()
    def prune(self, task_id: int) -> None:
        """Free the ``prune_ratio`` smallest-magnitude weights of ``task_id`` in every layer."""
        for weight, owner in self._layers():
            mine = (owner.view(-1) == task_id).nonzero(as_tuple=True)[0]
            k = round(self.params.prune_ratio * mine.numel())
            order = weight.view(-1)[mine].abs().argsort(stable=True)
            freed = mine[order[:k]]
            owner.view(-1)[freed] = 0
            weight.view(-1)[freed] = 0.0

    # ---- forward --------------------------------------------------------------------------
    def forward(self, x: Tensor, stage: str, task_id: int) -> tuple[Tensor, dict[str, Tensor]]:  # type: ignore[override]
        """Training: the weights as they are. Validation and test: only tasks 1..task_id's weights."""
        if stage == "train":
            return super().forward(x, stage, task_id)
        masked = {
            f"{name}.weight": weight * ((owner >= 1) & (owner <= task_id))
            for name, (weight, owner) in zip(self.prunable, self._layers(), strict=True)
        }
        feature, hidden = functional_call(self.backbone, masked, (x,), {"stage": stage, "task_id": task_id})
        return self.heads(feature, task_id), hidden

    def diagnostics(self) -> dict[str, float]:
        """Fraction of the prunable weights still free after the task."""
        total = sum(owner.numel() for _, owner in self._layers())
        free = sum(int((owner == 0).sum()) for _, owner in self._layers())
        return {"packnet_free_fraction": free / max(1, total)}
