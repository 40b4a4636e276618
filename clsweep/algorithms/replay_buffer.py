"""Episodic memories shared by the replay-style methods (``er``, ``agem``).

- :class:`Memory`: stored ``(x, y, task id)`` samples as plain device tensors, sampled without
  replacement; A-GEM appends a class-balanced subset of each finished task (:func:`per_class_subset`).
- :class:`ReservoirMemory`: a fixed number of rows filled by reservoir sampling over the stream of
  training samples (Vitter's Algorithm R, the writing strategy of Chaudhry et al. 2019, "On Tiny
  Episodic Memories in Continual Learning"), one batch at a time without per-sample Python.
- :func:`own_task_cross_entropy`: the cross-entropy of a batch that mixes tasks, each sample
  scored by its own task's head (:meth:`TaskHeads.forward_rows`: the shipped heads score rows of
  any task order with one matrix product, never one call per sample).

The tensors travel in the algorithm's ``extra_state()`` (their size varies, which a module buffer
would refuse on load) and come back on the CPU; :meth:`Memory.to` moves them to the trial's device.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from clsweep.heads import TaskHeads

__all__ = [
    "Memory",
    "ReservoirMemory",
    "per_class_subset",
    "reservoir_slots",
    "own_task_cross_entropy",
]

Batch = tuple[Tensor, Tensor, Tensor]


class Memory:
    """Samples kept for replay: ``x``, ``y`` and ``task_ids`` with one row per sample."""

    def __init__(self) -> None:
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self.task_ids: Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.y is None else int(self.y.shape[0])

    def rows(self) -> Batch:
        """Every stored sample."""
        assert self.x is not None and self.y is not None and self.task_ids is not None, "memory is empty"
        n = len(self)
        return self.x[:n], self.y[:n], self.task_ids[:n]

    def append(self, x: Tensor, y: Tensor, task_ids: Tensor) -> None:
        """Store more samples after the ones already kept."""
        if self.x is None or self.y is None or self.task_ids is None:
            self.x, self.y, self.task_ids = x.detach().clone(), y.clone(), task_ids.clone()
            return
        self.x = torch.cat([self.x, x.detach()])
        self.y = torch.cat([self.y, y])
        self.task_ids = torch.cat([self.task_ids, task_ids])

    def sample(self, n: int) -> Batch:
        """``min(n, len(self))`` distinct stored samples drawn uniformly, in random order (the
        global RNG, which the task loop seeds at every task start, so a resumed run draws the same)."""
        assert self.x is not None and self.y is not None and self.task_ids is not None, "memory is empty"
        idx = torch.randperm(len(self), device=self.y.device)[:n]  # rows 0 .. len - 1: the filled ones
        return self.x.index_select(0, idx), self.y.index_select(0, idx), self.task_ids.index_select(0, idx)

    def to(self, device: torch.device) -> None:
        if self.x is not None and self.y is not None and self.task_ids is not None:
            self.x, self.y, self.task_ids = self.x.to(device), self.y.to(device), self.task_ids.to(device)

    def state(self) -> dict[str, Any]:
        """The stored samples, for ``extra_state()``."""
        if not len(self):
            return {"x": None, "y": None, "task_ids": None}
        x, y, t = self.rows()
        return {"x": x.clone(), "y": y.clone(), "task_ids": t.clone()}

    def load(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        self.x, self.y, self.task_ids = None, None, None
        if state["x"] is not None:
            self.append(state["x"], state["y"], state["task_ids"])


def reservoir_slots(seen: int, capacity: int, u: Tensor) -> Tensor:
    """Where reservoir sampling writes each of ``len(u)`` new samples arriving after ``seen`` others.

    Sample ``k`` is the stream's ``i = seen + k``-th (0-based). While ``i < capacity`` it fills row
    ``i``; afterwards it draws ``j = floor(u[k] * (i + 1))``, uniform in ``0 .. i``, and replaces row
    ``j`` if ``j < capacity`` (kept with probability ``capacity / (i + 1)``, at a uniform row).
    When several samples of the batch pick the same row, the last one wins, as in the sequential
    algorithm. Rows not written are sent to row ``capacity`` (a scratch row, never read), so the
    caller can copy the whole batch with one ``index_copy_``.

    ``u``: uniform draws in ``[0, 1)``, float64 so that ``u * (i + 1)`` stays exact for long streams.
    """
    n = u.shape[0]
    order = torch.arange(n, device=u.device)
    index = order + seen
    draw = torch.minimum((u * (index + 1)).long(), index)
    slot = torch.where(index < capacity, index, draw)
    slot = torch.where(slot < capacity, slot, capacity)
    last = torch.full((capacity + 1,), -1, dtype=torch.long, device=u.device)
    last.scatter_reduce_(0, slot, order, reduce="amax")  # the latest sample aimed at each row
    return torch.where(last[slot] == order, slot, capacity)


class ReservoirMemory(Memory):
    """``capacity`` rows holding a uniform sample of every training sample seen so far."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = int(capacity)
        self.seen = 0
        """Samples streamed in so far; ``min(seen, capacity)`` rows are filled."""

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, x: Tensor, y: Tensor, task_ids: Tensor) -> None:
        """Stream a batch in (each row once): one vectorised reservoir update."""
        if self.x is None or self.y is None or self.task_ids is None:
            rows = self.capacity + 1  # + the scratch row of reservoir_slots
            self.x = x.new_zeros((rows, *x.shape[1:]))
            self.y, self.task_ids = y.new_zeros(rows), task_ids.new_zeros(rows)
        u = torch.rand(x.shape[0], dtype=torch.float64, device=x.device)
        slots = reservoir_slots(self.seen, self.capacity, u)
        self.x.index_copy_(0, slots, x.detach())
        self.y.index_copy_(0, slots, y)
        self.task_ids.index_copy_(0, slots, task_ids)
        self.seen += int(x.shape[0])

    def state(self) -> dict[str, Any]:
        return {**super().state(), "seen": self.seen}

    def load(self, state: dict[str, Any]) -> None:
        self.x, self.y, self.task_ids = None, None, None
        self.seen = 0
        if state["x"] is not None:
            x, y, t = state["x"], state["y"], state["task_ids"]
            rows = self.capacity + 1
            self.x = torch.cat([x, x.new_zeros((rows - x.shape[0], *x.shape[1:]))])
            self.y = torch.cat([y, y.new_zeros(rows - y.shape[0])])
            self.task_ids = torch.cat([t, t.new_zeros(rows - t.shape[0])])
        self.seen = int(state["seen"])


def per_class_subset(y: Tensor, per_class: int) -> Tensor:
    """Indices of up to ``per_class`` random samples of each class in ``y`` (vectorised)."""
    perm = torch.randperm(y.shape[0], device=y.device)
    by_class = perm[torch.argsort(y[perm], stable=True)]  # random order within each class
    labels = y[by_class]
    first = torch.searchsorted(labels, labels, right=False)  # where each sample's class begins
    rank = torch.arange(y.shape[0], device=y.device) - first
    return by_class[rank < per_class]


def own_task_cross_entropy(
    heads: TaskHeads, feature: Tensor, y: Tensor, task_ids: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-sample cross-entropy and correctness of a batch that mixes tasks, each row scored by
    its own task's head (:meth:`TaskHeads.forward_rows`; TIL heads give each task's local logits,
    padded to the widest task with a masking value whose softmax weight is exactly 0; CIL heads
    ignore the task id and give every seen class, so the same call serves both paradigms)."""
    logits = heads.forward_rows(feature, task_ids)
    return nn.functional.cross_entropy(logits, y, reduction="none"), logits.argmax(1) == y
