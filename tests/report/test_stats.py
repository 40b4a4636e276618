"""The report's numeric helpers against hand-computed values."""

from __future__ import annotations

import math

import pytest

from clsweep.common import pareto_front
from clsweep.report.load import dedupe_by_step, parse_matrix_csv
from clsweep.report.stats import clean, spread, t_quantile_975


def test_spread_over_seeds():
    s = spread([0.8, 0.6, 0.7])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.7) and s["std"] == pytest.approx(0.1)
    half = 4.303 * 0.1 / math.sqrt(3)
    assert s["ci95"] == pytest.approx([0.7 - half, 0.7 + half])
    one = spread([0.5, float("nan")])
    assert one["n"] == 1 and one["std"] == 0.0 and one["ci95"] is None
    assert spread([])["mean"] is None


@pytest.mark.parametrize("df, value", [(1, 12.706), (4, 2.776), (30, 2.042), (40, 2.0215), (120, 1.9805)])
def test_t_quantiles(df, value):
    assert t_quantile_975(df) == pytest.approx(value, abs=0.002)


def test_dedupe_keeps_the_last_value_logged_for_a_step():
    # (step, timestamp, value): task 2 logged twice by a resumed trial, out of order in the list
    points = [(1, 10, 0.5), (2, 20, 0.4), (3, 40, 0.3), (2, 30, 0.45), (2, 30, 0.46)]
    assert dedupe_by_step(points) == [(1, 0.5), (2, 0.46), (3, 0.3)]


def test_matrix_csv_and_pareto_and_clean():
    text = "after_task,task_1,task_2\n1,0.900000,\n2,0.800000,0.700000\n"
    assert parse_matrix_csv(text) == [[0.9, None], [0.8, 0.7]]
    assert pareto_front([[0.9, 0.3], [0.8, 0.1], [0.7, 0.2]], ["max", "min"]) == [0, 1]
    assert clean({"a": (1, float("nan")), "b": float("inf")}) == {"a": [1, None], "b": None}
