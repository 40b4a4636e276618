"""The small AlexNet-like CNN of the HAT paper (Serra et al. 2018, §4) and its HAT-gated twin.

Three convolutions (64/128/256 filters by default) with kernel sizes ``H // 8``, ``H // 10`` and
2, where ``H`` is the input height; each is followed by ReLU, dropout and 2x2 max-pooling; then
fully connected layers (2048-2048 by default), each with ReLU and dropout. Dropout is
``dropout_conv`` on the first two convolutions and ``dropout_fc`` on everything after, as in the
paper's code. The feature is the last fully connected layer's output.

Tiny inputs (the 8x8 digits) are handled: a kernel is at least 1 and at most the current spatial
size, and pooling is skipped when the spatial size is below 2, so the network always builds.
For 32x32 inputs this gives kernels 4/3/2 and a 256x2x2 map before the first fc, as in the paper.
Layers are named ``conv/0..2`` and ``fc/0..`` in forward order.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from clsweep.backbones.base import CLBackbone, check_stage
from clsweep.backbones.hat import HATMaskBackbone, LayerInput, apply_gate
from clsweep.spec.components import AlexNetParams, HATMaskAlexNetParams

__all__ = ["AlexNet", "HATMaskAlexNet", "alexnet_plan"]


def alexnet_plan(height: int, width: int) -> tuple[list[tuple[int, bool]], tuple[int, int]]:
    """Kernel size and whether to pool for each of the three convolutions, and the final
    spatial size ``(h, w)`` of the last convolution's output."""
    plan: list[tuple[int, bool]] = []
    h, w = height, width
    for wanted in (height // 8, height // 10, 2):
        k = max(1, min(wanted, h, w))
        h, w = h - k + 1, w - k + 1
        pool = min(h, w) >= 2
        if pool:
            h, w = h // 2, w // 2
        plan.append((k, pool))
    return plan, (h, w)


def _output_dim(params: AlexNetParams) -> int:
    return int(params.fc_dims[-1]) if params.fc_dims else 0


def _build(module: Any, input_shape: tuple[int, ...], params: AlexNetParams) -> list[str]:
    """Attach ``conv``, ``fc`` and ``dropout`` to ``module``; return the layer names in order."""
    channels, fc_dims = params.channels, params.fc_dims
    if len(input_shape) != 3:
        raise ValueError(f"AlexNet needs (C, H, W) inputs; got input_shape {input_shape}")
    if len(channels) != 3 or not fc_dims or any(int(c) < 1 for c in [*channels, *fc_dims]):
        raise ValueError(f"need 3 positive conv channels and >= 1 fc size; got {channels}, {fc_dims}")
    plan, (h, w) = alexnet_plan(input_shape[1], input_shape[2])
    in_channels = [input_shape[0], *channels[:-1]]
    module.conv = nn.ModuleList(
        nn.Conv2d(i, o, k) for i, o, (k, _) in zip(in_channels, channels, plan, strict=True)
    )
    module.pool = [p for _, p in plan]
    module.flatten_repeat = h * w
    dims = [channels[-1] * h * w, *fc_dims]
    module.fc = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(len(fc_dims)))
    module.dropout = nn.ModuleList(
        nn.Dropout(params.dropout_conv if i < 2 else params.dropout_fc) for i in range(3 + len(fc_dims))
    )
    return [f"conv/{i}" for i in range(3)] + [f"fc/{i}" for i in range(len(fc_dims))]


def _run(module: Any, x: Tensor, mask: dict[str, Tensor] | None) -> tuple[Tensor, dict[str, Tensor]]:
    """The forward pass; with ``mask`` every layer's output is gated."""
    hidden: dict[str, Tensor] = {}
    layers = [*module.conv, *module.fc]
    for i, (name, layer) in enumerate(zip(module.weighted_layer_names, layers, strict=True)):
        if i == 3:
            x = x.flatten(1)
        x = module.dropout[i](layer(x).relu())
        if i < 3 and module.pool[i]:
            x = nn.functional.max_pool2d(x, 2)
        if mask is not None:
            x = apply_gate(x, mask[name])
        hidden[name] = x
    return x, hidden


class AlexNet(CLBackbone):
    """AlexNet-like CNN of the HAT paper, no gates, no batch norm."""

    flatten_repeat: int  # spatial positions per channel of the last conv, flattened into fc/0

    def __init__(self, input_shape: tuple[int, ...], *, params: AlexNetParams) -> None:
        super().__init__(input_shape, output_dim=_output_dim(params))
        self.weighted_layer_names = _build(self, self.input_shape, params)

    def forward(  # type: ignore[override]
        self, input: Tensor, stage: str, task_id: int | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        check_stage(stage)
        return _run(self, input, None)


class HATMaskAlexNet(HATMaskBackbone):
    """AlexNet-like CNN with a HAT mask on every convolution's channels (applied after ReLU,
    dropout and pooling) and on every fully connected layer's units. No batch norm.

    The first fc layer reads the last convolution's channels flattened over its ``h * w``
    positions, declared as ``LayerInput(('conv/2',), repeat=h * w)``.
    """

    flatten_repeat: int

    def __init__(self, input_shape: tuple[int, ...], *, params: HATMaskAlexNetParams) -> None:
        super().__init__(input_shape, output_dim=_output_dim(params), gate=params.gate)
        names = _build(self, self.input_shape, params)
        inputs = {names[0]: LayerInput()}
        for i in range(1, len(names)):
            inputs[names[i]] = LayerInput((names[i - 1],), self.flatten_repeat if i == 3 else 1)
        self.register_hat_layers(inputs)

    def masked_forward(
        self, input: Tensor, mask: dict[str, Tensor], task_id: int | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return _run(self, input, mask)
