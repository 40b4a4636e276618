"""Image sources: whole train and test sets as tensors, before they are cut into tasks.

Every source returns float32 images in ``[0, 1]`` of shape ``(N, C, H, W)`` and int64 labels. No
per-dataset mean/std normalisation is applied: the permutations, rotations and backbones all work
on the raw ``[0, 1]`` range, which keeps a task's data independent of statistics of other tasks.

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
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clsweep.benchmarks.splits import rng_for, stratified_split

__all__ = ["SOURCES", "BenchmarkDataError", "SourceData", "load_source", "source_info"]


class BenchmarkDataError(RuntimeError):
    """A source's files are missing, unreadable or could not be downloaded."""


@dataclass(frozen=True)
class SourceInfo:
    input_shape: tuple[int, int, int]
    num_classes: int


SOURCES: dict[str, SourceInfo] = {
    "digits": SourceInfo((1, 8, 8), 10),
    "synthetic": SourceInfo((1, 8, 8), 10),
    "mnist": SourceInfo((1, 28, 28), 10),
    "fashion_mnist": SourceInfo((1, 28, 28), 10),
    "cifar10": SourceInfo((3, 32, 32), 10),
    "cifar100": SourceInfo((3, 32, 32), 100),
}
"""Shape and class count of every source, known without reading any file."""


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


def source_info(name: str) -> SourceInfo:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown source {name!r}; known: {', '.join(SOURCES)}") from None


def load_source(name: str, *, seed: int = 0, test_fraction: float = 0.2, root: str | None = None,
                download: bool = False) -> SourceData:
    """Load a source. ``seed`` and ``test_fraction`` matter only for sources without an official
    test split (digits, synthetic); ``root`` and ``download`` only for the torchvision sources."""
    source_info(name)
    if name == "digits":
        return _digits(seed, test_fraction)
    if name == "synthetic":
        return _synthetic(seed, test_fraction)
    if root is None:
        raise BenchmarkDataError(f"source {name!r} reads torchvision's files: set the benchmark's `root` to their "
                                 "folder (and `download: true` to fetch them there, which needs network)")
    folder = Path(root).expanduser()
    if name in _MNIST_FAMILY:
        return _mnist_family(name, folder, download)
    return _cifar(name, folder, download)


# ---- offline sources ---------------------------------------------------------------------------


def _hold_out_test(name: str, x: np.ndarray, y: np.ndarray, seed: int, fraction: float, classes: int) -> SourceData:
    train_idx, test_idx = stratified_split(y, fraction, rng_for(seed, 0))
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))
    return SourceData(name, xt[train_idx], yt[train_idx], xt[test_idx], yt[test_idx], classes)


def _digits(seed: int, test_fraction: float) -> SourceData:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    bunch = load_digits()
    x = (bunch.images / 16.0).reshape(-1, 1, 8, 8)
    return _hold_out_test("digits", x, np.asarray(bunch.target), seed, test_fraction, 10)


SYNTHETIC_PER_CLASS = 80
SYNTHETIC_NOISE = 0.25


def _synthetic(seed: int, test_fraction: float) -> SourceData:
    rng = rng_for(seed, 100)
    prototypes = rng.uniform(0.0, 1.0, size=(10, 1, 8, 8))
    y = rng.permutation(np.repeat(np.arange(10), SYNTHETIC_PER_CLASS))
    x = np.clip(prototypes[y] + rng.normal(0.0, SYNTHETIC_NOISE, size=(y.size, 1, 8, 8)), 0.0, 1.0)
    return _hold_out_test("synthetic", x, y, seed, test_fraction, 10)


# ---- torchvision sources -----------------------------------------------------------------------

_MNIST_FAMILY = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class _CifarLayout:
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str
    dataset: str  # torchvision class used for downloading


_CIFAR = {
    "cifar10": _CifarLayout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                            "labels", "CIFAR10"),
    "cifar100": _CifarLayout("cifar-100-python", ("train",), ("test",), "fine_labels", "CIFAR100"),
}


def _missing(name: str, folder: Path, files: tuple[str, ...]) -> BenchmarkDataError | None:
    absent = [f for f in files if not (folder / f).is_file()]
    if not absent:
        return None
    return BenchmarkDataError(
        f"source {name!r}: missing {len(absent)} file(s) in {folder}: {', '.join(absent)} "
        f"(expected: {', '.join(files)}). Put the dataset's files there, or set `download: true` in the "
        "benchmark to download them (needs network)")


def _mnist_family(name: str, root: Path, download: bool) -> SourceData:
    import torchvision.datasets as tvd

    cls = getattr(tvd, _MNIST_FAMILY[name])
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
    return SourceData(name, _images_nchw(train.data), train.targets.long(), _images_nchw(test.data),
                      test.targets.long(), SOURCES[name].num_classes)


def _images_nchw(data: Tensor) -> Tensor:
    """uint8 images (N, H, W) -> float32 (N, 1, H, W) in [0, 1]."""
    return torch.as_tensor(data).unsqueeze(1).to(torch.float32).div_(255.0)


def _cifar(name: str, root: Path, download: bool) -> SourceData:
    layout = _CIFAR[name]
    folder = root / layout.folder
    if download:
        import torchvision.datasets as tvd

        try:  # downloads the official archive, checks its md5 and unpacks it into root
            getattr(tvd, layout.dataset)(str(root), train=True, download=True)
        except Exception as err:
            raise BenchmarkDataError(f"source {name!r}: could not download into {root}: {err}") from err
    missing = _missing(name, folder, layout.train + layout.test)
    if missing is not None:
        raise missing
    num_classes = SOURCES[name].num_classes
    train_x, train_y = _read_cifar_files(name, folder, layout.train, layout.label_key, num_classes)
    test_x, test_y = _read_cifar_files(name, folder, layout.test, layout.label_key, num_classes)
    return SourceData(name, train_x, train_y, test_x, test_y, num_classes)


def _read_cifar_files(name: str, folder: Path, files: tuple[str, ...], label_key: str,
                      num_classes: int) -> tuple[Tensor, Tensor]:
    images, labels = [], []
    for file in files:
        path = folder / file
        try:
            with open(path, "rb") as handle:
                entry: dict[Any, Any] = pickle.load(handle, encoding="latin1")
            entry = {(k.decode() if isinstance(k, bytes) else k): v for k, v in entry.items()}
            data = np.asarray(entry["data"], dtype=np.uint8)
            y = np.asarray(entry[label_key], dtype=np.int64)
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, AttributeError, ValueError, TypeError) as err:
            raise BenchmarkDataError(f"source {name!r}: {path} is not a CIFAR batch file "
                                     f"(a pickle with 'data' and {label_key!r}): {err!r}") from err
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or y.shape != (data.shape[0],):
            raise BenchmarkDataError(f"source {name!r}: {path}: expected 'data' of shape (n, 3072) and n labels, "
                                     f"got {data.shape} and {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise BenchmarkDataError(f"source {name!r}: {path}: labels outside 0..{num_classes - 1}")
        images.append(data)
        labels.append(y)
    x = torch.from_numpy(np.concatenate(images).reshape(-1, 3, 32, 32)).to(torch.float32).div_(255.0)
    return x, torch.from_numpy(np.concatenate(labels))
