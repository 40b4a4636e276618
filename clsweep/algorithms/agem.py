"""A-GEM, averaged gradient episodic memory (Chaudhry et al., ICLR 2019, "Efficient Lifelong Learning
with A-GEM", arXiv:1812.00420, §4 Eq. 11).

An episodic memory keeps samples of every finished task. Each step, after the current batch's
backward pass, a reference gradient ``g_ref`` is computed on a random batch of the memory; if the
current gradient ``g`` would increase the memory loss (``g . g_ref < 0``) it is projected onto the
half-space where it does not: ``g <- g - (g . g_ref / g_ref . g_ref) g_ref``; otherwise it is left
as it is. On an accelerator the projection is written without a branch (the coefficient is
``min(g . g_ref, 0)``), so it never waits on the device; on the CPU, where reading the coefficient
waits for nothing, a step that needs no projection skips the update.

Which gradient: ``g`` and ``g_ref`` are the gradients of every trainable parameter, the
backbone's then every head's, taken as one vector, as the paper's ``g`` covers all parameters and
Mammoth's ``models/agem.py`` projects over ``self.parameters()`` (through flat ``get_grads()`` /
``set_grads()`` copies there; here the dot products come from one flat copy on an accelerator and
from per-parameter dot products on the CPU, and each ``.grad`` is updated in place). In TIL the
current batch reaches only the new head and the memory only old heads, so the heads add nothing
to the dot product; the projection then gives old heads the gradient ``-alpha g_ref`` (alpha < 0
on the steps that project, so it points along ``g_ref``), and the step lowers their memory loss.
Every trainable parameter leaves the step with a gradient (zero where neither
batch reaches it, or where nothing is projected), as the flat vector gives it, on every device
alike: with plain SGD and no weight decay a zero gradient and no gradient update the same; with
weight decay or momentum, old heads are decayed / carried on every step, where Finetuning leaves
them untouched (Mammoth's ``overwrite_grad`` writes only parameters that have a gradient).
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
from torch._utils import _flatten_dense_tensors

from clsweep.algorithms.base import CLAlgorithm
from clsweep.algorithms.replay_buffer import Memory, per_class_subset
from clsweep.backbones.base import CLBackbone
from clsweep.spec.methods.agem import AGEMParams

__all__ = ["AGEM", "project", "projection_coefficient"]


def projection_coefficient(dot: Tensor, g_ref: Tensor) -> Tensor:
    """``min(g . g_ref, 0) / (g_ref . g_ref)`` from ``dot = g . g_ref``: the multiple of ``g_ref``
    that A-GEM subtracts from ``g`` (0 when the two agree)."""
    return dot.clamp(max=0.0) / torch.dot(g_ref, g_ref).clamp_min(torch.finfo(g_ref.dtype).tiny)


def project(g: Tensor, g_ref: Tensor) -> Tensor:
    """A-GEM's update: ``g`` if ``g . g_ref >= 0``, else ``g`` minus its component along ``g_ref``."""
    return g - projection_coefficient(torch.dot(g, g_ref), g_ref) * g_ref


def _dot_sum(a: list[Tensor], b: list[Tensor]) -> float:
    """``sum_i a_i . b_i`` over paired tensors (``zip`` stops at the shorter list), as a number:
    one dot product per tensor, summed in double precision, with no flat copy of either list."""
    total = 0.0
    for x, y in zip(a, b, strict=False):
        total += float(torch.dot(x.reshape(-1), y.reshape(-1)))
    return total


def _coefficient_number(dot: float, g_ref: list[Tensor]) -> float:
    """:func:`projection_coefficient` from numbers: 0 when ``dot >= 0`` (then ``g_ref . g_ref``
    is not computed at all); otherwise ``dot / (g_ref . g_ref)``. A NaN ``dot`` gives NaN, so a
    non-finite gradient still shows in the update."""
    if dot >= 0:
        return 0.0
    return dot / max(_dot_sum(g_ref, g_ref), torch.finfo(g_ref[0].dtype).tiny)


