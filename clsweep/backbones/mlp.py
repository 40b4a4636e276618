"""Fully connected backbones: :class:`MLP` and its HAT-gated twin :class:`HATMaskMLP`.

The input is flattened; each hidden layer is ``Linear -> (BatchNorm) -> ReLU -> Dropout``. The
feature the heads read is the last hidden layer's output, so ``output_dim = hidden_dims[-1]``.
Layers are named ``fc/0``, ``fc/1``, ... in forward order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from clsweep.backbones.base import CLBackbone, check_stage
from clsweep.backbones.hat import HATMaskBackbone, LayerInput, apply_gate

__all__ = ["MLP", "HATMaskMLP"]


def _linear_stack(in_features: int, hidden_dims: Sequence[int]) -> nn.ModuleList:
    dims = [in_features, *(int(d) for d in hidden_dims)]
    if len(dims) < 2 or any(d < 1 for d in dims):
        raise ValueError(f"hidden_dims must be a non-empty list of positive sizes; got {list(hidden_dims)}")
    return nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(len(dims) - 1))


class MLP(CLBackbone):
    """Multi-layer perceptron with ReLU, optional batch norm (shared by all tasks) and dropout."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        *,
        hidden_dims: Sequence[int] = (256, 256),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__(input_shape, output_dim=int(hidden_dims[-1]) if hidden_dims else 0)
        self.fc = _linear_stack(math.prod(self.input_shape), hidden_dims)
        self.bn = nn.ModuleList(nn.BatchNorm1d(int(d)) if batch_norm else nn.Identity() for d in hidden_dims)
        self.dropout = nn.Dropout(dropout)
        self.weighted_layer_names = [f"fc/{i}" for i in range(len(self.fc))]

    def forward(  # type: ignore[override]
        self, input: Tensor, stage: str, task_id: int | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        check_stage(stage)
        x = input.flatten(1)
        hidden: dict[str, Tensor] = {}
        for i, (fc, bn) in enumerate(zip(self.fc, self.bn, strict=True)):
            x = self.dropout(bn(fc(x)).relu())
            hidden[f"fc/{i}"] = x
        return x, hidden


class HATMaskMLP(HATMaskBackbone):
    """MLP whose every hidden layer (the feature layer included) is gated by a HAT mask.

    Layer ``fc/i``: ``Linear -> ReLU -> Dropout -> x mask``. No batch norm: its running statistics
    would be shared by all tasks and drift as new tasks train.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        *,
        hidden_dims: Sequence[int] = (256, 256),
        dropout: float = 0.0,
        gate: str = "sigmoid",
    ) -> None:
        super().__init__(input_shape, output_dim=int(hidden_dims[-1]) if hidden_dims else 0, gate=gate)
        self.fc = _linear_stack(math.prod(self.input_shape), hidden_dims)
        self.dropout = nn.Dropout(dropout)
        names = [f"fc/{i}" for i in range(len(self.fc))]
        self.register_hat_layers(
            {name: LayerInput(() if i == 0 else (names[i - 1],)) for i, name in enumerate(names)}
        )

    def masked_forward(
        self, input: Tensor, mask: dict[str, Tensor], task_id: int | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        x = input.flatten(1)
        hidden: dict[str, Tensor] = {}
        for i, fc in enumerate(self.fc):
            name = f"fc/{i}"
            x = apply_gate(self.dropout(fc(x).relu()), mask[name])
            hidden[name] = x
        return x, hidden
