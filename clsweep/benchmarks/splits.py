"""Seeded random generators and the stratified hold-out split used for test and validation sets."""

from __future__ import annotations

import numpy as np

__all__ = ["held_out_count", "rng_for", "stratified_split"]


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """A numpy generator determined by the benchmark seed and a purpose key (never the global RNG).

    Different keys give independent streams: ``rng_for(seed, 1, task_id)`` for a task's validation
    split cannot collide with ``rng_for(seed, 2)`` for the class order.
    """
    words = [int(seed) % 2**64, *(int(k) % 2**64 for k in key)]
    return np.random.default_rng(np.random.SeedSequence(words))


def held_out_count(n: int, fraction: float) -> int:
    """How many of a class's ``n`` samples are held out: ``round(fraction * n)``, at least 1 when the
    class has two or more samples, and always leaving at least one sample in the kept part."""
    if n < 2:
        return 0
    return min(max(int(round(fraction * n)), 1), n - 1)


def stratified_split(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into (kept, held out), class by class.

    Each class contributes :func:`held_out_count` random samples to the held-out part. Both index
    arrays are sorted, so the samples keep their original order.
    """
    labels = np.asarray(labels)
    held: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        k = held_out_count(members.size, fraction)
        held.append(rng.permutation(members)[:k])
    held_idx = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    keep = np.ones(labels.shape[0], dtype=bool)
    keep[held_idx] = False
    return np.flatnonzero(keep), held_idx
