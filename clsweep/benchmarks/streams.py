"""Task streams: a source cut into a sequence of tasks, each with train / validation / test tensors.

Three kinds, each registered by name (see :mod:`clsweep.spec.components`):

- ``permuted`` (:class:`PermutedStream`): every task holds all the source's classes with one fixed
  random permutation of the pixel positions (every task, the first included, gets its own). The
  permutation acts on the H*W spatial positions and is the same for every channel, so a pixel's
  colour channels move together.
- ``split`` (:class:`SplitStream`): disjoint class subsets of ``classes_per_task``, the class order
  shuffled by the benchmark seed (``shuffle_classes``), then cut into consecutive groups.
- ``rotated`` (:class:`RotatedStream`): all classes, task ``t`` (1-based) rotated counter-clockwise
  by ``(t - 1) * max_angle / num_tasks`` degrees (task 1 unrotated), bilinear, zeros outside.

Label spaces are decided here, never in algorithms:

- ``til``: labels local to the task, ``0 .. k-1``, in the order of ``TaskData.classes``;
  ``num_classes = k``.
- ``cil``: global labels, ``offset + local`` where ``offset`` is the number of classes of the
  earlier tasks (for permuted: ``label + C * (t - 1)``); ``num_classes = k`` (the CIL heads
  concatenate one head per task).
- ``dil``: the source's labels; ``num_classes`` = all the source's classes (one shared head).

Everything random comes from the benchmark ``seed`` through local generators, so a task's data do
not depend on the global RNG state nor on which tasks were requested before. The validation split
is carved from the task's training data, stratified by class and seeded by ``(seed, task_id)``.
Images stay in ``[0, 1]`` unless ``normalize`` is set: then every channel of a task is standardised
with the mean and population std of that task's training split (after the validation carve, after
the task's permutation or rotation), and the same map is applied to its validation and test images
(:func:`channel_stats`, :func:`standardize`); ``TaskData.input_mean`` / ``input_std`` record it.
Validation and test images never enter the statistics. Tasks are built on first request and kept.

Data path: the experiment moves each task's tensors to the trial's device once
(:meth:`TaskData.to`) and draws batches by index there; no DataLoader is involved.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from clsweep import registry
from clsweep.benchmarks.sources import SourceData, load_source, seed_of
from clsweep.benchmarks.splits import rng_for, stratified_split
from clsweep.common import PARADIGMS
from clsweep.spec.components import RotatedParams, SourceParams, SplitParams, StreamParams

__all__ = [
    "PermutedStream",
    "RotatedStream",
    "SplitStream",
    "TaskData",
    "TaskStream",
    "channel_stats",
    "rotate",
    "standardize",
]

Split = Literal["train", "val", "test"]


@dataclass(frozen=True, eq=False)  # tensors: compare fields explicitly
class TaskData:
    """One task's data: CPU (or device) tensors, images float32 ``(N, C, H, W)``, labels int64.

    Attributes:
        task_id: 1-based task id.
        num_classes: outputs this task's head needs (see the label spaces in the module docstring).
        classes: the source's class ids in this task; in TIL the local label ``i`` is ``classes[i]``.
        input_mean, input_std: the per-channel statistics of the training split that standardised
            every split of the task (``normalize: true``); ``None`` when the images are raw ``[0, 1]``.
    """

    task_id: int
    num_classes: int
    classes: tuple[int, ...]
    train_x: Tensor = field(repr=False)
    train_y: Tensor = field(repr=False)
    val_x: Tensor = field(repr=False)
    val_y: Tensor = field(repr=False)
    test_x: Tensor = field(repr=False)
    test_y: Tensor = field(repr=False)
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None

    def split(self, name: Split) -> tuple[Tensor, Tensor]:
        """``(x, y)`` of ``"train"``, ``"val"`` or ``"test"``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; expected train, val or test")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")

    def to(self, device: torch.device | str) -> TaskData:
        """A copy with every tensor on ``device``."""
        moved = {
            f"{s}_{v}": getattr(self, f"{s}_{v}").to(device) for s in ("train", "val", "test") for v in "xy"
        }
        return dataclasses.replace(self, **moved)


