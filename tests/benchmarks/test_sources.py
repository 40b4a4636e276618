"""Sources: offline ones, and the torchvision ones read from tiny files in torchvision's on-disk format."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from clsweep.benchmarks import BenchmarkDataError, build_stream, load_source
from clsweep.benchmarks.splits import held_out_count, stratified_split

# ---- writers of the real formats ---------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed idx file: magic 0x00000800 + ndim (2051 for images, 2049 for labels), dims, bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root: Path, folder: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {}
    for split, per_class in (("train", 3), ("t10k", 1)):
        y = np.repeat(np.arange(10), per_class).astype(np.uint8)
        x = rng.integers(0, 256, size=(y.size, 28, 28), dtype=np.uint8)
        _write_idx(root / folder / "raw" / f"{split}-images-idx3-ubyte", x)
        _write_idx(root / folder / "raw" / f"{split}-labels-idx1-ubyte", y)
        arrays[f"{split}_x"], arrays[f"{split}_y"] = x, y
    return arrays


def _write_cifar(
    root: Path, name: str, rng: np.random.Generator, *, bytes_keys: bool = False
) -> dict[str, np.ndarray]:
    """The pickled batches. The official files (pickled by Python 2) read back with str keys under
    ``encoding="latin1"`` (torchvision) and with bytes keys under ``encoding="bytes"`` (the dataset's
    page); ``bytes_keys`` writes the latter form."""

    def k(text: str) -> str | bytes:
        return text.encode() if bytes_keys else text

    if name == "cifar10":
        folder, files, key, classes = (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
            k("labels"),
            10,
        )
        meta = {"batches.meta": {k("label_names"): [f"c{i}" for i in range(10)]}}
    else:
        folder, files, key, classes = "cifar-100-python", ["train", "test"], k("fine_labels"), 100
        meta = {"meta": {k("fine_label_names"): [f"c{i}" for i in range(100)]}}
    (root / folder).mkdir(parents=True)
    arrays: dict[str, list[np.ndarray]] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for file in files:
        y = rng.integers(0, classes, size=4)
        data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        entry = {k("batch_label"): file, k("data"): data, key: y.tolist()}
        if name == "cifar100":
            entry[k("coarse_labels")] = (y // 5).tolist()
        with open(root / folder / file, "wb") as handle:
            pickle.dump(entry, handle)
        split = "test" if file.startswith("test") else "train"
        arrays[f"{split}_x"].append(data)
        arrays[f"{split}_y"].append(y)
    for file, content in meta.items():
        with open(root / folder / file, "wb") as handle:
            pickle.dump(content, handle)
    return {k: np.concatenate(v) for k, v in arrays.items()}


# ---- offline sources ---------------------------------------------------------------------------


def test_digits_source_is_the_bundled_dataset_with_a_stratified_test_split() -> None:
    data = load_source("digits", seed=0, test_fraction=0.2)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert len(data.train_y) + len(data.test_y) == 1797
    assert float(data.train_x.min()) == 0.0 and float(data.train_x.max()) == 1.0
    counts = torch.bincount(data.train_y, minlength=10) + torch.bincount(data.test_y, minlength=10)
    assert torch.equal(
        torch.bincount(data.test_y, minlength=10), torch.tensor([held_out_count(int(n), 0.2) for n in counts])
    )
    other = load_source("digits", seed=1, test_fraction=0.2)
    assert not torch.equal(data.test_x, other.test_x)


def test_synthetic_source_is_deterministic_and_learnable() -> None:
    a, b = load_source("synthetic", seed=4), load_source("synthetic", seed=4)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, load_source("synthetic", seed=5).train_x)
    assert a.train_x.shape == (640, 1, 8, 8) and a.test_x.shape == (160, 1, 8, 8)
    # nearest class mean on the training set classifies the test set almost perfectly
    means = torch.stack([a.train_x[a.train_y == c].mean(0).flatten() for c in range(10)])
    predicted = torch.cdist(a.test_x.flatten(1), means).argmin(1)
    assert (predicted == a.test_y).float().mean() > 0.95


def test_stratified_split_per_class_counts() -> None:
    labels = np.array([0] * 10 + [1] * 2 + [2] * 1 + [3] * 5)
    keep, held = stratified_split(labels, 0.3, np.random.default_rng(0))
    assert np.intersect1d(keep, held).size == 0 and np.union1d(keep, held).size == labels.size
    assert np.bincount(labels[held], minlength=4).tolist() == [3, 1, 0, 2]  # round(0.3 n), >= 1 if n >= 2


# ---- torchvision sources -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_reads_torchvision_files(tmp_path: Path, name: str, folder: str) -> None:
    arrays = _write_mnist(tmp_path, folder, np.random.default_rng(0))
    data = load_source(name, root=str(tmp_path))
    assert data.train_x.shape == (30, 1, 28, 28) and data.test_x.shape == (10, 1, 28, 28)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    torch.testing.assert_close(data.train_x[:, 0], torch.from_numpy(arrays["train_x"]).float() / 255)
    assert data.test_y.tolist() == arrays["t10k_y"].tolist()
    stream = build_stream(
        "split", paradigm="cil", source=name, root=str(tmp_path), num_tasks=2, classes_per_task=3
    )
    task = stream.task(2)
    assert task.test_x.shape == (3, 1, 28, 28) and set(task.test_y.tolist()) == {3, 4, 5}
    assert len(task.train_y) + len(task.val_y) == 9


@pytest.mark.parametrize("bytes_keys", [False, True], ids=["str-keys", "bytes-keys"])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reads_the_pickled_batches(tmp_path: Path, name: str, bytes_keys: bool) -> None:
    arrays = _write_cifar(tmp_path, name, np.random.default_rng(1), bytes_keys=bytes_keys)
    data = load_source(name, root=str(tmp_path))
    n_train = 20 if name == "cifar10" else 4
    assert data.train_x.shape == (n_train, 3, 32, 32) and data.test_x.shape == (4, 3, 32, 32)
    assert data.num_classes == (10 if name == "cifar10" else 100)
    # rows hold the red, green and blue 32x32 planes one after the other
    i, c, h, w = 2, 1, 5, 7
    assert data.train_x[i, c, h, w] == pytest.approx(arrays["train_x"][i, c * 1024 + h * 32 + w] / 255)
    assert data.train_y.tolist() == arrays["train_y"].tolist()
    stream = build_stream("permuted", paradigm="til", source=name, root=str(tmp_path), num_tasks=2)
    assert stream.input_shape == (3, 32, 32) and stream.task(2).test_x.shape == (4, 3, 32, 32)


def test_cifar_reader_agrees_with_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_cifar(tmp_path, "cifar10", np.random.default_rng(2))
    # torchvision accepts only the official files' md5; drop the checksums to compare the reading itself
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f, None] for f, _ in tvd.CIFAR10.train_list])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [[f, None] for f, _ in tvd.CIFAR10.test_list])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": None})
    reference = tvd.CIFAR10(str(tmp_path), train=True)
    ours = load_source("cifar10", root=str(tmp_path))
    expected = torch.from_numpy(reference.data).permute(0, 3, 1, 2).float() / 255  # HWC -> CHW
    torch.testing.assert_close(ours.train_x, expected)
    assert ours.train_y.tolist() == list(reference.targets)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mnist", ["MNIST", "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
        ("fashion_mnist", ["FashionMNIST", "train-labels-idx1-ubyte"]),
        ("cifar10", ["cifar-10-batches-py", "data_batch_1", "test_batch"]),
        ("cifar100", ["cifar-100-python", "train", "test"]),
    ],
)
def test_missing_files_give_one_clear_error(tmp_path: Path, name: str, expected: list[str]) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(BenchmarkDataError) as info:
        load_source(name, root=str(root))
    message = str(info.value)
    assert str(root) in message and "download: true" in message
    assert all(part in message for part in expected)
    stream = build_stream("permuted", paradigm="til", source=name, root=str(root))  # built without reading
    with pytest.raises(BenchmarkDataError):
        stream.task(1)


def test_torchvision_source_without_root_is_an_error() -> None:
    with pytest.raises(BenchmarkDataError, match="set the benchmark's `root`"):
        load_source("mnist")


def test_partially_present_and_corrupt_files_are_reported(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "MNIST", np.random.default_rng(0))
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(BenchmarkDataError, match="missing 1 file.*t10k-labels-idx1-ubyte"):
        load_source("mnist", root=str(tmp_path))
    _write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.zeros((3, 2, 2, 2), dtype=np.uint8))
    with pytest.raises(BenchmarkDataError, match="could not read"):
        load_source("mnist", root=str(tmp_path))
    _write_cifar(tmp_path, "cifar10", np.random.default_rng(0))
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(BenchmarkDataError, match="data_batch_3 is not a CIFAR batch file"):
        load_source("cifar10", root=str(tmp_path))
