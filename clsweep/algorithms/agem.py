"""A-GEM, averaged gradient episodic memory (Chaudhry et al., ICLR 2019, "Efficient Lifelong Learning
with A-GEM", arXiv:1812.00420, §4 Eq. 11).

An episodic memory keeps samples of every finished task. Each step, after the current batch's
backward pass, a reference gradient ``g_ref`` is computed on a random batch of the memory; if the
current gradient ``g`` would increase the memory loss (``g . g_ref < 0``) it is projected onto the
half-space where it does not: ``g <- g - (g . g_ref / g_ref . g_ref) g_ref``; otherwise it is left
as it is. The projection is written without a branch (the coefficient is ``min(g . g_ref, 0)``), so
no step waits on the device.

Which gradient: ``g`` and ``g_ref`` are the flat gradients of the backbone (``get_grads()`` /
``set_grads()``) followed by those of every head, one vector, as the paper's ``g`` covers all
parameters and Mammoth's ``models/agem.py`` projects over ``self.parameters()``. In TIL the current
batch reaches only the new head and the memory only old heads, so the heads add nothing to the dot
product; the projection then also moves old heads by ``-alpha g_ref``, which lowers their memory loss
(with plain SGD, no weight decay, heads with no gradient and a zero gradient update the same).
``g_ref`` comes from ``torch.autograd.grad``, so ``.grad`` keeps the current gradient meanwhile.

Memory: per task, as the authors' code (facebookresearch/agem ``fc_permute_mnist.py``, a per-class
ring buffer of ``--mem-size`` samples of each class of the task); here ``samples_per_class`` random
samples of each class of the task's training split, taken at the task's end (Mammoth fills its
buffer at ``end_task`` too). The memory rides in ``extra_state``; the draws come from the global
generator, which the task loop seeds per task, so resumed runs give the same numbers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from clsweep.algorithms.base import CLAlgorithm
from clsweep.algorithms.replay_buffer import Memory, per_class_subset, task_grouped_cross_entropy
from clsweep.backbones.base import CLBackbone
from clsweep.spec.methods.agem import AGEMParams

__all__ = ["AGEM", "project"]


def project(g: Tensor, g_ref: Tensor) -> Tensor:
    """A-GEM's update: ``g`` if ``g . g_ref >= 0``, else ``g`` minus its component along ``g_ref``."""
    dot = torch.dot(g, g_ref)
    alpha = dot.clamp(max=0.0) / torch.dot(g_ref, g_ref).clamp_min(torch.finfo(g.dtype).tiny)
    return g - alpha * g_ref


def _flat(grads: list[Tensor | None], params: list[nn.Parameter]) -> Tensor:
    """``grads`` laid end to end in one vector, zeros for a parameter without one."""
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads, strict=True)]
    )


class AGEM(CLAlgorithm):
    """Finetuning whose gradient never points against the episodic memory's average gradient."""

    params: AGEMParams

    def __init__(self, backbone: CLBackbone, heads: nn.Module, *, params: AGEMParams) -> None:
        super().__init__(backbone, heads, params=params)
        self.memory = Memory()
        self._data: Any = None
        self._steps = 0
        self._projected: Tensor | None = None

    def on_task_data(self, task_id: int, data: Any) -> None:
        self._data = data
        self.memory.to(data.train_x.device)  # a resumed memory comes back on the CPU

    def on_task_start(self, task_id: int) -> None:
        self._steps, self._projected = 0, None

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        if not len(self.memory):
            return
        backbone, heads = list(self.backbone.parameters()), list(self.heads.parameters())
        size = self.params.reference_batch_size
        x, y, task_ids = self.memory.sample(self.train_config.batch_size if size is None else size)
        feature, _ = self.backbone(x, stage="train", task_id=self.task_id)
        losses, _ = task_grouped_cross_entropy(self.heads, feature, y, task_ids)
        trainable = [p for p in backbone + heads if p.requires_grad]
        grads = iter(torch.autograd.grad(losses.mean(), trainable, allow_unused=True))
        g_ref = _flat([next(grads) if p.requires_grad else None for p in backbone + heads], backbone + heads)
        g = torch.cat([self.backbone.get_grads(), _flat([p.grad for p in heads], heads)])
        dot = torch.dot(g, g_ref)
        new = project(g, g_ref)
        n = sum(p.numel() for p in backbone)
        self.backbone.set_grads(new[:n])
        offset = n
        for p in heads:
            p.grad = new[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        self._steps += 1
        hit = (dot < 0).float()
        self._projected = hit if self._projected is None else self._projected + hit

    def on_task_end(self, task_id: int) -> None:
        data = self._data
        keep = per_class_subset(data.train_y, self.params.samples_per_class)
        ids = torch.full((keep.shape[0],), task_id, dtype=torch.long, device=keep.device)
        self.memory.append(data.train_x[keep], data.train_y[keep], ids)
        self._data = None

    def diagnostics(self) -> dict[str, float]:
        """Share of the task's steps whose gradient was projected (0 on the first task)."""
        if self._projected is None or not self._steps:
            return {"agem_projected_fraction": 0.0}
        return {"agem_projected_fraction": float(self._projected.item()) / self._steps}

    def extra_state(self) -> dict[str, Any]:
        return {"memory": self.memory.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.memory.load(state["memory"])