class TaskStream:
    """Base of the streams: the source, the seeded splits, the label spaces and the cache.

    Built as ``Stream(paradigm, params=...)`` (through :func:`clsweep.registry.create`, which checks
    the paradigm against the registered ones). Subclasses define which classes a task holds
    (:meth:`task_classes`) and how its images are transformed (:meth:`_transform`).
    """

    def __init__(self, paradigm: str, *, params: StreamParams) -> None:
        if paradigm not in PARADIGMS:
            raise ValueError(f"paradigm must be one of {', '.join(PARADIGMS)}, got {paradigm!r}")
        info = registry.get("source", params.source).source
        assert info is not None  # every source entry carries its SourceInfo
        self.params = params
        self.paradigm: str = paradigm
        self.source: str = params.source
        self.num_tasks: int = params.num_tasks
        self.seed: int = seed_of(params)
        self.input_shape: tuple[int, int, int] = tuple(info.input_shape)  # type: ignore[assignment]
        """``(C, H, W)`` of every image."""
        self.source_num_classes: int = info.num_classes
        self._data: SourceData | None = None
        self._tasks: dict[int, TaskData] = {}

    # ---- public -------------------------------------------------------------------------------

    def task(self, task_id: int) -> TaskData:
        """The data of task ``task_id`` (1-based), built on first request and cached."""
        task_id = self._check_task_id(task_id)
        if task_id not in self._tasks:
            self._tasks[task_id] = self._build(task_id)
        return self._tasks[task_id]

    def tasks(self) -> Iterator[TaskData]:
        """Tasks 1 .. num_tasks in order."""
        for task_id in range(1, self.num_tasks + 1):
            yield self.task(task_id)

    def task_classes(self, task_id: int) -> tuple[int, ...]:
        """The source's class ids in task ``task_id`` (cheap: reads no data)."""
        self._check_task_id(task_id)
        return tuple(range(self.source_num_classes))

    def task_num_classes(self, task_id: int) -> int:
        """Outputs the head of task ``task_id`` needs (cheap: reads no data)."""
        if self.paradigm == "dil":
            return self.source_num_classes
        return len(self.task_classes(task_id))

    def label_offset(self, task_id: int) -> int:
        """What is added to the local labels of task ``task_id``: earlier tasks' classes in CIL, else 0."""
        self._check_task_id(task_id)
        if self.paradigm != "cil":
            return 0
        return sum(len(self.task_classes(t)) for t in range(1, task_id))

    def load(self) -> SourceData:
        """Read the source now (otherwise the first :meth:`task` call does); raises
        :class:`~clsweep.benchmarks.sources.BenchmarkDataError` for missing files."""
        if self._data is None:
            self._data = load_source(
                self.source, **self.params.model_dump(include=set(SourceParams.model_fields))
            )
        return self._data

    def clear_cache(self) -> None:
        """Forget the built tasks and the source (they are rebuilt identically when asked again)."""
        self._tasks.clear()
        self._data = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(paradigm={self.paradigm!r}, source={self.source!r}, "
            f"num_tasks={self.num_tasks}, seed={self.seed})"
        )

    # ---- building -----------------------------------------------------------------------------

    def _transform(self, x: Tensor, task_id: int) -> Tensor:
        return x

    def _build(self, task_id: int) -> TaskData:
        data = self.load()
        classes = self.task_classes(task_id)
        wanted = torch.tensor(classes, dtype=torch.long)
        lut = torch.full((data.num_classes,), -1, dtype=torch.long)
        if self.paradigm == "dil":
            lut[wanted] = wanted
        else:
            lut[wanted] = torch.arange(len(classes)) + self.label_offset(task_id)

        train_rows = torch.isin(data.train_y, wanted).nonzero(as_tuple=True)[0]
        test_rows = torch.isin(data.test_y, wanted).nonzero(as_tuple=True)[0]
        train_x = self._transform(data.train_x[train_rows], task_id)
        test_x = self._transform(data.test_x[test_rows], task_id)
        train_src_y = data.train_y[train_rows]
        fraction = self.params.validation_fraction
        fit, val = stratified_split(train_src_y.numpy(), fraction, rng_for(self.seed, 1, task_id))
        fit_t, val_t = torch.from_numpy(fit), torch.from_numpy(val)
        fit_x, val_x = train_x[fit_t], train_x[val_t]
        mean = std = None
        if self.params.normalize:  # statistics of the training split only, after the validation carve
            mean, std = channel_stats(fit_x)
            fit_x, val_x, test_x = (standardize(x, mean, std) for x in (fit_x, val_x, test_x))
        return TaskData(
            task_id=task_id,
            num_classes=self.task_num_classes(task_id),
            classes=classes,
            train_x=fit_x.contiguous(),
            train_y=lut[train_src_y[fit_t]],
            val_x=val_x.contiguous(),
            val_y=lut[train_src_y[val_t]],
            test_x=test_x.contiguous(),
            test_y=lut[data.test_y[test_rows]],
            input_mean=None if mean is None else tuple(mean.tolist()),
            input_std=None if std is None else tuple(std.tolist()),
        )

    def _check_task_id(self, task_id: int) -> int:
        task_id = int(task_id)
        if not 1 <= task_id <= self.num_tasks:
            raise IndexError(f"task ids are 1..{self.num_tasks}, got {task_id}")
        return task_id


