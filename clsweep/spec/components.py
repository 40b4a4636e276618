"""Declarations of clsweep's built-in components: names, hyperparameters, what each supports.

This module is torch-free on purpose: ``clsweep validate`` checks a config against these models
without importing the implementations. Every default cites where it comes from.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clsweep.registry import register

__all__ = [
    "AdaHATParams",
    "AlexNetParams",
    "HATMaskAlexNetParams",
    "HATMaskMLPParams",
    "HATMaskResNetParams",
    "HATParams",
    "MLPParams",
    "PermutedParams",
    "ResNetParams",
    "RotatedParams",
    "SplitParams",
]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------------

Source = Literal["digits", "synthetic", "mnist", "fashion_mnist", "cifar10", "cifar100"]
SOURCE_MODULES: dict[str, tuple[str, ...]] = {
    "digits": ("sklearn.datasets",), "mnist": ("torchvision.datasets",), "fashion_mnist": ("torchvision.datasets",),
}
"""What each source's loader imports when it first loads (the fork server imports them up front)."""


class _StreamParams(_Params):
    source: Source = "digits"
    """Where the images come from. `digits` (scikit-learn's bundled 8x8 digits) and `synthetic`
    need no files; the torchvision sources read `root` and download only if `download` is true."""
    num_tasks: int = Field(5, ge=1)
    validation_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    """Share of each task's training data held out for validation (stratified, seeded).
    0.1 as in the HAT paper's CIFAR setup (§4)."""
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    """Only for sources without an official test split (digits, synthetic): stratified hold-out."""
    seed: int = 0
    """Benchmark seed: class order, permutations and splits. Fixed across the trials of a sweep
    so that trials are compared on the same task sequence; independent of the trial seed."""
    root: str | None = None
    """Folder with torchvision's on-disk files (e.g. root/MNIST/raw, root/cifar-10-batches-py)."""
    download: bool = False
    """Download missing torchvision files into `root` (needs network; off by default)."""


class PermutedParams(_StreamParams):
    """One fixed pixel permutation per task; every task has the source's full label set."""


class SplitParams(_StreamParams):
    num_tasks: int = Field(5, ge=1)
    classes_per_task: int = Field(2, ge=1)
    """Disjoint class subsets of this size; class order shuffled by the benchmark seed."""
    shuffle_classes: bool = True


class RotatedParams(_StreamParams):
    max_angle: float = Field(180.0, gt=0.0, le=360.0)
    """Task t (1-based) is rotated counter-clockwise by (t - 1) * max_angle / num_tasks degrees
    (task 1 unrotated)."""


register("benchmark", "permuted", "clsweep.benchmarks.streams:PermutedStream", params=PermutedParams,
         summary="a fixed pixel permutation per task (TIL, CIL or DIL)")
register("benchmark", "split", "clsweep.benchmarks.streams:SplitStream", params=SplitParams,
         summary="disjoint class subsets per task, class order by seed (TIL or CIL)",
         paradigms=("til", "cil"))
register("benchmark", "rotated", "clsweep.benchmarks.streams:RotatedStream", params=RotatedParams,
         summary="the same classes rotated by a growing angle per task (DIL or TIL)",
         paradigms=("dil", "til"))


# --------------------------------------------------------------------------------------------
# Backbones
# --------------------------------------------------------------------------------------------


class _HATGate(_Params):
    gate: str = "sigmoid"
    """The gate of the task embedding. Only the sigmoid is HAT (Serra et al. 2018, Eq. 1)."""

    @field_validator("gate")
    @classmethod
    def _sigmoid_only(cls, value: str) -> str:
        if value != "sigmoid":
            raise ValueError(f"gate {value!r} is not supported: HAT's gate is the sigmoid (Serra et al. 2018, Eq. 1)")
        return value


