"""Image sources: whole train and test sets as tensors, before they are cut into tasks.

Every source returns float32 images in ``[0, 1]`` of shape ``(N, C, H, W)`` and int64 labels. No
mean/std normalisation happens here: a stream standardises each task with its own training
statistics when its ``normalize`` is set (:mod:`clsweep.benchmarks.streams`), so the source's test
images can never reach the statistics.

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, values 0..16 divided by
  16), no files needed. It has no official test split: a stratified ``test_fraction`` is held out,
  seeded by the benchmark seed.
- ``synthetic``: 10 classes of 1x8x8 images, each a fixed random prototype plus Gaussian noise,
  80 per class before the same stratified test hold-out; generated from the seed, for tests.
- ``mnist``, ``fashion_mnist``: read with torchvision's dataset classes from
  ``root/MNIST/raw`` and ``root/FashionMNIST/raw`` (the uncompressed idx files), downloaded there
  first when ``download`` is true.
- ``cifar10``, ``cifar100``: read from ``root/cifar-10-batches-py`` and ``root/cifar-100-python``
  by a small reader of the published pickle format (``data``: ``(n, 3072)`` uint8 rows, channel
  planes R, G, B of 32x32 each; ``labels`` or ``fine_labels``). torchvision's CIFAR classes refuse
  any file whose md5 differs from the official archive's, which would make the reading path
  impossible to test with small files; torchvision is still used to download (and verify) the
  official archive when ``download`` is true. As with torchvision, the pickles are trusted input.

Each loader is a registered ``source`` (declared in :mod:`clsweep.spec.components` with its shape
and class count) and is called as ``loader(*, params=SourceParams(...))``; :func:`load_source`
builds one by name through the registry and checks the result against the declaration.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clsweep import registry
from clsweep.benchmarks.splits import rng_for, stratified_split
from clsweep.registry import SourceInfo
from clsweep.spec.components import SourceParams

__all__ = [
    "BenchmarkDataError",
    "SourceData",
    "hold_out_test",
    "load_cifar10",
    "load_cifar100",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "load_source",
    "load_synthetic",
    "seed_of",
]


class BenchmarkDataError(RuntimeError):
    """A source's files are missing, unreadable or could not be downloaded."""


@dataclass(frozen=True, eq=False)  # tensors: compare fields explicitly
class SourceData:
    """A whole source: float32 images in [0, 1], shape (N, C, H, W), and int64 labels."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


def load_source(name: str, **params: Any) -> SourceData:
    """Load the registered source ``name``; ``params`` are :class:`~clsweep.spec.components.SourceParams`
    fields (``seed``, ``test_fraction``, ``root``, ``download``), defaults from there. The data are
    checked against the source's declared shape and class count."""
    data: SourceData = registry.create("source", name, **params)
    info = _info(name)
    if data.input_shape != tuple(info.input_shape) or data.num_classes != info.num_classes:
        raise BenchmarkDataError(
            f"source {name!r} is declared as {info.num_classes} classes of shape "
            f"{info.input_shape} but loaded {data.num_classes} of shape {data.input_shape}"
        )
    return data


def seed_of(params: SourceParams) -> int:
    """The benchmark seed as an integer; ``"trial"`` must have been resolved by the experiment parser."""
    if not isinstance(params.seed, int):
        raise ValueError(
            f"benchmark seed {params.seed!r} is unresolved: `seed: trial` is replaced by the experiment's "
            "seed in parse_experiment; pass an integer when building a benchmark directly"
        )
    return params.seed


def _info(name: str) -> SourceInfo:
    return registry.get("source", name).source  # type: ignore[return-value]


def _root(name: str, params: SourceParams) -> Path:
    if params.root is None:
        raise BenchmarkDataError(
            f"source {name!r} reads files: set the benchmark's `root` to their "
            "folder (and `download: true` to fetch them there, which needs network)"
        )
    return Path(params.root).expanduser()


# ---- offline sources ---------------------------------------------------------------------------


def hold_out_test(
    name: str, x: np.ndarray, y: np.ndarray, seed: int, fraction: float, classes: int
) -> SourceData:
    """A source from images ``x`` (N, C, H, W) in [0, 1] and labels ``y`` without an official test split:
    a stratified ``fraction`` of each class is held out as the test set, seeded by ``seed``."""
    train_idx, test_idx = stratified_split(y, fraction, rng_for(seed, 0))
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))
    return SourceData(name, xt[train_idx], yt[train_idx], xt[test_idx], yt[test_idx], classes)


def load_digits(*, params: SourceParams) -> SourceData:
    """scikit-learn's bundled digits, values 0..16 divided by 16; a stratified test hold-out."""
    from sklearn.datasets import load_digits as sklearn_digits  # bundled with scikit-learn, no download

    bunch = sklearn_digits()
    x = (bunch.images / 16.0).reshape(-1, 1, 8, 8)
    return hold_out_test("digits", x, np.asarray(bunch.target), seed_of(params), params.test_fraction, 10)


SYNTHETIC_PER_CLASS = 80
SYNTHETIC_NOISE = 0.25


