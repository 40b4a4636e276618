"""Translation of a sweep into Optuna: repeats, grid order, conditions, pickling."""

from __future__ import annotations

import pickle
from collections import Counter

from clsweep.spec.sweep import load_sweep
from clsweep.sweep.space import make_scheduler, make_searcher

BENCH = """
name: bench
experiment:
  benchmark: {name: permuted, source: synthetic, num_tasks: 3}
  backbone: {name: mlp, hidden_dims: [16]}
  algorithm: {name: finetuning}
variants:
  method:
    finetuning: {}
    hat: {algorithm: {name: hat}, backbone: {name: hat_mask_mlp, hidden_dims: [16]}}
search:
  experiment.algorithm.aggregation: {choice: [min, max], when: {variants.method: hat}}
  experiment.backbone.hidden_dims: {choice: [[16], [8, 8]]}
searcher: {name: grid}
seeds: [3, 4]
"""


def suggestions(spec):
    searcher = make_searcher(spec)
    return searcher, [searcher.suggest(f"t{i}") for i in range(spec.num_trials)]


def test_tpe_runs_every_sampled_configuration_for_each_seed_and_grid_value(write_yaml, tiny):
    spec = load_sweep(
        write_yaml(
            tiny
            + """
search:
  experiment.train.lr: {log_uniform: [0.001, 0.1]}
  experiment.train.batch_size: {grid: [32, 64]}
searcher: {name: tpe, samples: 3, seed: 1}
seeds: 2
"""
        )
    )
    _, configs = suggestions(spec)
    assert len(configs) == 12
    by_lr = Counter(c["experiment.train.lr"] for c in configs)
    assert len(by_lr) == 3 and set(by_lr.values()) == {4}
    for lr in by_lr:
        cells = {
            (c["experiment.train.batch_size"], c["seed"]) for c in configs if c["experiment.train.lr"] == lr
        }
        assert cells == {(32, 0), (32, 1), (64, 0), (64, 1)}
    assert all(spec.experiment_for(c).train.lr == c["experiment.train.lr"] for c in configs)


def test_grid_runs_points_in_file_order_once_per_seed(write_yaml):
    spec = load_sweep(write_yaml(BENCH))
    searcher, configs = suggestions(spec)
    expected = [(point, seed) for point in spec.grid_points for seed in spec.seeds]
    assert [({k: v for k, v in c.items() if k != "seed"}, c["seed"]) for c in configs] == expected
    assert configs[0] == {"variants.method": "finetuning", "experiment.backbone.hidden_dims": [16], "seed": 3}
    assert "experiment.algorithm.aggregation" not in configs[0]  # condition: HAT only
    assert len(configs) == 12  # (1 + 2) methods/aggregations x 2 hidden_dims x 2 seeds
    assert searcher.study.trials[0].user_attrs == {"clsweep.seed": 3}


def test_tpe_samples_variants_and_follows_conditions(write_yaml):
    spec = load_sweep(write_yaml(BENCH.replace("{name: grid}", "{name: tpe, samples: 6, seed: 0}")))
    _, configs = suggestions(spec)
    for c in configs:
        assert ("experiment.algorithm.aggregation" in c) == (c["variants.method"] == "hat")
        spec.experiment_for(c)  # every sampled configuration is a valid experiment


def test_searcher_pickles_with_its_space(write_yaml, tiny):
    spec = load_sweep(
        write_yaml(tiny + "search:\n  experiment.train.lr: {uniform: [0.01, 0.1]}\nsearcher: {samples: 2}\n")
    )
    searcher, _ = suggestions(spec)
    clone = pickle.loads(pickle.dumps(searcher))
    assert (
        clone._space._plan is None and clone._space.payload == spec.payload()
    )  # only the plan's payload travels
    assert 0.01 <= clone.suggest("t9")["experiment.train.lr"] <= 0.1


def test_scheduler_counts_tasks(write_yaml, tiny):
    spec = load_sweep(
        write_yaml(
            tiny.replace("num_tasks: 2", "num_tasks: 6")
            + "scheduler: {name: asha, grace_period: 2, reduction_factor: 3}\n"
        )
    )
    asha = make_scheduler(spec)
    assert (asha._time_attr, asha._metric, asha._mode, asha._max_t) == ("tasks_done", "avg_acc_val", "max", 6)
    assert make_scheduler(load_sweep(write_yaml(tiny))) is None