class PermutedStream(TaskStream):
    """A fixed random permutation of the pixel positions per task, all classes in every task."""

    def permutation(self, task_id: int) -> Tensor:
        """Task ``task_id``'s permutation of the H*W flattened positions: pixel ``perm[i]`` of the source
        image becomes pixel ``i`` of the task's image."""
        task_id = self._check_task_id(task_id)
        _, h, w = self.input_shape
        return torch.from_numpy(rng_for(self.seed, 3, task_id).permutation(h * w))

    def _transform(self, x: Tensor, task_id: int) -> Tensor:
        perm = self.permutation(task_id)
        return x.flatten(2)[:, :, perm].reshape(x.shape)


class SplitStream(TaskStream):
    """Disjoint class subsets: the (seeded) class order cut into groups of ``classes_per_task``."""

    params: SplitParams

    def __init__(self, paradigm: str, *, params: SplitParams) -> None:
        super().__init__(paradigm, params=params)
        need = self.num_tasks * params.classes_per_task
        if need > self.source_num_classes:
            raise ValueError(
                f"{self.num_tasks} tasks x {params.classes_per_task} classes need {need} classes; "
                f"source {self.source!r} has {self.source_num_classes}"
            )
        self.classes_per_task: int = params.classes_per_task
        order = (
            rng_for(self.seed, 2).permutation(self.source_num_classes)
            if params.shuffle_classes
            else range(need)
        )
        self.class_order: tuple[int, ...] = tuple(int(c) for c in order[:need])
        """The classes used, in task order (``classes_per_task`` consecutive ones per task)."""

    def task_classes(self, task_id: int) -> tuple[int, ...]:
        task_id = self._check_task_id(task_id)
        start = (task_id - 1) * self.classes_per_task
        return self.class_order[start : start + self.classes_per_task]


class RotatedStream(TaskStream):
    """All classes in every task, task ``t`` rotated by ``(t - 1) * max_angle / num_tasks`` degrees."""

    params: RotatedParams

    def angle(self, task_id: int) -> float:
        """Counter-clockwise rotation of task ``task_id`` in degrees."""
        task_id = self._check_task_id(task_id)
        return (task_id - 1) * self.params.max_angle / self.num_tasks

    def _transform(self, x: Tensor, task_id: int) -> Tensor:
        return rotate(x, self.angle(task_id))


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and population std (``correction=0``, as ``numpy.std``) of images ``(N, C, H, W)``,
    in float64. A channel with zero spread gets std 1, so standardising it only subtracts its mean."""
    flat = x.to(torch.float64).transpose(0, 1).flatten(1)
    mean = flat.mean(dim=1)
    std = flat.std(dim=1, correction=0)
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def standardize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(x - mean) / std`` per channel of ``(N, C, H, W)`` images, in ``x``'s dtype (a new tensor)."""
    shape = (1, -1, 1, 1)
    return ((x - mean.to(x.dtype).view(shape)) / std.to(x.dtype).view(shape)).contiguous()


def rotate(x: Tensor, degrees: float, *, chunk: int = 4096) -> Tensor:
    """Rotate a batch of square images ``(N, C, H, W)`` counter-clockwise (as displayed, row 0 at
    the top) about their centre; bilinear, zeros where the rotated image has no source pixel.
    Multiples of 90 degrees move pixel centres exactly onto pixel centres."""
    if degrees % 360.0 == 0.0:
        return x.clone()
    theta_rad = math.radians(degrees)
    c, s = math.cos(theta_rad), math.sin(theta_rad)
    # affine_grid maps output coordinates (x right, y down, in [-1, 1]) to input coordinates.
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device)
    out = torch.empty_like(x)
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk]
        grid = F.affine_grid(theta.expand(block.shape[0], 2, 3), list(block.shape), align_corners=False)
        out[start : start + chunk] = F.grid_sample(
            block, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
    return out
