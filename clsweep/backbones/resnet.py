"""ResNet-18/34/50/101/152 (He et al. 2016) and their HAT-gated twins.

Two classes, :class:`ResNet` and :class:`HATMaskResNet`, take the depth as an argument; the
registry binds it per name (``resnet18`` ... ``hat_mask_resnet152``) from one depth table,
:data:`~clsweep.spec.components.RESNET_DEPTHS`.

Layer names, in forward order: ``conv1`` (stem), then per block ``layer{s}/{b}/conv1``,
``conv2`` (``conv3`` for bottlenecks) and, where the block changes stride or width, the 1x1
projection ``layer{s}/{b}/shortcut``. The feature is the global average of the last stage, so
``output_dim = 8 * base_width * expansion`` (512 for ResNet-18, 2048 for ResNet-50 at width 64).
``small_input=True`` uses a 3x3 stride-1 stem without max-pooling (CIFAR-sized and smaller
inputs); ``False`` gives the 7x7 stride-2 stem with 3x3 max-pooling.

Hidden features: for the stem and inner convs, the (gated) output after ReLU; for a block's last
conv, the block output ``relu(last conv + shortcut path)``, which is what the next block reads;
for a shortcut projection, its (gated) normalised output before the sum.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from clsweep.backbones.base import CLBackbone, check_stage
from clsweep.backbones.hat import HATMaskBackbone, LayerInput, apply_gate
from clsweep.backbones.task_norm import TaskBatchNorm2d
from clsweep.spec.components import RESNET_DEPTHS, HATMaskResNetParams, ResNetParams

__all__ = ["BasicBlock", "Bottleneck", "HATMaskResNet", "ResNet"]

NormFactory = Callable[[int], nn.Module]


class _Block(nn.Module):
    """A residual block: ``convs`` run in sequence, each followed by its norm ``bn{i}`` (and a
    gate in HAT mode); ReLU between them; the last one is added to the shortcut path (a 1x1
    projection ``shortcut`` + ``shortcut_bn``, or the input itself) and then ReLU."""

    expansion = 1
    convs: tuple[str, ...] = ()
    out_channels: int
    shortcut: nn.Conv2d | None

    def _add_shortcut(self, in_channels: int, stride: int, norm: NormFactory, bias: bool) -> None:
        out = self.out_channels
        if stride != 1 or in_channels != out:
            self.shortcut = nn.Conv2d(in_channels, out, 1, stride, bias=bias)
            self.shortcut_bn = norm(out)
        else:
            self.shortcut = None

    def run(
        self,
        x: Tensor,
        prefix: str,
        mask: dict[str, Tensor] | None,
        task_id: int | None,
        hidden: dict[str, Tensor],
    ) -> Tensor:
        h = x
        for i, conv in enumerate(self.convs):
            h = _norm(getattr(self, f"bn{i + 1}"), getattr(self, conv)(h), task_id)
            if mask is not None:
                h = apply_gate(h, mask[f"{prefix}/{conv}"])
            if i < len(self.convs) - 1:
                h = h.relu()
                hidden[f"{prefix}/{conv}"] = h
        if self.shortcut is not None:
            residual = _norm(self.shortcut_bn, self.shortcut(x), task_id)
            if mask is not None:
                residual = apply_gate(residual, mask[f"{prefix}/shortcut"])
            hidden[f"{prefix}/shortcut"] = residual
        else:
            residual = x
        out = (h + residual).relu()
        hidden[f"{prefix}/{self.convs[-1]}"] = out
        return out


class BasicBlock(_Block):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1
    convs = ("conv1", "conv2")

    def __init__(self, in_channels: int, channels: int, stride: int, norm: NormFactory, bias: bool) -> None:
        super().__init__()
        self.out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=bias)
        self.bn1 = norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=bias)
        self.bn2 = norm(channels)
        self._add_shortcut(in_channels, stride, norm, bias)


class Bottleneck(_Block):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4 (ResNet-50/101/152)."""

    expansion = 4
    convs = ("conv1", "conv2", "conv3")

    def __init__(self, in_channels: int, channels: int, stride: int, norm: NormFactory, bias: bool) -> None:
        super().__init__()
        self.out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=bias)
        self.bn1 = norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=bias)
        self.bn2 = norm(channels)
        self.conv3 = nn.Conv2d(channels, self.out_channels, 1, bias=bias)
        self.bn3 = norm(self.out_channels)
        self._add_shortcut(in_channels, stride, norm, bias)


def _norm(module: nn.Module, x: Tensor, task_id: int | None) -> Tensor:
    return module(x, task_id) if isinstance(module, TaskBatchNorm2d) else module(x)


