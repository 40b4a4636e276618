"""The report's "seed varies" line, from the sweep file's experiment mapping."""

from __future__ import annotations

from clsweep.report.setup import seed_scope


def test_trial_benchmark_seed_says_the_task_sequence_and_splits_varied() -> None:
    text = seed_scope({"seed": 0, "benchmark": {"name": "permuted", "seed": "trial"}})
    assert text.startswith("initialisation, shuffling, task order/permutations and validation split")
    assert "(benchmark.seed: trial)" in text


def test_fixed_benchmark_seed_says_only_initialisation_and_shuffling() -> None:
    assert seed_scope({"benchmark": {"name": "permuted", "seed": 3}}) == (
        "initialisation and shuffling (benchmark fixed: benchmark.seed 3)"
    )
    assert seed_scope({"benchmark": {"name": "split"}}).endswith("benchmark.seed 0)")  # the default
    assert seed_scope({}).startswith("initialisation and shuffling")
