"""Trials stopped early are PRUNED in Optuna, failed ones FAIL, complete ones COMPLETE."""

from __future__ import annotations

from optuna.trial import TrialState

from clsweep.spec.sweep import load_sweep
from clsweep.sweep.space import make_searcher


def result(value, done, total=3):
    return {
        "avg_acc_val": value,
        "forgetting_val": 0.1,
        "tasks_done": done,
        "tasks_total": total,
        "training_iteration": done,
    }


def test_early_stopped_trials_are_pruned(write_yaml, tiny):
    spec = load_sweep(
        write_yaml(tiny + "search:\n  experiment.train.lr: {uniform: [0.01, 0.1]}\nsearcher: {samples: 4}\n")
    )
    searcher = make_searcher(spec)
    for i in range(4):
        searcher.suggest(f"t{i}")
        searcher.on_trial_result(f"t{i}", result(0.5, 1))
    searcher.on_trial_complete("t0", result(0.8, 3))  # every task done
    searcher.on_trial_complete("t1", result(0.6, 2))  # stopped by the scheduler after task 2
    searcher.on_trial_complete("t2", result(0.6, 2), error=True)  # raised after reporting
    searcher.on_trial_complete("t3", None, error=True)  # raised before reporting
    states = [t.state for t in searcher.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL]
    assert searcher.study.trials[0].value == 0.8
    assert searcher.study.trials[1].intermediate_values == {1: 0.5}


def test_two_objectives_are_told_together(write_yaml, tiny):
    spec = load_sweep(
        write_yaml(
            tiny
            + """
search:
  experiment.train.lr: {uniform: [0.01, 0.1]}
searcher: {samples: 2}
objective: [{metric: avg_acc_val}, {metric: forgetting_val}]
"""
        )
    )
    searcher = make_searcher(spec)
    searcher.suggest("a")
    searcher.on_trial_complete("a", result(0.7, 3))
    trial = searcher.study.trials[0]
    assert trial.state == TrialState.COMPLETE and trial.values == [0.7, 0.1]
