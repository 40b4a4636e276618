"""AdaHAT: HAT with adaptive soft gradient clipping (Wang, Bo, Hong, Liu, Mu; ECML PKDD 2024).

Everything of HAT stays (gates, annealing, sparsity term, compensation, stored masks) except the
hard freeze: a parameter's gradient is scaled by a* = r / (I + r) instead of 1 - measure, where
I is the parameter's importance (the summative mask, i.e. how many previous tasks used each unit,
aggregated to parameters with the same min/max `aggregation` knob as HAT; AdaHAT Eq. 7-9) and
r = alpha / (R_l + eps) with R_l the layer's current sparsity: the share of free units the
current (soft, annealed) mask takes. Unused parameters (I = 0) stay fully plastic; heavily used
ones are damped, more so while the new task is still claiming free units.

alpha and the optimiser (see notes §3.4): the reference uses Adam (lr 1e-3), whose normalised
update hides a constant gradient scale k unless k |g| approaches Adam's eps (1e-8): useful alpha
there is about 1e-7..1e-5 (default 1e-6, every AdaHAT config). With plain SGD the update is
proportional to the scaled gradient, so the same alpha freezes old weights almost like HAT; the
useful range moves up to about 1e-3..1.

Ablations of the reference (`variant`): `no_summative` replaces I by the number of previous
tasks for every parameter; `no_sparsity` sets R_l = 0 (constant r = alpha / eps);
`constant_alpha` multiplies the gradients of protected parameters by alpha (HAT-const-alpha).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from clsweep.algorithms.hat import HAT
from clsweep.backbones.hat import HATMaskBackbone
from clsweep.spec.components import AdaHATParams

__all__ = ["AdaHAT"]


class AdaHAT(HAT):
    """AdaHAT over a HAT-mask backbone: HAT's hyperparameters plus ``alpha``, ``eps`` and ``variant``
    (:class:`~clsweep.spec.components.AdaHATParams`)."""

    params: AdaHATParams

    def __init__(self, backbone: HATMaskBackbone, heads: nn.Module, *, params: AdaHATParams) -> None:
        super().__init__(backbone, heads, params=params)
        # (layer name, parameter, importance I, protected-by-HAT indicator)
        self._importance: list[tuple[str, Tensor, Tensor, Tensor]] = []

    def on_task_start(self, task_id: int) -> None:
        super().on_task_start(task_id)
        self._protected = []  # AdaHAT replaces HAT's hard multipliers
        self._importance = []
        if task_id == 1:
            return
        summative = self.backbone.get_summative_mask()
        cumulative = self._cumulative_before
        for name in self.backbone.weighted_layer_names:
            layer: Any = self.backbone.get_layer_by_name(name)
            w_imp, b_imp = self.backbone.get_layer_measure_parameter_wise(
                summative, name, self.params.aggregation
            )
            w_cum, b_cum = self.backbone.get_layer_measure_parameter_wise(
                cumulative, name, self.params.aggregation
            )
            self._importance.append((name, layer.weight, w_imp.detach().clone(), (w_cum > 0).float()))
            if getattr(layer, "bias", None) is not None and b_imp is not None and b_cum is not None:
                self._importance.append((name, layer.bias, b_imp.detach().clone(), (b_cum > 0).float()))
        if self.params.variant == "no_summative":
            self._importance = [
                (n, p, torch.full_like(i, float(task_id - 1)), m) for n, p, i, m in self._importance
            ]

    def layer_sparsity(self) -> dict[str, Tensor]:
        """R_l: share of the layer's free units that the current soft mask takes (no c)."""
        out = {}
        for name, mask in self._train_mask.items():
            free = self._free[name]
            total = free.sum()
            out[name] = (
                (mask.detach() * free).sum() / total
                if total > self.params.min_free_units
                else torch.zeros_like(total)
            )
        return out

    def condition_weight_gradients(self) -> None:
        if not self._importance:
            return
        if self.params.variant == "constant_alpha":
            for _, p, _, protected in self._importance:
                if p.grad is not None:
                    p.grad.mul_(1.0 - protected * (1.0 - self.params.alpha))
            return
        sparsity = self.layer_sparsity() if self.params.variant != "no_sparsity" else {}
        for name, p, importance, _ in self._importance:
            if p.grad is None:
                continue
            r_l = sparsity.get(name)
            rate = self.params.alpha / ((r_l if r_l is not None else 0.0) + self.params.eps)
            # unused parameters (I = 0) stay fully plastic, also in the limit alpha -> 0
            adjustment = torch.where(importance > 0, rate / (importance + rate), torch.ones_like(importance))
            p.grad.mul_(adjustment)
