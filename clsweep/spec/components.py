"""Declarations of clsweep's built-in components: names, hyperparameters, what each supports.

This module is torch-free on purpose: ``clsweep validate`` checks a config against these models
without importing the implementations. Every default is written here, once, and cites where it
comes from; the implementations receive the validated model as their ``params`` argument
(see :func:`clsweep.registry.create`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clsweep import registry
from clsweep.common import PARADIGMS
from clsweep.registry import SourceInfo, register

__all__ = [
    "RESNET_DEPTHS",
    "AlexNetParams",
    "HATMaskAlexNetParams",
    "HATMaskMLPParams",
    "HATMaskResNetParams",
    "MLPParams",
    "PermutedParams",
    "ResNetParams",
    "RotatedParams",
    "SourceParams",
    "SplitParams",
    "StreamParams",
]


class _Params(BaseModel):
    # inf and nan are refused in every float field: `lr: .inf` is bad input, not a diverged run
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# --------------------------------------------------------------------------------------------
# Data sources
# --------------------------------------------------------------------------------------------


class SourceParams(_Params):
    """What a benchmark hands its source's loader: the benchmark's fields of the same names."""

    seed: int | Literal["trial"] = 0
    """Benchmark seed: class order, permutations, the validation split and (for sources without an
    official test split) the test hold-out. An integer keeps them fixed across the trials of a sweep,
    so that trials are compared on the same task sequence (default 0: today's task sequences).
    ``trial`` makes them follow the trial seed, as papers that report the spread over seeds do (the HAT
    paper §4: each of its 10 seeds sets the task order, data split, batch shuffle and initialisation);
    :func:`~clsweep.spec.experiment.parse_experiment` replaces it by the experiment's ``seed``, so
    components only ever see an integer."""
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    """Only for sources without an official test split (digits, synthetic): stratified hold-out."""
    root: str | None = None
    """Folder with a source's files (e.g. root/MNIST/raw, root/cifar-10-batches-py)."""
    download: bool = False
    """Download missing files into `root` (needs network; off by default)."""


def _source(name: str, info: SourceInfo, summary: str, preload: tuple[str, ...] = ()) -> None:
    """A built-in source: its loader is ``clsweep.benchmarks.sources:load_<name>``."""
    target = f"clsweep.benchmarks.sources:load_{name}"
    register("source", name, target, params=SourceParams, source=info, preload=preload, summary=summary)


_TORCHVISION = ("torchvision.datasets",)
_source(
    "digits",
    SourceInfo((1, 8, 8), 10),
    "scikit-learn's bundled 8x8 digits (1,797 images), no files needed",
    ("sklearn.datasets",),
)
_source("synthetic", SourceInfo((1, 8, 8), 10), "10 noisy random 8x8 prototypes drawn from the seed (tests)")
_source(
    "mnist",
    SourceInfo((1, 28, 28), 10, needs_root=True),
    "MNIST, torchvision's files in root/MNIST/raw",
    _TORCHVISION,
)
_source(
    "fashion_mnist",
    SourceInfo((1, 28, 28), 10, needs_root=True),
    "Fashion-MNIST, torchvision's files in root/FashionMNIST/raw",
    _TORCHVISION,
)
_source(
    "cifar10",
    SourceInfo((3, 32, 32), 10, needs_root=True),
    "CIFAR-10, pickled batches in root/cifar-10-batches-py",
)
_source(
    "cifar100",
    SourceInfo((3, 32, 32), 100, needs_root=True),
    "CIFAR-100 (fine labels), pickled batches in root/cifar-100-python",
)


# --------------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------------


class StreamParams(SourceParams):
    """The fields every benchmark stream takes; the source's own ones are inherited."""

    source: str = "digits"
    """A registered source (`clsweep ls source`). `digits` and `synthetic` need no files; the
    others read `root` and download only if `download` is true."""
    num_tasks: int = Field(5, ge=1, le=10_000)  # long streams run hundreds of tasks (Dohare et al.: 800)
    validation_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    """Share of each task's training data held out for validation (stratified, seeded).
    0.1 as in the HAT paper's CIFAR setup (§4)."""
    normalize: bool = False
    """Standardise every channel with the mean and (population) std of the task's training data,
    measured after the validation split is carved out, so neither the validation nor the test data
    nor other tasks' data move the statistics; the same affine map is applied to the task's training,
    validation and test images. Default off: images stay in [0, 1] and existing configs give the
    numbers they gave before. The HAT reference normalises (joansj/hat src/dataloaders/pmnist.py:
    MNIST's (0.1307, 0.3081); cifar.py and mixture.py: each dataset's own mean/std), so configs that
    follow its protocol set it to true. The map depends on the task, which is harmless in TIL; in
    CIL/DIL it means a test image is standardised with the statistics of the task it came from."""

    @field_validator("source")
    @classmethod
    def _registered(cls, value: str) -> str:
        known = registry.list_names("source")
        if value not in known:
            raise ValueError(f"unknown source {value!r}; known: {', '.join(known)}")
        return value


class PermutedParams(StreamParams):
    """One fixed pixel permutation per task; every task has the source's full label set."""


class SplitParams(StreamParams):
    classes_per_task: int = Field(2, ge=1)
    """Disjoint class subsets of this size; class order shuffled by the benchmark seed
    (5 tasks x 2 classes is the usual split-MNIST layout)."""
    shuffle_classes: bool = True


class RotatedParams(StreamParams):
    max_angle: float = Field(180.0, gt=0.0, le=360.0)
    """Task t (1-based) is rotated counter-clockwise by (t - 1) * max_angle / num_tasks degrees
    (task 1 unrotated)."""


register(
    "benchmark",
    "permuted",
    "clsweep.benchmarks.streams:PermutedStream",
    params=PermutedParams,
    summary="a fixed pixel permutation per task (TIL, CIL or DIL)",
)
register(
    "benchmark",
    "split",
    "clsweep.benchmarks.streams:SplitStream",
    params=SplitParams,
    summary="disjoint class subsets per task, class order by seed (TIL or CIL)",
    paradigms=("til", "cil"),
)
register(
    "benchmark",
    "rotated",
    "clsweep.benchmarks.streams:RotatedStream",
    params=RotatedParams,
    summary="the same classes rotated by a growing angle per task (DIL or TIL)",
    paradigms=("dil", "til"),
)


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
            raise ValueError(
                f"gate {value!r} is not supported: HAT's gate is the sigmoid (Serra et al. 2018, Eq. 1)"
            )
        return value


def _all_positive(cls: type, sizes: list[int]) -> list[int]:
    if any(d < 1 for d in sizes):
        raise ValueError("every size must be >= 1")
    return sizes


class _HiddenDims(_Params):
    hidden_dims: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)
    """Units per hidden layer; the last one is the feature size the heads read."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout after every hidden layer. 0.0: off; the HAT paper's pMNIST MLP uses 0.5
    (joansj/hat src/networks/mlp_hat.py, pdrop2)."""
    input_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the flattened input, before the first layer (never masked). 0.0: off (the behaviour
    before this field existed); the HAT paper's pMNIST MLP uses 0.2 (joansj/hat
    src/networks/mlp_hat.py, pdrop1)."""

    _positive = field_validator("hidden_dims")(_all_positive)


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

    _positive = field_validator("channels", "fc_dims")(_all_positive)


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


RESNET_DEPTHS: dict[int, tuple[Literal["basic", "bottleneck"], tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
"""Block type and blocks per stage of each ResNet depth (He et al. 2016, Table 1)."""

register(
    "backbone", "mlp", "clsweep.backbones.mlp:MLP", params=MLPParams, summary="fully connected network, ReLU"
)
register(
    "backbone",
    "hat_mask_mlp",
    "clsweep.backbones.mlp:HATMaskMLP",
    params=HATMaskMLPParams,
    summary="MLP with a HAT gate on every hidden layer",
    tags=("hat_mask",),
)
register(
    "backbone",
    "alexnet",
    "clsweep.backbones.alexnet:AlexNet",
    params=AlexNetParams,
    summary="AlexNet-like CNN of the HAT paper (CIFAR-scale)",
)
register(
    "backbone",
    "hat_mask_alexnet",
    "clsweep.backbones.alexnet:HATMaskAlexNet",
    params=HATMaskAlexNetParams,
    summary="AlexNet-like CNN with HAT gates",
    tags=("hat_mask",),
)
for _depth, (_block, _) in RESNET_DEPTHS.items():
    register(
        "backbone",
        f"resnet{_depth}",
        "clsweep.backbones.resnet:ResNet",
        params=ResNetParams,
        fixed={"depth": _depth},
        summary=f"ResNet-{_depth} ({_block} blocks)",
    )
    register(
        "backbone",
        f"hat_mask_resnet{_depth}",
        "clsweep.backbones.resnet:HATMaskResNet",
        params=HATMaskResNetParams,
        fixed={"depth": _depth},
        tags=("hat_mask",),
        summary=f"ResNet-{_depth} with a HAT gate on every convolution, shortcuts included",
    )


# --------------------------------------------------------------------------------------------
# Heads (no hyperparameters)
# --------------------------------------------------------------------------------------------

# tag "shared_layer": one parameter set serves every task, so an optimiser over the current
# task's head holds the other tasks' outputs too
_HEADS: tuple[tuple[str, str, tuple[str, ...], str, tuple[str, ...]], ...] = (
    ("til", "HeadsTIL", ("til",), "one linear head per task, created when the task arrives", ()),
    ("cil", "HeadsCIL", ("cil",), "one head per task, logits of all seen tasks concatenated", ()),
    ("dil", "HeadDIL", ("dil",), "one shared head for every task", ("shared_layer",)),
    ("mtl", "HeadsMTL", ("til",), "one head per task, routes batches with mixed task ids", ()),
    ("stl", "HeadSTL", PARADIGMS, "a single head for a single-task run (num_tasks: 1)", ()),
    (
        "masked_multihead",
        "MaskedMultiHead",
        ("til",),
        "one layer over all classes; other tasks' logits masked per sample",
        ("shared_layer",),
    ),
)
for _name, _cls, _paradigms, _summary, _tags in _HEADS:
    register(
        "heads", _name, f"clsweep.heads.heads:{_cls}", paradigms=_paradigms, summary=_summary, tags=_tags
    )


# --------------------------------------------------------------------------------------------
# Algorithms
# --------------------------------------------------------------------------------------------


register(
    "algorithm",
    "finetuning",
    "clsweep.algorithms.finetuning:Finetuning",
    summary="train every task with plain SGD/Adam (lower reference)",
)
register(
    "algorithm",
    "fix",
    "clsweep.algorithms.fix:Fix",
    summary="train task 1, then freeze the backbone; new heads still train",
)