def load_synthetic(*, params: SourceParams) -> SourceData:
    """Ten fixed random prototypes plus Gaussian noise, drawn from the seed; a stratified test hold-out."""
    rng = rng_for(seed_of(params), 100)
    prototypes = rng.uniform(0.0, 1.0, size=(10, 1, 8, 8))
    y = rng.permutation(np.repeat(np.arange(10), SYNTHETIC_PER_CLASS))
    x = np.clip(prototypes[y] + rng.normal(0.0, SYNTHETIC_NOISE, size=(y.size, 1, 8, 8)), 0.0, 1.0)
    return hold_out_test("synthetic", x, y, seed_of(params), params.test_fraction, 10)


# ---- torchvision sources -----------------------------------------------------------------------

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class _CifarLayout:
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str
    dataset: str  # torchvision class used for downloading


_CIFAR10 = _CifarLayout(
    "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "labels", "CIFAR10"
)
_CIFAR100 = _CifarLayout("cifar-100-python", ("train",), ("test",), "fine_labels", "CIFAR100")


def _missing(name: str, folder: Path, files: tuple[str, ...]) -> BenchmarkDataError | None:
    absent = [f for f in files if not (folder / f).is_file()]
    if not absent:
        return None
    return BenchmarkDataError(
        f"source {name!r}: missing {len(absent)} file(s) in {folder}: {', '.join(absent)} "
        f"(expected: {', '.join(files)}). Put the dataset's files there, or set `download: true` in the "
        "benchmark to download them (needs network)"
    )


def load_mnist(*, params: SourceParams) -> SourceData:
    """MNIST through torchvision's dataset class."""
    return _mnist_family("mnist", "MNIST", params)


def load_fashion_mnist(*, params: SourceParams) -> SourceData:
    """Fashion-MNIST through torchvision's dataset class."""
    return _mnist_family("fashion_mnist", "FashionMNIST", params)


def _mnist_family(name: str, dataset: str, params: SourceParams) -> SourceData:
    import torchvision.datasets as tvd

    root, download = _root(name, params), params.download
    cls = getattr(tvd, dataset)
    raw = root / cls.__name__ / "raw"
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=False)
    except Exception as err:  # torchvision signals missing / bad files with RuntimeError, asserts, ...
        missing = _missing(name, raw, _MNIST_FILES)
        if missing is not None:
            raise missing from err
        action = "download or read" if download else "read"
        raise BenchmarkDataError(f"source {name!r}: could not {action} the files in {raw}: {err}") from err
    return SourceData(
        name,
        _images_nchw(train.data),
        train.targets.long(),
        _images_nchw(test.data),
        test.targets.long(),
        _info(name).num_classes,
    )


def _images_nchw(data: Tensor) -> Tensor:
    """uint8 images (N, H, W) -> float32 (N, 1, H, W) in [0, 1]."""
    return torch.as_tensor(data).unsqueeze(1).to(torch.float32).div_(255.0)


def load_cifar10(*, params: SourceParams) -> SourceData:
    """CIFAR-10 from the published pickled batches."""
    return _cifar("cifar10", _CIFAR10, params)


def load_cifar100(*, params: SourceParams) -> SourceData:
    """CIFAR-100 (the 100 fine labels) from the published pickled batches."""
    return _cifar("cifar100", _CIFAR100, params)


def _cifar(name: str, layout: _CifarLayout, params: SourceParams) -> SourceData:
    root = _root(name, params)
    folder = root / layout.folder
    if params.download:
        import torchvision.datasets as tvd

        try:  # downloads the official archive, checks its md5 and unpacks it into root
            getattr(tvd, layout.dataset)(str(root), train=True, download=True)
        except Exception as err:
            raise BenchmarkDataError(f"source {name!r}: could not download into {root}: {err}") from err
    missing = _missing(name, folder, layout.train + layout.test)
    if missing is not None:
        raise missing
    num_classes = _info(name).num_classes
    train_x, train_y = _read_cifar_files(name, folder, layout.train, layout.label_key, num_classes)
    test_x, test_y = _read_cifar_files(name, folder, layout.test, layout.label_key, num_classes)
    return SourceData(name, train_x, train_y, test_x, test_y, num_classes)


def _read_cifar_files(
    name: str, folder: Path, files: tuple[str, ...], label_key: str, num_classes: int
) -> tuple[Tensor, Tensor]:
    images, labels = [], []
    for file in files:
        path = folder / file
        try:
            with open(path, "rb") as handle:
                entry: dict[Any, Any] = pickle.load(handle, encoding="latin1")
            entry = {(k.decode() if isinstance(k, bytes) else k): v for k, v in entry.items()}
            data = np.asarray(entry["data"], dtype=np.uint8)
            y = np.asarray(entry[label_key], dtype=np.int64)
        except (
            OSError,
            pickle.UnpicklingError,
            EOFError,
            KeyError,
            AttributeError,
            ValueError,
            TypeError,
        ) as err:
            raise BenchmarkDataError(
                f"source {name!r}: {path} is not a CIFAR batch file "
                f"(a pickle with 'data' and {label_key!r}): {err!r}"
            ) from err
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or y.shape != (data.shape[0],):
            raise BenchmarkDataError(
                f"source {name!r}: {path}: expected 'data' of shape (n, 3072) and n labels, "
                f"got {data.shape} and {y.shape}"
            )
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise BenchmarkDataError(f"source {name!r}: {path}: labels outside 0..{num_classes - 1}")
        images.append(data)
        labels.append(y)
    x = torch.from_numpy(np.concatenate(images).reshape(-1, 3, 32, 32)).to(torch.float32).div_(255.0)
    return x, torch.from_numpy(np.concatenate(labels))
