"""Independent: one freshly initialised backbone per task, no transfer and no forgetting.

The reference of parameter isolation taken to the end: task t gets its own copy of the backbone,
re-initialised, and its own head, so nothing learnt on one task reaches another (the
"independent" baseline of Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual
Learning", NeurIPS 2017, §5: one model per task; GEM shrinks each to 1/T of the hidden units,
here each copy has the full architecture of the backbone config). Backward transfer is exactly
0 in TIL, and the cost is T backbones.

Each task's backbone is ``deepcopy(template)`` with every ``reset_parameters()`` re-run under a
private seed (drawn once from the trial's seeded RNG when the algorithm is built, plus the task
id), so it depends neither on where ``setup_task`` is called from nor on the device. The
backbones live in ``self.backbones`` (keys ``"1"``, ``"2"``, ...), so checkpoints hold every one;
``setup_task`` creates them, so a resumed run finds them before ``load_state_dict``. The template
itself (``self.backbone``) is never trained.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from clsweep.algorithms.base import CLAlgorithm
from clsweep.backbones.base import CLBackbone

__all__ = ["Independent"]


class Independent(CLAlgorithm):
    """A separate backbone per task; task j is always evaluated with backbone j and head j."""

    def __init__(self, backbone: CLBackbone, heads: nn.Module, *, params: BaseModel) -> None:
        super().__init__(backbone, heads, params=params)
        self.backbones = nn.ModuleDict()
        backbone.requires_grad_(False)  # the template only supplies the architecture
        self._seed = int(torch.randint(0, 2**31 - 1, ()).item())
        """Base of the per-task initialisation seeds (from the trial seed set before building)."""

    def _new_backbone(self, task_id: int) -> CLBackbone:
        fresh = copy.deepcopy(self.backbone).cpu()  # the loop moves the new module to the device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed + task_id)
            for module in fresh.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
        return fresh.requires_grad_(True)

    def setup_task(self, task_id: int, num_classes: int) -> None:
        super().setup_task(task_id, num_classes)
        key = str(task_id)
        if key not in self.backbones:
            self.backbones[key] = self._new_backbone(task_id)
        self.backbones[key].setup_task_id(task_id)  # type: ignore[operator]

    def on_task_start(self, task_id: int) -> None:
        """Only the current task's backbone and head take gradients (and enter the optimiser).

        Heads whose one layer serves every task (``masked_multihead``) put the old tasks' rows in
        the optimiser with the current task's: their gradient is 0 there, but weight decay would
        still move them (Adam's L2 decay by about ``lr`` per step), so that pairing is refused."""
        current = self.heads.heads_for(task_id)
        old = [h for t in self.heads.task_ids if t != task_id for h in self.heads.heads_for(t)]
        if self.train_config.weight_decay > 0 and any(h is c for h in old for c in current):
            raise ValueError(
                f"independent: train.weight_decay must be 0 with heads {type(self.heads).__name__}, "
                "whose one layer holds every task's classes: decay would move the rows of "
                "tasks already trained (use heads 'til')"
            )
        for key, module in self.backbones.items():
            module.requires_grad_(key == str(task_id))
        for head in old:
            head.requires_grad_(False)
        for head in current:  # after the old ones: a shared layer is the current task's too
            head.requires_grad_(True)

    def forward(self, x: Tensor, stage: str, task_id: int) -> tuple[Tensor, dict[str, Tensor]]:  # type: ignore[override]
        feature, hidden = self.backbones[str(task_id)](x, stage=stage, task_id=task_id)
        return self.heads(feature, task_id), hidden

    def extra_state(self) -> dict[str, Any]:
        return {"seed": self._seed}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._seed = int(state["seed"])