class _HiddenDims(_Params):
    hidden_dims: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)
    """Units per hidden layer; the last one is the feature size the heads read."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @field_validator("hidden_dims")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(d < 1 for d in v):
            raise ValueError("every hidden dimension must be >= 1")
        return v


class MLPParams(_HiddenDims):
    batch_norm: bool = False


class HATMaskMLPParams(_HiddenDims, _HATGate):
    """No batch norm: its statistics would be shared across tasks."""


class AlexNetParams(_Params):
    """The small AlexNet-like CNN of the HAT paper (§4): three convolutions with 64/128/256 filters
    and kernels of size//8, size//10 and 2, each followed by ReLU and 2x2 max-pooling, then two
    fully connected layers of 2048 units."""

    channels: list[int] = Field(default_factory=lambda: [64, 128, 256], min_length=3, max_length=3)
    fc_dims: list[int] = Field(default_factory=lambda: [2048, 2048], min_length=1)
    dropout_conv: float = Field(0.2, ge=0.0, lt=1.0)  # HAT paper §4: 0.2 on the first two layers
    dropout_fc: float = Field(0.5, ge=0.0, lt=1.0)  # HAT paper §4: 0.5 on the rest


class HATMaskAlexNetParams(AlexNetParams, _HATGate):
    pass


class ResNetParams(_Params):
    base_width: int = Field(64, ge=1)
    """Channels of the first stage (64 in He et al. 2016); later stages double it."""
    small_input: bool = True
    """3x3 stride-1 stem without max-pooling (CIFAR-sized inputs); False gives the 7x7 ImageNet stem."""


class HATMaskResNetParams(ResNetParams, _HATGate):
    norm: Literal["task_batch", "none"] = "task_batch"
    """How batch-norm statistics are kept from disturbing old tasks: `task_batch` gives every task
    its own batch-norm layers (statistics and affine), `none` drops batch norm."""


register("backbone", "mlp", "clsweep.backbones.mlp:MLP", params=MLPParams,
         summary="fully connected network, ReLU")
register("backbone", "hat_mask_mlp", "clsweep.backbones.mlp:HATMaskMLP", params=HATMaskMLPParams,
         summary="MLP with a HAT gate on every hidden layer", tags=("hat_mask",))
register("backbone", "alexnet", "clsweep.backbones.alexnet:AlexNet", params=AlexNetParams,
         summary="AlexNet-like CNN of the HAT paper (CIFAR-scale)")
register("backbone", "hat_mask_alexnet", "clsweep.backbones.alexnet:HATMaskAlexNet",
         params=HATMaskAlexNetParams, summary="AlexNet-like CNN with HAT gates", tags=("hat_mask",))
for _depth in (18, 34, 50, 101, 152):
    register("backbone", f"resnet{_depth}", f"clsweep.backbones.resnet:ResNet{_depth}", params=ResNetParams,
             summary=f"ResNet-{_depth} ({'BasicBlock' if _depth < 50 else 'Bottleneck'})")
    register("backbone", f"hat_mask_resnet{_depth}", f"clsweep.backbones.resnet:HATMaskResNet{_depth}",
             params=HATMaskResNetParams, tags=("hat_mask",),
             summary=f"ResNet-{_depth} with a HAT gate on every convolution, shortcuts included")


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------

register("heads", "til", "clsweep.heads.heads:HeadsTIL", paradigms=("til",),
         summary="one linear head per task, created when the task arrives")
register("heads", "cil", "clsweep.heads.heads:HeadsCIL", paradigms=("cil",),
         summary="one head per task, logits of all seen tasks concatenated")
register("heads", "dil", "clsweep.heads.heads:HeadDIL", paradigms=("dil",),
         summary="one shared head for every task")
register("heads", "mtl", "clsweep.heads.heads:HeadsMTL", paradigms=("til",),
         summary="one head per task, routes batches with mixed task ids")
register("heads", "stl", "clsweep.heads.heads:HeadSTL", paradigms=("til", "cil", "dil"),
         summary="a single head for a single-task run (num_tasks: 1)")
register("heads", "masked_multihead", "clsweep.heads.heads:MaskedMultiHead", paradigms=("til",),
         summary="one linear layer over all classes; other tasks' logits masked per sample")


# --------------------------------------------------------------------------------------------
# Algorithms
# --------------------------------------------------------------------------------------------


class HATParams(_Params):
    s_max: float = Field(400.0, gt=0.0)  # HAT paper §4 (grid {25..800}, §4.3)
    sparsity_strength: float = Field(0.75, ge=0.0)  # c in HAT paper Eq. 4; 0.75 from §4
    init_mode: Literal["N01", "U-11", "U01", "U-10", "last"] = "N01"  # HAT paper §4: N(0,1)
    aggregation: Literal["min", "max"] = "min"  # HAT paper Eq. 2 takes the min
    compensation_clamp: float = Field(50.0, gt=0.0)  # |s e| clamp in the cosh, joansj/hat thres_cosh
    embedding_clamp: float = Field(6.0, gt=0.0)  # e clamped to [-6, 6] after each step, joansj/hat thres_emb
    grad_clip_norm: float | None = Field(10000.0, gt=0.0)  # joansj/hat clipgrad (effectively off)
    min_free_units: int = Field(10, ge=0)
    """The sparsity term is 0 when no more than this many free units remain (guards 0/0);
    10 as in CLArena's regulariser."""


class AdaHATParams(HATParams):
    alpha: float = Field(1e-6, ge=0.0)
    """Adjustment intensity; 1e-6 in every AdaHAT config (Adam, lr 1e-3). With Adam useful values
    are about 1e-7..1e-5 (Adam's eps sets the damping); with plain SGD about 1e-3..1."""
    eps: float = Field(0.1, gt=0.0)  # AdaHAT code default epsilon 0.1
    variant: Literal["adahat", "no_summative", "no_sparsity", "constant_alpha"] = "adahat"
    """The reference's ablations: importance replaced by the task count (no_summative), sparsity
    R_l := 0 (no_sparsity), or a constant alpha multiplier on protected parameters (constant_alpha)."""


register("algorithm", "finetuning", "clsweep.algorithms.finetuning:Finetuning",
         summary="train every task with plain SGD/Adam (lower reference)")
register("algorithm", "fix", "clsweep.algorithms.fix:Fix", paradigms=("til", "cil", "dil"),
         summary="train task 1, then freeze the backbone; new heads still train")
register("algorithm", "hat", "clsweep.algorithms.hat:HAT", params=HATParams, paradigms=("til",),
         tags=("hat_family",), summary="Hard Attention to the Task (Serra et al., ICML 2018)")
register("algorithm", "adahat", "clsweep.algorithms.adahat:AdaHAT", params=AdaHATParams, paradigms=("til",),
         tags=("hat_family",), summary="HAT + adaptive soft gradient clipping (Wang et al., ECML PKDD 2024)")

