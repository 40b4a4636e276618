"""CBPHAT: AdaHAT with continual backpropagation's contribution utility as extra unit importance.

The HAT + continual-backpropagation variant of the AdaHAT authors' library (CLArena
clarena/cl_algorithms/cbphat.py, March-April 2025, the precursor of FG-AdaHAT), with the
contribution utility of Dohare et al. (Nature 2024). Everything of AdaHAT stays; the parameter
importance gains a term learned from the activations:

1. every training step, per gated layer l and unit i, the contribution utility times the current
   (annealed) mask, v_li = mean_batch |h_li| * sum_k |w_out_lik| * m_li, is min-max normalised
   over the layer's units (a layer whose units all score alike gives 0) and accumulated,
   U_l <- eta U_l + v_l (eta: `utility_decay`);
2. at the end of the task the unit importance grows by the decayed sum divided by the task's
   step count, I_l += U_l / steps (the reference's formula). With eta < 1 this is not a mean of
   the step utilities: U_l tends to v / (1 - eta) while steps keeps growing, so for a constant v
   and eta 0.99 the increment is 0.96 v after 10 steps, 0.63 v after 100 and 0.10 v after 1000.
   CBPHAT's weight on the utility therefore shrinks as epochs x batches per task grow;
3. the parameter importance is I spread over the parameters with the HAT `aggregation` knob
   (min or max of the two units' importance, as for the masks), added to AdaHAT's summative-mask
   importance: a* = r / (I_param + M_sum_param + r), r = alpha / (R_l + eps).

Choices, where the reference is silent or differs:

* h is the hidden feature the backbone reports for the layer: the gated output after the
  activation (for a ResNet block's last convolution, the block output after the residual sum).
  It already carries the mask, and v multiplies by the mask again, exactly as the reference does.
* The outgoing weights of unit i are the weights that read it: the columns of every gated layer
  whose input includes the layer (summed over output units, kernel positions and, after a
  flatten, the unit's positions), as in the paper's contribution utility. The reference used the
  unit's incoming weights (``layer.weight`` rows) instead.
* A layer no gated layer reads (the feature layer) has the current task's head as its outgoing
  weights, the only classifier it feeds during the task; if the heads expose no matching linear
  layer, its incoming weights are used, as in the reference. In ResNets a unit that reaches the
  feature only through identity shortcuts does not count the head.
* At a residual sum the input unit's importance is the max over the paths (the backbone's
  generic rule), while the summative-mask part counts tasks per unit (see AdaHAT).

Utility, step count and unit importance are buffers, so a checkpoint restores them exactly (and a
schedule that restores the best epoch's state restores the utility gathered up to that epoch).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from clsweep.algorithms.adahat import AdaHAT
from clsweep.backbones.hat import HATMaskBackbone
from clsweep.backbones.mask_store import UnitBuffers
from clsweep.spec.methods.hat import CBPHATParams

__all__ = ["CBPHAT"]


def min_max_normalise(v: Tensor) -> Tensor:
    """``(v - min) / (max - min)`` over the units; zeros when all units score the same."""
    low, span = v.min(), v.max() - v.min()
    return torch.where(span > 0, (v - low) / span.clamp_min(torch.finfo(v.dtype).tiny), torch.zeros_like(v))


class CBPHAT(AdaHAT):
    """CBPHAT over a HAT-mask backbone: AdaHAT's hyperparameters plus ``utility_decay``
    (:class:`~clsweep.spec.methods.hat.CBPHATParams`)."""

    params: CBPHATParams
    utility_steps: Tensor
    """Training steps of the current task so far (CLArena's `age_t`)."""

    def __init__(self, backbone: HATMaskBackbone, heads: nn.Module, *, params: CBPHATParams) -> None:
        super().__init__(backbone, heads, params=params)
        self.utility = UnitBuffers(backbone.mask_units)
        """U of the current task, per gated layer (reset at each task start)."""
        self.unit_importance = UnitBuffers(backbone.mask_units)
        """I over the finished tasks: the sum of their U / steps at each task's end."""
        self.register_buffer("utility_steps", torch.zeros((), dtype=torch.long))
        # consumers[source] = [(layer reading it, repeat)], from the backbone's declared inputs
        self._consumers: dict[str, list[tuple[str, int]]] = {n: [] for n in backbone.weighted_layer_names}
        for name, spec in backbone.layer_inputs.items():
            for source in spec.sources:
                self._consumers[source].append((name, spec.repeat))

    # ---- the contribution utility -------------------------------------------------------------
    def outgoing_weight_sum(self, name: str) -> Tensor:
        """sum_k |w_out_ik| for every unit i of layer ``name`` (see the module docstring)."""
        units = self.backbone.mask_units[name]
        consumers = self._consumers[name]
        if not consumers:
            return self._head_weight_sum(name, units)
        total: Tensor | None = None
        for consumer, repeat in consumers:
            weight: Tensor = self.backbone.get_layer_by_name(consumer).weight  # type: ignore[assignment]
            per_column = weight.detach().abs().sum(dim=[d for d in range(weight.dim()) if d != 1])
            part = per_column.view(units, repeat).sum(dim=1)
            total = part if total is None else total + part
        assert total is not None
        return total

    def _head_weight_sum(self, name: str, units: int) -> Tensor:
        heads_for = getattr(self.heads, "heads_for", None)
        modules = heads_for(self.task_id) if heads_for is not None else []
        weights = [m.weight for m in modules if isinstance(m, nn.Linear) and m.in_features == units]
        if weights:
            return sum(w.detach().abs().sum(dim=0) for w in weights)  # type: ignore[return-value]
        weight: Tensor = self.backbone.get_layer_by_name(name).weight  # type: ignore[assignment]
        return weight.detach().abs().sum(dim=list(range(1, weight.dim())))

    def step_utility(self, hidden: dict[str, Tensor], mask: dict[str, Tensor]) -> dict[str, Tensor]:
        """v_l of one step before normalisation: mean |h| x outgoing |w| x current mask."""
        out = {}
        for name in self.backbone.weighted_layer_names:
            h = hidden[name].detach()
            activation = h.abs().mean(dim=[d for d in range(h.dim()) if d != 1])
            out[name] = activation * self.outgoing_weight_sum(name) * mask[name].detach()
        return out

    # ---- hooks --------------------------------------------------------------------------------
    def on_task_start(self, task_id: int) -> None:
        for buffer in self.utility.buffers():
            buffer.zero_()
        self.utility_steps.zero_()
        super().on_task_start(task_id)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:  # type: ignore[override]
        super().on_train_batch_end(outputs, batch, batch_idx)
        with torch.no_grad():
            decay = self.params.utility_decay
            for name, v in self.step_utility(outputs["hidden_features"], self._train_mask).items():
                u = self.utility.get_buffer(name)
                u.mul_(decay).add_(min_max_normalise(v))
            self.utility_steps.add_(1)

    def on_task_end(self, task_id: int) -> None:
        super().on_task_end(task_id)
        steps = int(self.utility_steps)
        if steps == 0:
            return
        with torch.no_grad():
            for name in self.backbone.weighted_layer_names:
                self.unit_importance.get_buffer(name).add_(self.utility.get_buffer(name) / steps)

    def layer_importance(self, name: str) -> tuple[Tensor, Tensor | None]:
        """AdaHAT's summative-mask importance plus the unit importance I spread over the
        parameters with the ``aggregation`` knob."""
        w_sum, b_sum = super().layer_importance(name)
        w_unit, b_unit = self.backbone.get_layer_measure_parameter_wise(
            self.unit_importance.as_dict(), name, self.params.aggregation
        )
        bias = None if b_sum is None or b_unit is None else b_sum + b_unit
        return w_sum + w_unit, bias

    def diagnostics(self) -> dict[str, float]:
        """HAT's diagnostics plus the mean unit importance per layer."""
        out = super().diagnostics()
        for name in self.backbone.weighted_layer_names:
            out[f"unit_importance/{name}"] = float(self.unit_importance.get_buffer(name).mean())
        return out