_BLOCKS: dict[str, type[_Block]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _depth_plan(depth: int) -> tuple[type[_Block], tuple[int, int, int, int]]:
    """Block class and blocks per stage of a depth in :data:`~clsweep.spec.components.RESNET_DEPTHS`."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"ResNet depth must be one of {', '.join(map(str, RESNET_DEPTHS))}; got {depth}")
    block, counts = RESNET_DEPTHS[depth]
    return _BLOCKS[block], counts


def _build(
    module: Any,
    input_shape: tuple[int, ...],
    depth: int,
    base_width: int,
    small_input: bool,
    norm: NormFactory,
    bias: bool,
) -> dict[str, LayerInput]:
    """Attach stem and stages to ``module``; return each weighted layer's inputs, in forward order.

    The input of a block is the previous block's output ``relu(last conv + shortcut path)``, so
    its units are declared as the union (max) of the last conv and the shortcut conv, or, for an
    identity shortcut, of the last conv and whatever fed that block.
    """
    if len(input_shape) != 3:
        raise ValueError(f"ResNet needs (C, H, W) inputs; got input_shape {input_shape}")
    if base_width < 1:
        raise ValueError(f"base_width must be >= 1; got {base_width}")
    block_cls, blocks_per_stage = _depth_plan(depth)
    if small_input:
        module.conv1 = nn.Conv2d(input_shape[0], base_width, 3, 1, 1, bias=bias)
    else:
        module.conv1 = nn.Conv2d(input_shape[0], base_width, 7, 2, 3, bias=bias)
    module.bn1 = norm(base_width)
    module.stem_pool = not small_input
    inputs: dict[str, LayerInput] = {"conv1": LayerInput()}
    sources: tuple[str, ...] = ("conv1",)
    in_channels = base_width
    for stage, count in enumerate(blocks_per_stage, start=1):
        blocks = []
        for b in range(count):
            stride = 2 if stage > 1 and b == 0 else 1
            block = block_cls(in_channels, base_width * 2 ** (stage - 1), stride, norm, bias)
            prefix = f"layer{stage}/{b}"
            for i, conv in enumerate(block.convs):
                inputs[f"{prefix}/{conv}"] = LayerInput(
                    sources if i == 0 else (f"{prefix}/{block.convs[i - 1]}",)
                )
            last = f"{prefix}/{block.convs[-1]}"
            if block.shortcut is not None:
                inputs[f"{prefix}/shortcut"] = LayerInput(sources)
                sources = (last, f"{prefix}/shortcut")
            else:
                sources = (last, *sources)
            in_channels = block.out_channels
            blocks.append(block)
        setattr(module, f"layer{stage}", nn.ModuleList(blocks))
    return inputs


def _run(
    module: Any, x: Tensor, mask: dict[str, Tensor] | None, task_id: int | None
) -> tuple[Tensor, dict[str, Tensor]]:
    hidden: dict[str, Tensor] = {}
    h = _norm(module.bn1, module.conv1(x), task_id)
    if mask is not None:
        h = apply_gate(h, mask["conv1"])
    h = h.relu()
    if module.stem_pool:
        h = nn.functional.max_pool2d(h, 3, 2, 1)
    hidden["conv1"] = h
    for stage in range(1, 5):
        for b, block in enumerate(getattr(module, f"layer{stage}")):
            h = block.run(h, f"layer{stage}/{b}", mask, task_id, hidden)
    return nn.functional.adaptive_avg_pool2d(h, 1).flatten(1), hidden


def _output_dim(depth: int, base_width: int) -> int:
    return 8 * base_width * _depth_plan(depth)[0].expansion


class ResNet(CLBackbone):
    """Plain ResNet with ordinary batch norm shared by all tasks; ``depth`` is one of
    :data:`~clsweep.spec.components.RESNET_DEPTHS` (each registered as ``resnet{depth}``)."""

    def __init__(self, input_shape: tuple[int, ...], *, depth: int, params: ResNetParams) -> None:
        super().__init__(input_shape, output_dim=_output_dim(depth, params.base_width))
        self.depth = depth
        inputs = _build(
            self, self.input_shape, depth, params.base_width, params.small_input, nn.BatchNorm2d, False
        )
        self.weighted_layer_names = list(inputs)

    def forward(  # type: ignore[override]
        self, input: Tensor, stage: str, task_id: int | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        check_stage(stage)
        return _run(self, input, None, None)


class HATMaskResNet(HATMaskBackbone):
    """ResNet with a HAT gate on the channels of every convolution, the 1x1 shortcut
    projections included; registered as ``hat_mask_resnet{depth}``.

    How old tasks are kept undisturbed:

    * Shortcuts: each projection conv has its own task embedding and mask, like any conv, so
      HAT's gradient conditioning protects its weights too (an unmasked shortcut would keep
      training on old tasks' channels). The gate is applied after its norm, before the sum.
      Identity shortcuts have no weights. A block's output channel is
      ``relu(gated last conv + shortcut path)``; it is zero for a task only where both paths are
      closed, so the units a layer reads are declared (``layer_inputs``) as the max of the
      contributing paths, and parameter-wise measures use that max.
    * Batch norm, ``norm='task_batch'``: every task gets its own BN layers
      (:class:`TaskBatchNorm2d`), created by ``setup_task_id(t)``; a pass for task ``t`` uses and
      updates only task ``t``'s statistics and affine parameters, so training a new task cannot
      shift an old task's normalisation. Tests with per-sample task ids run task by task.
      ``norm='none'``: no BN at all; convolutions get a bias instead.
    """

    def __init__(self, input_shape: tuple[int, ...], *, depth: int, params: HATMaskResNetParams) -> None:
        super().__init__(input_shape, output_dim=_output_dim(depth, params.base_width), gate=params.gate)
        self.depth = depth
        self.norm = norm = params.norm
        self.task_specific_modules = norm == "task_batch"
        factory: NormFactory = TaskBatchNorm2d if norm == "task_batch" else (lambda _: nn.Identity())
        inputs = _build(
            self, self.input_shape, depth, params.base_width, params.small_input, factory, norm == "none"
        )
        self.register_hat_layers(inputs)

    def setup_task_id(self, task_id: int) -> None:
        """Record the task and, with per-task batch norm, create its BN layers if new."""
        super().setup_task_id(task_id)
        for module in self.modules():
            if isinstance(module, TaskBatchNorm2d):
                module.add_task(int(task_id))

    def masked_forward(
        self, input: Tensor, mask: dict[str, Tensor], task_id: int | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return _run(self, input, mask, task_id)
