"""Continual-learning metrics as pure functions of an accuracy matrix.

``R[t][j]`` is the accuracy on task j after training task t (0-based indices here; rows are the
tasks trained so far). Entries not evaluated are ``None`` (above the diagonal unless future tasks
are evaluated). Every function reads only what it needs and never mutates its input.

Formulas (see shared notes §5):
- average accuracy after t tasks (GEM): A_t = mean_{j<=t} R[t][j]
- backward transfer (GEM): BWT = mean_{j<T-1} (R[T-1][j] - R[j][j]); negative means forgetting
- forgetting (Chaudhry et al., ECCV 2018): f_j = max_{l<T-1} R[l][j] - R[T-1][j] for j < T-1, F = mean_j f_j
- forward transfer (GEM): FWT = mean_{j>=1} (R[j-1][j] - b_j), b_j the accuracy of the initial
  (untrained) model on task j; needs the entries above the diagonal.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["average_accuracy", "backward_transfer", "forgetting", "forward_transfer", "summary"]

Matrix = Sequence[Sequence[float | None]]


def _value(matrix: Matrix, t: int, j: int) -> float:
    v = matrix[t][j]
    if v is None:
        raise ValueError(f"accuracy matrix entry [{t}][{j}] was not evaluated")
    return float(v)


def average_accuracy(matrix: Matrix, after: int | None = None) -> float:
    """Mean accuracy over tasks 0..t after training task t (default: the last row)."""
    t = len(matrix) - 1 if after is None else after
    if t < 0:
        raise ValueError("empty accuracy matrix")
    return sum(_value(matrix, t, j) for j in range(t + 1)) / (t + 1)


def backward_transfer(matrix: Matrix, after: int | None = None) -> float:
    """GEM's BWT after task t; 0.0 when only one task has been trained."""
    t = len(matrix) - 1 if after is None else after
    if t < 1:
        return 0.0
    return sum(_value(matrix, t, j) - _value(matrix, j, j) for j in range(t)) / t


def forgetting(matrix: Matrix, after: int | None = None) -> float:
    """Chaudhry et al.'s average forgetting after task t; 0.0 with one task."""
    t = len(matrix) - 1 if after is None else after
    if t < 1:
        return 0.0
    total = 0.0
    for j in range(t):
        best = max(_value(matrix, row, j) for row in range(j, t))
        total += best - _value(matrix, t, j)
    return total / t


def forward_transfer(matrix: Matrix, initial: Sequence[float]) -> float:
    """GEM's FWT over the trained rows: mean_{j=1..t} (R[j-1][j] - initial[j]).

    ``initial[j]`` is the accuracy of the untrained model on task j. Needs the entries just above
    the diagonal (``evaluate_future``)."""
    t = len(matrix) - 1
    if t < 1:
        return 0.0
    return sum(_value(matrix, j - 1, j) - float(initial[j]) for j in range(1, t + 1)) / t


def summary(matrix: Matrix, after: int | None = None) -> dict[str, float]:
    """Average accuracy, BWT, forgetting and the current task's accuracy after task t."""
    t = len(matrix) - 1 if after is None else after
    return {
        "avg_acc": average_accuracy(matrix, t),
        "bwt": backward_transfer(matrix, t),
        "forgetting": forgetting(matrix, t),
        "acc_current": _value(matrix, t, t),
    }
