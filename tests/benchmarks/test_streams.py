"""Task streams on the offline sources: shapes, label spaces, splits, determinism, transforms."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from clsweep import registry
from clsweep.benchmarks import TaskData, build_stream, load_source
from clsweep.benchmarks.splits import held_out_count

CASES = [
    (name, paradigm)
    for name in registry.list_names("benchmark")
    for paradigm in sorted(registry.get("benchmark", name).paradigms)
]
IDS = [f"{n}-{p}" for n, p in CASES]


def _stream(name: str, paradigm: str, **params):
    params.setdefault("source", "synthetic")
    params.setdefault("num_tasks", 3)
    return build_stream(name, paradigm=paradigm, **params)


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.flatten(1)}


@pytest.mark.parametrize(("name", "paradigm"), CASES, ids=IDS)
def test_tasks_have_shapes_dtypes_and_labels_of_the_paradigm(name: str, paradigm: str) -> None:
    stream = _stream(name, paradigm)
    assert stream.paradigm == paradigm and stream.num_tasks == 3 and stream.input_shape == (1, 8, 8)
    offset = 0
    for task in stream.tasks():
        assert task.num_classes == stream.task_num_classes(task.task_id)
        for split in ("train", "val", "test"):
            x, y = task.split(split)
            assert x.dtype == torch.float32 and y.dtype == torch.int64
            assert x.shape[1:] == (1, 8, 8) and x.shape[0] == y.shape[0] > 0
            assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
            labels = set(y.tolist())
            if paradigm == "til":
                assert labels == set(range(task.num_classes))
            elif paradigm == "cil":
                assert labels == set(range(offset, offset + task.num_classes))
            else:
                assert task.num_classes == 10 and labels == set(range(10))
        offset += len(task.classes)


@pytest.mark.parametrize(("name", "paradigm"), CASES, ids=IDS)
def test_validation_is_a_stratified_part_of_the_training_data(name: str, paradigm: str) -> None:
    stream = _stream(name, paradigm, validation_fraction=0.25)
    source = load_source("synthetic", seed=0)
    task = stream.task(2)
    assert not _rows(task.train_x) & _rows(task.val_x)  # disjoint samples
    train_counts, val_counts = Counter(task.train_y.tolist()), Counter(task.val_y.tolist())
    for local, cls in enumerate(task.classes):
        label = cls if paradigm == "dil" else local + stream.label_offset(2)
        n = int((source.train_y == cls).sum())
        assert train_counts[label] + val_counts[label] == n
        assert val_counts[label] == held_out_count(n, 0.25)
    assert len(task.test_y) == sum(int((source.test_y == c).sum()) for c in task.classes)


@pytest.mark.parametrize(("name", "paradigm"), CASES, ids=IDS)
def test_same_seed_same_data_whatever_the_global_rng_and_request_order(name: str, paradigm: str) -> None:
    torch.manual_seed(1)
    np.random.seed(1)
    first = _stream(name, paradigm, seed=3)
    a = [first.task(t) for t in (1, 2, 3)]
    torch.manual_seed(2)
    np.random.seed(2)
    second = _stream(name, paradigm, seed=3)
    b = {t: second.task(t) for t in (3, 1, 2)}
    for task in a:
        other = b[task.task_id]
        assert task.classes == other.classes
        for split in ("train", "val", "test"):
            assert all(torch.equal(u, v) for u, v in zip(task.split(split), other.split(split), strict=True))
    assert first.task(2) is first.task(2)  # cached


@pytest.mark.parametrize(("name", "paradigm"), CASES, ids=IDS)
def test_a_different_seed_gives_different_tasks(name: str, paradigm: str) -> None:
    a, b = _stream(name, paradigm, seed=0).task(2), _stream(name, paradigm, seed=1).task(2)
    assert a.classes != b.classes or not torch.equal(a.train_x, b.train_x)


def test_split_tasks_hold_disjoint_classes_in_seeded_order() -> None:
    stream = _stream("split", "til", num_tasks=5, classes_per_task=2)
    classes = [stream.task_classes(t) for t in range(1, 6)]
    assert sorted(c for group in classes for c in group) == list(range(10))
    assert stream.class_order == tuple(c for group in classes for c in group)
    assert stream.class_order != tuple(range(10))
    assert _stream("split", "til", num_tasks=5, classes_per_task=2, seed=1).class_order != stream.class_order
    ordered = _stream("split", "til", num_tasks=2, classes_per_task=3, shuffle_classes=False)
    assert [ordered.task_classes(t) for t in (1, 2)] == [(0, 1, 2), (3, 4, 5)]


@pytest.mark.parametrize("paradigm", ["til", "cil"])
def test_split_labels_map_to_the_task_classes(paradigm: str) -> None:
    stream = _stream("split", paradigm, num_tasks=4, classes_per_task=2)
    source = load_source("synthetic", seed=0)
    task = stream.task(3)
    offset = 4 if paradigm == "cil" else 0
    assert stream.label_offset(3) == offset
    # each test image keeps its source class: source class classes[i] <-> label offset + i
    rows = torch.isin(source.test_y, torch.tensor(task.classes)).nonzero(as_tuple=True)[0]
    assert torch.equal(task.test_x, source.test_x[rows])
    expected = torch.tensor([task.classes.index(c) + offset for c in source.test_y[rows].tolist()])
    assert torch.equal(task.test_y, expected)


def test_permuted_applies_one_spatial_permutation_per_task() -> None:
    stream = _stream("permuted", "cil")
    source = load_source("synthetic", seed=0)
    perms = [stream.permutation(t) for t in (1, 2, 3)]
    assert all(sorted(p.tolist()) == list(range(64)) for p in perms)
    assert len({tuple(p.tolist()) for p in perms}) == 3
    for t, perm in zip((1, 2, 3), perms, strict=True):
        task = stream.task(t)
        assert torch.equal(task.test_x.flatten(1), source.test_x.flatten(1)[:, perm])
        assert torch.equal(task.test_y, source.test_y + 10 * (t - 1))  # CIL: label + 10 (t - 1)
    # on colour images the same permutation moves every channel
    colour = torch.rand(2, 3, 8, 8)
    moved = stream._transform(colour, 2)
    for c in range(3):
        assert torch.equal(moved[:, c].flatten(1), colour[:, c].flatten(1)[:, perms[1]])


def test_rotated_rotates_each_task_by_its_angle() -> None:
    stream = _stream("rotated", "dil", num_tasks=4, max_angle=360.0)
    assert [stream.angle(t) for t in (1, 2, 3, 4)] == [0.0, 90.0, 180.0, 270.0]
    assert _stream("rotated", "dil", num_tasks=5, max_angle=180.0).angle(5) == pytest.approx(144.0)
    source = load_source("synthetic", seed=0)
    assert torch.equal(stream.task(1).test_x, source.test_x)
    for t, quarter_turns in ((2, 1), (3, 2), (4, 3)):
        torch.testing.assert_close(
            stream.task(t).test_x, torch.rot90(source.test_x, quarter_turns, dims=(-2, -1))
        )
        assert torch.equal(stream.task(t).test_y, source.test_y)


def test_digits_stream_from_the_bundled_dataset() -> None:
    stream = build_stream("split", paradigm="til", source="digits", num_tasks=5, classes_per_task=2)
    sizes = [len(task.train_y) + len(task.val_y) + len(task.test_y) for task in stream.tasks()]
    assert sum(sizes) == 1797
    assert 0.18 < sum(len(stream.task(t).test_y) for t in range(1, 6)) / 1797 < 0.22


def test_task_data_moves_to_a_device() -> None:
    task = _stream("permuted", "til").task(1)
    moved = task.to("meta")
    assert isinstance(moved, TaskData) and moved.train_x.is_meta and moved.test_y.is_meta
    assert moved.classes == task.classes and task.train_x.device.type == "cpu"


def test_invalid_requests_are_clear_errors() -> None:
    stream = _stream("permuted", "til")
    for bad in (0, 4):
        with pytest.raises(IndexError, match="1..3"):
            stream.task(bad)
    with pytest.raises(ValueError, match="supports paradigms til, cil"):
        _stream("split", "dil")
    with pytest.raises(ValueError, match="need 12 classes"):
        _stream("split", "til", num_tasks=6, classes_per_task=2)
    with pytest.raises(ValueError, match="unknown split"):
        stream.task(1).split("validation")  # type: ignore[arg-type]
