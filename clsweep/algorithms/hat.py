"""HAT: Hard Attention to the Task (Serra, Suris, Miron, Karatzoglou; ICML 2018).

Each task learns a gate a = sigmoid(s e) per unit of every weighted layer (e: the task embedding,
s: a scale annealed within each epoch up to s_max). At the end of a task its mask is stored and
test-time forwards of task j use j's stored mask: binary (e > 0) by default, or, with
`test_mask: soft`, sigmoid(s_max e) as in the authors' code, which also enters the cumulative
mask unthresholded (a small s_max then leaves old weights partly trainable). Weights that old
tasks use get no gradient: each weight gradient is scaled by 1 - agg(a_i, a_j) of the cumulative
mask of previous tasks (agg = min in the paper, Eq. 2; 'max' protects a superset). The loss adds an
attention-weighted sparsity term over the free capacity (Eqs. 4-5), the embedding gradient is
compensated for the annealing (§2.5), gradients are norm-clipped and embeddings clamped to
[-6, 6] after each step (§2.5 and the authors' code).

Requirements met by the loop and the validator: a fresh optimiser per task and no weight decay
(either would move protected weights), per-task heads (TIL), dropout off at evaluation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from clsweep.algorithms.base import CLAlgorithm
from clsweep.backbones.hat import HATMaskBackbone
from clsweep.spec.methods.hat import HATParams

__all__ = ["HAT"]


class HAT(CLAlgorithm):
    """HAT over a :class:`~clsweep.backbones.hat.HATMaskBackbone`; hyperparameters in ``self.params``
    (:class:`~clsweep.spec.methods.hat.HATParams`, where each one's default and source are written)."""

    backbone: HATMaskBackbone
    params: HATParams

    def __init__(self, backbone: HATMaskBackbone, heads: nn.Module, *, params: HATParams) -> None:
        super().__init__(backbone, heads, params=params)
        self._s = 1.0 / params.s_max
        self._embeddings: list[nn.Parameter] = []
        self._trainable: list[nn.Parameter] = []
        self._train_mask: dict[str, Tensor] = {}
        self._protected: list[tuple[Tensor, Tensor]] = []  # (parameter, gradient multiplier)
        self._free: dict[str, Tensor] = {}
        self._free_total = 0.0
        self._cumulative_before: dict[str, Tensor] = {}

    # ---- task boundaries --------------------------------------------------------------------
    def on_task_start(self, task_id: int) -> None:
        self.backbone.initialise_task_embedding(self.params.init_mode)
        # looked up once per task, not per step (module traversal costs ~0.1 ms a step)
        self._embeddings = self.backbone.embedding_parameters()
        self._trainable = [p for p in self.parameters() if p.requires_grad]
        cumulative = {k: v.detach().clone() for k, v in self.backbone.get_cumulative_mask().items()}
        self._cumulative_before = cumulative
        self._free = {k: 1.0 - v for k, v in cumulative.items()}
        self._free_total = float(sum(f.sum() for f in self._free.values()))
        self._protected = self._gradient_multipliers(cumulative) if task_id > 1 else []

    def _gradient_multipliers(self, cumulative: dict[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
        """1 - parameter-wise measure of the cumulative mask, computed once per task."""
        pairs = []
        for name in self.backbone.weighted_layer_names:
            layer: Any = self.backbone.get_layer_by_name(name)
            weight_measure, bias_measure = self.backbone.get_layer_measure_parameter_wise(
                cumulative, name, self.params.aggregation
            )
            pairs.append((layer.weight, 1.0 - weight_measure.detach().clone()))
            if getattr(layer, "bias", None) is not None and bias_measure is not None:
                pairs.append((layer.bias, 1.0 - bias_measure.detach().clone()))
        return pairs

    def on_task_end(self, task_id: int) -> None:
        soft_scale = self.params.s_max if self.params.test_mask == "soft" else None
        mask = self.backbone.store_task_mask(task_id, soft_scale=soft_scale)
        self._last_mask = {k: (v.detach() > 0.5).float() for k, v in mask.items()}  # units in use

    def diagnostics(self) -> dict[str, float]:
        """Capacity used per layer (share of units in the cumulative mask), units newly claimed
        by the task, and overlap (share of the task's units already used by earlier tasks)."""
        out: dict[str, float] = {}
        cumulative = self.backbone.get_cumulative_mask()
        caps, overlaps = [], []
        for name, task_mask in getattr(self, "_last_mask", {}).items():
            before = self._cumulative_before.get(name, torch.zeros_like(task_mask))
            capacity = float((cumulative[name] > 0.5).float().mean())
            used = float(task_mask.sum())
            overlap = float((task_mask * (before > 0.5).float()).sum()) / used if used else 0.0
            out[f"capacity/{name}"] = capacity
            out[f"new_units/{name}"] = float((task_mask * (before <= 0.5).float()).sum())
            out[f"overlap/{name}"] = overlap
            caps.append(capacity)
            overlaps.append(overlap)
        if caps:
            out["capacity_mean"] = sum(caps) / len(caps)
            out["overlap_mean"] = sum(overlaps) / len(overlaps)
        return out

    # ---- forward and loss ---------------------------------------------------------------------
    def forward(self, x: Tensor, stage: str, task_id: int) -> tuple[Tensor, dict[str, Tensor]]:  # type: ignore[override]
        if stage == "train":
            feature, mask, hidden = self.backbone(
                x,
                stage="train",
                task_id=task_id,
                s_max=self.params.s_max,
                batch_idx=self._batch,
                num_batches=self.num_batches,
            )
            self._train_mask = mask
        elif stage == "validation":
            feature, mask, hidden = self.backbone(
                x, stage="validation", task_id=task_id, s_max=self.params.s_max
            )
        else:
            feature, mask, hidden = self.backbone(x, stage="test", task_id=task_id)
        return self.heads(feature, task_id), hidden

    def validation_loss(self, x: Tensor, y: Tensor, task_id: int) -> Tensor:
        """CE + c * R at the gates of s_max (the current task's mask is not stored yet): the
        criterion joansj/hat's ``eval`` returns (src/approaches/hat.py), which its lr schedule and
        best-epoch choice read."""
        feature, mask, _ = self.backbone(x, stage="validation", task_id=task_id, s_max=self.params.s_max)
        loss_cls = nn.functional.cross_entropy(self.heads(feature, task_id), y)
        return loss_cls + self.params.sparsity_strength * self.sparsity(mask)

    def sparsity(self, mask: dict[str, Tensor]) -> Tensor:
        """Eq. 5: attention on free units, pooled over all layers, over the free capacity."""
        if self._free_total <= self.params.min_free_units:
            return torch.zeros((), device=next(iter(mask.values())).device)
        used = sum((mask[k] * self._free[k]).sum() for k in mask)
        return used / self._free_total  # type: ignore[return-value]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Any]:  # type: ignore[override]
        x, y = batch[0], batch[1]
        self._batch = batch_idx + 1  # HAT's Eq. 3 counts batches from 1
        self._s = self.backbone.anneal_scalar(self.params.s_max, self._batch, self.num_batches)
        logits, hidden = self(x, stage="train", task_id=self.task_id)
        loss_cls = self.criterion(logits, y)
        reg = self.sparsity(self._train_mask)
        return {
            "loss": loss_cls + self.params.sparsity_strength * reg,
            "loss_cls": loss_cls,
            "loss_reg": reg.detach(),
            "acc": (logits.argmax(1) == y).float().mean(),
            "hidden_features": hidden,
        }

    # ---- gradient surgery ---------------------------------------------------------------------
    def condition_weight_gradients(self) -> None:
        """Scale the gradients of parameters used by previous tasks (HAT: 1 - measure)."""
        pairs = [(p.grad, m) for p, m in self._protected if p.grad is not None]
        if pairs:
            grads, multipliers = zip(*pairs, strict=True)
            torch._foreach_mul_(list(grads), list(multipliers))

    def compensate_embedding_gradients(self) -> None:
        """§2.5: undo the annealed sigmoid's slope, use a slope-s_max one instead."""
        s, s_max, thr = self._s, self.params.s_max, self.params.compensation_clamp
        for e in self._embeddings:
            if e.grad is None:
                continue
            with torch.no_grad():
                num = torch.cosh(torch.clamp(e * s, -thr, thr)).add_(1.0)
                e.grad.mul_(num.div_(torch.cosh(e).add_(1.0)).mul_(s_max / s))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:  # type: ignore[override]
        self.condition_weight_gradients()
        self.compensate_embedding_gradients()
        if self.params.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for p in self._trainable if p.grad is not None], self.params.grad_clip_norm
            )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:  # type: ignore[override]
        with torch.no_grad():
            for e in self._embeddings:
                e.clamp_(-self.params.embedding_clamp, self.params.embedding_clamp)
