"""SI: Synaptic Intelligence (Zenke, Poole & Ganguli, "Continual Learning Through Synaptic
Intelligence", ICML 2017).

Each parameter's contribution to the drop of the task loss is integrated along the training path
(Eq. 3, approximated per step as the gradient times the update)::

    omega_i += -g_i * (theta_i after the step - theta_i before it)

with g the gradient of the task's classification loss alone (the surrogate term's gradient is
taken out), read before the optimiser step. At the end of the task (Eq. 5)::

    Omega_i += omega_i / ((theta_i at the task end - theta_i at the task start)^2 + damping)

and later tasks add the surrogate loss of Eq. 4, ``strength * sum_i Omega_i (theta_i - theta*_i)^2``,
theta* being the weights at the start of the current task (the end of the previous one). Like
FACIL (src/approach/path_integral.py), only the backbone is regularised, and the task-loss
gradient is the current task's (FACIL's choice for more than two tasks). Instead of a second
backward pass, the task-loss gradient is the full gradient minus the surrogate's analytic one,
``2 * strength * Omega * (theta - theta*)``.

Omega is the only state that crosses tasks and travels in ``extra_state``; omega and theta* are
rebuilt at every task start, from the current (after a resume: the restored) weights. Under the
plateau schedule omega keeps the path of the epochs whose weights were discarded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from clsweep.algorithms.base import CLAlgorithm
from clsweep.spec.methods.si import SIParams

__all__ = ["SI"]


class SI(CLAlgorithm):
    """Finetuning plus the path-integral surrogate loss on the backbone's parameters."""

    params: SIParams

    def __init__(self, backbone: Any, heads: Any, *, params: SIParams) -> None:
        super().__init__(backbone, heads, params=params)
        self.importance: dict[str, Tensor] = {}
        """Omega: the consolidated importance of each backbone parameter over the finished tasks."""
        self.path: dict[str, Tensor] = {}
        """omega: the current task's running path integral."""
        self.start: dict[str, Tensor] = {}
        """theta*: the backbone's weights at the start of the current task."""
        self._grads: dict[str, Tensor] = {}
        self._before: dict[str, Tensor] = {}

    def _tracked(self) -> list[tuple[str, Tensor]]:
        return [(n, p) for n, p in self.backbone.named_parameters() if p.requires_grad]

    # ---- hooks ------------------------------------------------------------------------------
    def on_task_start(self, task_id: int) -> None:
        tracked = self._tracked()
        device = tracked[0][1].device if tracked else torch.device("cpu")
        self.importance = {n: v.to(device) for n, v in self.importance.items()}  # CPU after a resume
        self.start = {n: p.detach().clone() for n, p in tracked}
        self.path = {n: torch.zeros_like(p) for n, p in tracked}

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> dict[str, Any]:  # type: ignore[override]
        out = super().training_step(batch, batch_idx)
        surrogate = self.surrogate_loss()
        out["loss"] = out["loss_cls"] + surrogate
        out["loss_surrogate"] = surrogate.detach()
        return out

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        c = self.params.strength
        self._grads, self._before = {}, {}
        with torch.no_grad():
            for n, p in self._tracked():
                if p.grad is None:
                    continue
                g = p.grad.detach().clone()
                if n in self.importance:  # remove the surrogate's share: the task loss's gradient
                    g -= 2 * c * self.importance[n] * (p - self.start[n])
                self._grads[n], self._before[n] = g, p.detach().clone()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            for n, p in self._tracked():
                if n in self._grads:
                    self.path[n] -= self._grads[n] * (p - self._before[n])
        self._grads, self._before = {}, {}

    def on_task_end(self, task_id: int) -> None:
        with torch.no_grad():
            for n, p in self._tracked():
                if n not in self.path:
                    continue
                gain = self.path[n] / ((p - self.start[n]).pow(2) + self.params.damping)
                self.importance[n] = self.importance[n] + gain if n in self.importance else gain
                self.path[n].zero_()

    def extra_state(self) -> dict[str, Any]:
        return {"importance": self.importance}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.importance = dict(state["importance"])

    def validation_loss(self, x: Tensor, y: Tensor, task_id: int) -> Tensor:
        """CE + the surrogate: the criterion FACIL evaluates on validation data
        (src/approach/path_integral.py ``criterion``)."""
        return super().validation_loss(x, y, task_id) + self.surrogate_loss()

    # ---- the rule -----------------------------------------------------------------------------
    def surrogate_loss(self) -> Tensor:
        """strength * sum_i Omega_i (theta_i - theta*_i)^2 over the backbone (0 on the first task)."""
        total = torch.zeros((), device=next(self.backbone.parameters()).device)
        for n, p in self._tracked():
            if n in self.importance:
                total = total + (self.importance[n] * (p - self.start[n]).pow(2)).sum()
        return self.params.strength * total
