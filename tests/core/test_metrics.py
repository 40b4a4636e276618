"""Metrics against matrices computed by hand."""

from __future__ import annotations

import pytest

from clsweep import metrics

# R[t][j]: accuracy on task j after training task t (3 tasks, lower triangle evaluated)
R = [
    [0.90, None, None],
    [0.70, 0.80, None],
    [0.60, 0.75, 0.95],
]


def test_average_accuracy_per_row() -> None:
    assert metrics.average_accuracy(R, 0) == pytest.approx(0.90)
    assert metrics.average_accuracy(R, 1) == pytest.approx((0.70 + 0.80) / 2)
    assert metrics.average_accuracy(R) == pytest.approx((0.60 + 0.75 + 0.95) / 3)


def test_backward_transfer() -> None:
    # ((0.60 - 0.90) + (0.75 - 0.80)) / 2
    assert metrics.backward_transfer(R) == pytest.approx(-0.175)
    assert metrics.backward_transfer(R, 1) == pytest.approx(-0.20)
    assert metrics.backward_transfer(R, 0) == 0.0


def test_forgetting_uses_best_earlier_accuracy() -> None:
    # task 0 improves after task 1, then drops: forgetting uses the max over earlier rows
    M = [[0.50, None, None], [0.80, 0.70, None], [0.40, 0.70, 0.90]]
    # f_0 = max(0.50, 0.80) - 0.40 = 0.40; f_1 = 0.70 - 0.70 = 0
    assert metrics.forgetting(M) == pytest.approx(0.20)
    # BWT differs: ((0.40 - 0.50) + (0.70 - 0.70)) / 2
    assert metrics.backward_transfer(M) == pytest.approx(-0.05)
    assert metrics.forgetting(R) == pytest.approx(((0.90 - 0.60) + (0.80 - 0.75)) / 2)


def test_forward_transfer_needs_upper_diagonal() -> None:
    full = [[0.9, 0.3, 0.2], [0.8, 0.85, 0.4], [0.7, 0.8, 0.9]]
    initial = [0.1, 0.1, 0.1]
    # ((0.3 - 0.1) + (0.4 - 0.1)) / 2
    assert metrics.forward_transfer(full, initial) == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"\[0\]\[1\]"):
        metrics.forward_transfer(R, initial)


def test_summary_and_no_mutation() -> None:
    before = [list(r) for r in R]
    s = metrics.summary(R)
    assert s == pytest.approx({"avg_acc": 0.7666666, "bwt": -0.175, "forgetting": 0.175, "acc_current": 0.95})
    assert R == before


def test_unevaluated_entry_is_an_error() -> None:
    with pytest.raises(ValueError):
        metrics.average_accuracy([[None]])
    with pytest.raises(ValueError):
        metrics.average_accuracy([])