class AGEM(CLAlgorithm):
    """Finetuning whose gradient never points against the episodic memory's average gradient."""

    params: AGEMParams

    def __init__(self, backbone: CLBackbone, heads: nn.Module, *, params: AGEMParams) -> None:
        super().__init__(backbone, heads, params=params)
        self.memory = Memory()
        self._data: Any = None
        self._dots: list[Tensor | float] = []
        """g . g_ref of every step of the task (tensors on an accelerator, numbers on the CPU),
        counted in :meth:`diagnostics`."""
        self._trainable: list[nn.Parameter] | None = None

    def setup_task(self, task_id: int, num_classes: int) -> None:
        super().setup_task(task_id, num_classes)
        self._trainable = None  # a new head

    def on_task_data(self, task_id: int, data: Any) -> None:
        self._data = data
        self.memory.to(data.train_x.device)  # a resumed memory comes back on the CPU

    def on_task_start(self, task_id: int) -> None:
        self._dots, self._trainable = [], None

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """:func:`project` on the ``.grad`` of every trainable parameter, in place. On an
        accelerator one flat copy of the gradients gives both dot products and the coefficient
        stays a tensor; on the CPU the dot products are summed per parameter as numbers (no flat
        copy; ``g_ref . g_ref`` only on the steps that project). The update ``g <- g - alpha g_ref``
        is fused list operations (a parameter without a gradient, in TIL an old head, gets
        ``-alpha g_ref``; one without either gradient keeps ``None``)."""
        if not len(self.memory):
            return
        if self._trainable is None:
            self._trainable = [
                p for p in (*self.backbone.parameters(), *self.heads.parameters()) if p.requires_grad
            ]
        trainable = self._trainable
        size = self.params.reference_batch_size
        x, y, task_ids = self.memory.sample(self.train_config.batch_size if size is None else size)
        # train stage, as Mammoth and the authors' code (train_phase: True): the memory batch sees
        # dropout and enters batch-norm running statistics
        feature, _ = self.backbone(x, stage="train", task_id=self.task_id)
        loss = nn.functional.cross_entropy(self.heads.forward_rows(feature, task_ids), y)
        refs = torch.autograd.grad(loss, trainable, allow_unused=True)
        both = [(p, r) for p, r in zip(trainable, refs, strict=True) if r is not None and p.grad is not None]
        ref_only = [(p, r) for p, r in zip(trainable, refs, strict=True) if r is not None and p.grad is None]
        grads = [p.grad for p, _ in both if p.grad is not None]
        ref_grads = [r for _, r in both] + [r for _, r in ref_only]
        if ref_grads and self._reads_coefficient(ref_grads[0].device):
            dot_number = _dot_sum(grads, ref_grads)
            self._update_with_number(grads, ref_grads, ref_only, _coefficient_number(dot_number, ref_grads))
            self._dots.append(dot_number)
        elif ref_grads:
            n = sum(g.numel() for g in grads)
            flat = _flatten_dense_tensors([*grads, *ref_grads])  # g where both exist | every g_ref
            dot = torch.dot(flat[:n], flat[n : 2 * n])
            step = torch._foreach_mul(ref_grads, projection_coefficient(dot, flat[n:]))
            if grads:
                torch._foreach_sub_(grads, step[: len(grads)])
            if ref_only:
                for (p, _), moved in zip(ref_only, torch._foreach_neg(step[len(grads) :]), strict=True):
                    p.grad = moved
            self._dots.append(dot.detach())
        # A parameter with no gradient from either batch (the head of a task absent from both)
        # keeps None, not a zero: the optimiser skips it, so weight decay or momentum never moves
        # a head that took no part, as in every other method's step.

    @staticmethod
    def _reads_coefficient(device: torch.device) -> bool:
        """Whether to read ``alpha`` as a number: on the CPU that waits for nothing, and it saves
        the update on the steps that need no projection; on an accelerator it would wait for the
        device every step, so the update stays in tensors there."""
        return device.type == "cpu"

    @staticmethod
    def _update_with_number(
        grads: list[Tensor],
        ref_grads: list[Tensor],
        ref_only: list[tuple[nn.Parameter, Tensor]],
        alpha: float,
    ) -> None:
        """The update with ``alpha`` a number: one fused ``g -= alpha g_ref`` over the gradients,
        none at all when ``alpha`` is 0; a reference-only parameter gets ``-alpha g_ref`` as a new
        tensor, all of them from one fused multiply (``autograd.grad`` may hand two parameters one
        gradient tensor, so none is edited)."""
        if alpha and grads:
            torch._foreach_add_(grads, ref_grads[: len(grads)], alpha=-alpha)
        if ref_only:
            for (p, _), moved in zip(
                ref_only, torch._foreach_mul([r for _, r in ref_only], -alpha), strict=True
            ):
                p.grad = moved

    def on_task_end(self, task_id: int) -> None:
        data = self._data
        keep = per_class_subset(data.train_y, self.params.samples_per_class)
        ids = torch.full((keep.shape[0],), task_id, dtype=torch.long, device=keep.device)
        self.memory.append(data.train_x[keep], data.train_y[keep], ids)
        self._data = None

    def diagnostics(self) -> dict[str, float]:
        """Share of the task's steps whose gradient was projected (0 on the first task)."""
        if not self._dots:
            return {"agem_projected_fraction": 0.0}
        dots = self._dots  # one kind per run: a trial's device does not change
        if isinstance(dots[0], Tensor):
            negative = int((torch.stack(dots) < 0).sum().item())  # type: ignore[arg-type]
        else:
            negative = sum(1 for d in dots if d < 0)
        return {"agem_projected_fraction": negative / len(dots)}

    def extra_state(self) -> dict[str, Any]:
        return {"memory": self.memory.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.memory.load(state["memory"])
