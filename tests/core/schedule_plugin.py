"""Test-only algorithms for the plateau schedule and divergence tests (loaded through `imports:`)."""

from __future__ import annotations

from typing import Any

import torch

from clsweep import registry
from clsweep.algorithms.finetuning import Finetuning

SCRIPT: list[float] = []
"""Validation losses the scripted algorithm reports, one per epoch (then the last one again)."""
LOG: list[dict[str, Any]] = []


def _weights(algorithm: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in algorithm.state_dict().items()}


class ScriptedValidation(Finetuning):
    """Trains as finetuning; its validation loss follows SCRIPT, and it logs the weights and the
    learning rate of every epoch."""

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        self._lr = optimizer.param_groups[0]["lr"]

    def validation_loss(self, x: Any, y: Any, task_id: int) -> torch.Tensor:
        epoch = len(LOG)
        LOG.append({"weights": _weights(self), "lr": self._lr})
        return torch.tensor(SCRIPT[min(epoch, len(SCRIPT) - 1)])


class RecordedValidation(Finetuning):
    """Finetuning whose real validation losses and weights are logged every epoch."""

    def validation_loss(self, x: Any, y: Any, task_id: int) -> torch.Tensor:
        loss = super().validation_loss(x, y, task_id)
        LOG.append({"weights": _weights(self), "loss": float(loss), "task": task_id, "n": int(x.shape[0])})
        return loss


class DivergesInTask2(Finetuning):
    """A NaN loss from task 2 on."""

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        out = super().training_step(batch, batch_idx)
        if self.task_id >= 2:
            out["loss"] = out["loss"] * float("nan")
        return out


for _name, _cls in (
    ("scripted_validation", "ScriptedValidation"),
    ("recorded_validation", "RecordedValidation"),
    ("diverges_in_task_2", "DivergesInTask2"),
):
    if _name not in registry.list_names("algorithm"):
        registry.register("algorithm", _name, f"{__name__}:{_cls}", summary="test only", tags=("test_only",))
