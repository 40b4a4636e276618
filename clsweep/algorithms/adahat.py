"""AdaHAT: HAT with adaptive soft gradient clipping (Wang, Bo, Hong, Liu, Mu; ECML PKDD 2024).

Everything of HAT stays (gates, annealing, sparsity term, compensation, stored masks) except the
hard freeze: a parameter's gradient is scaled by a* = r / (I + r) instead of 1 - measure, where
I is the parameter's importance (the summative mask, i.e. how many previous tasks used each unit,
aggregated to parameters with the same min/max `aggregation` knob as HAT; AdaHAT Eq. 7-9) and
r = alpha / (R_l + eps) with R_l the layer's current sparsity: the share of free units the
current (soft, annealed) mask takes. Unused parameters (I = 0) stay fully plastic; heavily used
ones are damped, more so while the new task is still claiming free units. With `test_mask: soft`
the summative mask sums the stored soft masks sigmoid(s_max e).

At a residual sum (ResNets) the input units a layer reads are the sum of several gated paths. The
importance of such a unit counts the tasks that used it through any path (per task the max over
the paths, then the sum over tasks; :meth:`HATMaskBackbone.summative_input_measure`), not the max
of the per-path counts, which would count a unit used by two tasks through different paths once.

alpha and the optimiser (notes §3.4): the reference uses Adam (lr 1e-3), whose normalised update
hides a constant gradient scale k unless k |g| approaches Adam's eps (1e-8), so useful alpha is
about 1e-7..1e-5 there (1e-6 in every AdaHAT config). Plain SGD applies k to the update itself.
Measured on configs/adahat_digits.yaml (5 permuted-digit tasks, MLP 64-256-256, s_max 400, c 0.75,
30 epochs, batch 64, one seed (0), TIL; SGD lr 0.05, Adam lr 1e-3); alpha 0 is HAT:

    SGD   alpha  0 (HAT)  1e-6    1e-4    1e-3    1e-2    0.1     1       10
          ACC    0.8797   0.8797  0.8786  0.8786  0.8763  0.8680  0.8462  0.8028
          BWT    0        0.0000  -0.0007 -0.0007 -0.0049 -0.0216 -0.0655 -0.1247
    Adam  alpha  0 (HAT)  1e-7    1e-6    1e-5    1e-4
          ACC    0.9421   0.9387  0.9164  0.8579  0.8017
          BWT    0        -0.0042 -0.0390 -0.1184 -0.1901
    (Finetuning, SGD: ACC 0.7922, BWT -0.1685)

With SGD, alpha 1e-6 is HAT to four decimals; with Adam the same alpha forgets. The SGD scale that
forgets about as much as Adam at 1e-6 is 0.1..1, so `alpha: null` (the default) takes the train
optimiser's value from :data:`~clsweep.spec.components.ADAHAT_DEFAULT_ALPHA`: 1e-6 for Adam and
AdamW (the paper's), 0.1 for SGD. On this short sequence HAT has free capacity left, so no alpha
beats HAT's ACC; AdaHAT is meant for sequences that exhaust it (notes §3.5).

Ablations of the reference (`variant`): `no_summative` replaces I by the task index t for every
parameter, a* = r / (t + r) (AdaHAT §4.3; CLArena's `adahat_no_sum` divides by `self.task_id`,
1-based), from task 2 on (task 1 has no previous task and is left unconditioned here, where
CLArena's ablation scales task 1's gradients by r / (1 + r) too); `no_sparsity` sets R_l = 0
(constant r = alpha / eps); `constant_alpha` multiplies the gradients of protected parameters by
alpha (HAT-const-alpha; with soft masks, protection is the cumulative soft mask: 1 - m (1 -
alpha)).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from clsweep.algorithms.hat import HAT
from clsweep.backbones.hat import HATMaskBackbone
from clsweep.spec.methods.hat import ADAHAT_DEFAULT_ALPHA, AdaHATParams

__all__ = ["AdaHAT"]


class AdaHAT(HAT):
    """AdaHAT over a HAT-mask backbone: HAT's hyperparameters plus ``alpha``, ``eps`` and ``variant``
    (:class:`~clsweep.spec.methods.hat.AdaHATParams`)."""

    params: AdaHATParams

    def __init__(self, backbone: HATMaskBackbone, heads: nn.Module, *, params: AdaHATParams) -> None:
        super().__init__(backbone, heads, params=params)
        # (layer name, parameter, importance I, cumulative-mask measure: protection by HAT)
        self._importance: list[tuple[str, Tensor, Tensor, Tensor]] = []

    @property
    def alpha(self) -> float:
        """The adjustment intensity: ``params.alpha``, or the train optimiser's default if null."""
        if self.params.alpha is not None:
            return self.params.alpha
        return ADAHAT_DEFAULT_ALPHA[self.train_config.optimizer]

    def layer_importance(self, name: str) -> tuple[Tensor, Tensor | None]:
        """Parameter importance of layer ``name`` (weight, bias): the summative mask of previous
        tasks spread over the parameters, counted per task at residual sums."""
        summative = self.backbone.get_summative_mask()
        return self.backbone.get_layer_measure_parameter_wise(
            summative,
            name,
            self.params.aggregation,
            input_measure=self.backbone.summative_input_measure(name),
        )

    def on_task_start(self, task_id: int) -> None:
        super().on_task_start(task_id)
        self._protected = []  # AdaHAT replaces HAT's hard multipliers
        self._importance = []
        if task_id == 1:
            return
        cumulative = self._cumulative_before
        for name in self.backbone.weighted_layer_names:
            layer: Any = self.backbone.get_layer_by_name(name)
            w_imp, b_imp = self.layer_importance(name)
            w_cum, b_cum = self.backbone.get_layer_measure_parameter_wise(
                cumulative, name, self.params.aggregation
            )
            self._importance.append((name, layer.weight, w_imp.detach().clone(), w_cum))
            if getattr(layer, "bias", None) is not None and b_imp is not None and b_cum is not None:
                self._importance.append((name, layer.bias, b_imp.detach().clone(), b_cum))
        if self.params.variant == "no_summative":
            self._importance = [
                (n, p, torch.full_like(i, float(task_id)), m) for n, p, i, m in self._importance
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

    def adjustment_rate(self, importance: Tensor, sparsity: Tensor | float) -> Tensor:
        """a* = r / (I + r) with r = alpha / (R_l + eps) (AdaHAT Eqs. 8-9); 1 where I = 0, so
        parameters no previous task used stay fully plastic, also in the limit alpha -> 0."""
        rate = self.alpha / (sparsity + self.params.eps)
        return torch.where(importance > 0, rate / (importance + rate), torch.ones_like(importance))

    def condition_weight_gradients(self) -> None:
        if not self._importance:
            return
        if self.params.variant == "constant_alpha":
            for _, p, _, protected in self._importance:
                if p.grad is not None:
                    p.grad.mul_(1.0 - protected * (1.0 - self.alpha))
            return
        sparsity = self.layer_sparsity() if self.params.variant != "no_sparsity" else {}
        for name, p, importance, _ in self._importance:
            if p.grad is not None:
                p.grad.mul_(self.adjustment_rate(importance, sparsity.get(name, 0.0)))
