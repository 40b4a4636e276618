"""Fully connected backbones: :class:`MLP` and its HAT-gated twin :class:`HATMaskMLP`.

The input is flattened and passed through ``input_dropout``; each hidden layer is then
``Linear -> (BatchNorm) -> ReLU -> Dropout``. The feature the heads read is the last hidden layer's
output, so ``output_dim = hidden_dims[-1]``. Layers are named ``fc/0``, ``fc/1``, ... in forward order.
Both dropouts follow the HAT reference MLP (joansj/hat src/networks/mlp_hat.py: ``drop1`` on the input,
``drop2`` after every ReLU, the mask multiplied in after ``drop2``); they are active only in
``train()`` mode, and the task loop evaluates in ``eval()`` mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from clsweep.backbones.base import CLBackbone, check_stage
from clsweep.backbones.hat import HATMaskBackbone, LayerInput, apply_gate
from clsweep.spec.components import HATMaskMLPParams, MLPParams

__all__ = ["MLP", "HATMaskMLP"]


def _linear_stack(in_features: int, hidden_dims: Sequence[int]) -> nn.ModuleList:
    dims = [in_features, *(int(d) for d in hidden_dims)]
    if len(dims) < 2 or any(d < 1 for d in dims):
        raise ValueError(f"hidden_dims must be a non-empty list of positive sizes; got {list(hidden_dims)}")
    return nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(len(dims) - 1))


class MLP(CLBackbone):
    """Multi-layer perceptron with ReLU, optional batch norm (shared by all tasks) and dropout."""

    def __init__(self, input_shape: tuple[int, ...], *, params: MLPParams) -> None:
        dims = params.hidden_dims
        super().__init__(input_shape, output_dim=int(dims[-1]) if dims else 0)
        self.fc = _linear_stack(math.prod(self.input_shape), dims)
        self.bn = nn.ModuleList(nn.BatchNorm1d(int(d)) if params.batch_norm else nn.Identity() for d in dims)
        self.input_dropout = nn.Dropout(params.input_dropout)
        self.dropout = nn.Dropout(params.dropout)
        self.weighted_layer_names = [f"fc/{i}" for i in range(len(self.fc))]
        # identities (no batch norm, dropout of probability 0) are not called: a module call per
        # layer and step is a measurable share of a small MLP's step (benchmarks/bench_loop.py)
        self._batch_norm, self._input_drop, self._drop = (
            bool(params.batch_norm),
            params.input_dropout > 0,
            params.dropout > 0,
        )

    def forward(  # type: ignore[override]
        self, input: Tensor, stage: str, task_id: int | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        check_stage(stage)
        x = input.flatten(1)
        if self._input_drop:
            x = self.input_dropout(x)
        hidden: dict[str, Tensor] = {}
        for name, fc, bn in zip(self.weighted_layer_names, self.fc, self.bn, strict=True):
            x = fc(x)
            x = (bn(x) if self._batch_norm else x).relu()
            if self._drop:
                x = self.dropout(x)
            hidden[name] = x
        return x, hidden


class HATMaskMLP(HATMaskBackbone):
    """MLP whose every hidden layer (the feature layer included) is gated by a HAT mask.

    Input: ``flatten -> Dropout(input_dropout)`` (no mask). Layer ``fc/i``:
    ``Linear -> ReLU -> Dropout -> x mask``, as in joansj/hat's mlp_hat.py. No batch norm: its running
    statistics would be shared by all tasks and drift as new tasks train.
    """

    def __init__(self, input_shape: tuple[int, ...], *, params: HATMaskMLPParams) -> None:
        dims = params.hidden_dims
        super().__init__(input_shape, output_dim=int(dims[-1]) if dims else 0, gate=params.gate)
        self.fc = _linear_stack(math.prod(self.input_shape), dims)
        self.input_dropout = nn.Dropout(params.input_dropout)
        self.dropout = nn.Dropout(params.dropout)
        self._input_drop, self._drop = params.input_dropout > 0, params.dropout > 0  # as MLP's
        names = [f"fc/{i}" for i in range(len(self.fc))]
        self.register_hat_layers(
            {name: LayerInput(() if i == 0 else (names[i - 1],)) for i, name in enumerate(names)}
        )

    def masked_forward(
        self, input: Tensor, mask: dict[str, Tensor], task_id: int | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        x = input.flatten(1)
        if self._input_drop:
            x = self.input_dropout(x)
        hidden: dict[str, Tensor] = {}
        for i, fc in enumerate(self.fc):
            name = f"fc/{i}"
            x = fc(x).relu()
            x = apply_gate(self.dropout(x) if self._drop else x, mask[name])
            hidden[name] = x
        return x, hidden
