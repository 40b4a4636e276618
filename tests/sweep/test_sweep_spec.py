"""The sweep file model: defaults, trial counts, variants, conditions, overrides, static checks."""

from __future__ import annotations

import pytest

from clsweep.spec.errors import SpecError, dotted
from clsweep.spec.sweep import apply_sweep_overrides, load_sweep, parse_sweep

BENCH = """
name: bench
experiment:
  benchmark: {name: permuted, source: synthetic, num_tasks: 3}
  backbone: {name: mlp, hidden_dims: [16]}
  algorithm: {name: finetuning}
  train: {epochs: 1, lr: 0.1}
variants:
  method:
    finetuning: {}
    hat: {algorithm: {name: hat, s_max: 100}, backbone: {name: hat_mask_mlp, hidden_dims: [16]}}
search:
  experiment.algorithm.aggregation: {grid: [min, max], when: {variants.method: hat}}
  experiment.train.batch_size: {grid: [32, 64]}
searcher: {name: grid}
seeds: [7, 8]
"""


def problems(text, write_yaml, *overrides):
    with pytest.raises(SpecError) as info:
        load_sweep(write_yaml(text), overrides)
    return [(dotted(p.path), p.message, p.line) for p in info.value.problems]


def test_defaults_and_trial_count(write_yaml, tiny):
    spec = load_sweep(write_yaml(tiny + "search:\n  experiment.train.lr: {log_uniform: [0.001, 0.1]}\n"))
    assert spec.searcher.name == "tpe" and spec.searcher.samples is None
    assert [(o.metric, o.mode) for o in spec.objectives] == [("avg_acc_val", "max")]
    assert spec.protocol.name == "validation" and spec.seeds == (0,) and spec.retries == 1
    assert spec.num_trials == 10 and spec.max_tasks == 2
    assert load_sweep(write_yaml(tiny + "seeds: 2\n")).num_trials == 2  # nothing sampled: one per seed
    assert spec.params[0].kind == "log_uniform" and spec.params[0].log


def test_grid_with_variants_and_conditions_in_file_order(write_yaml):
    spec = load_sweep(write_yaml(BENCH))
    assert spec.grid_points == (
        {"variants.method": "finetuning", "experiment.train.batch_size": 32},
        {"variants.method": "finetuning", "experiment.train.batch_size": 64},
        {
            "variants.method": "hat",
            "experiment.algorithm.aggregation": "min",
            "experiment.train.batch_size": 32,
        },
        {
            "variants.method": "hat",
            "experiment.algorithm.aggregation": "min",
            "experiment.train.batch_size": 64,
        },
        {
            "variants.method": "hat",
            "experiment.algorithm.aggregation": "max",
            "experiment.train.batch_size": 32,
        },
        {
            "variants.method": "hat",
            "experiment.algorithm.aggregation": "max",
            "experiment.train.batch_size": 64,
        },
    )
    assert spec.num_trials == 12  # 6 points x 2 seeds


def test_variant_replaces_a_renamed_component_whole(write_yaml):
    spec = load_sweep(write_yaml(BENCH))
    cfg = spec.experiment_for(
        {"variants.method": "hat", "experiment.algorithm.aggregation": "max", "seed": 8}
    )
    assert (cfg.algorithm.name, cfg.backbone.name, cfg.seed) == ("hat", "hat_mask_mlp", 8)
    assert cfg.algorithm.params.s_max == 100 and cfg.algorithm.params.aggregation == "max"
    assert cfg.train.lr == 0.1  # untouched base values stay
    base = spec.experiment_for({"variants.method": "finetuning", "seed": 7})
    assert (base.algorithm.name, base.backbone.name) == ("finetuning", "mlp")


def test_tpe_repeats_grid_entries_and_seeds(write_yaml, tiny):
    spec = load_sweep(
        write_yaml(
            tiny
            + """
search:
  experiment.train.lr: {uniform: [0.01, 0.1]}
  experiment.train.batch_size: {grid: [32, 64, 128]}
searcher: {samples: 4}
seeds: 2
"""
        )
    )
    assert [p.name for p in spec.repeat_params] == ["experiment.train.batch_size"]
    assert spec.num_trials == 4 * 3 * 2


def test_seed_count_starts_at_the_experiment_seed(write_yaml, tiny):
    spec = load_sweep(write_yaml(tiny.replace("seed: 0\n  bench", "seed: 5\n  bench") + "seeds: 3\n"))
    assert spec.seeds == (5, 6, 7)


def test_overrides_reach_search_entries_by_their_dotted_key(write_yaml, tiny):
    path = write_yaml(tiny + "search:\n  experiment.train.lr: {uniform: [0.01, 0.1]}\n")
    spec = load_sweep(
        path,
        [
            "search.experiment.train.lr.uniform=[0.02, 0.05]",
            "search.experiment.train.epochs={int: [1, 3]}",
            "searcher.samples=3",
            "experiment.benchmark.num_tasks=3",
        ],
    )
    assert (spec.params[0].low, spec.params[0].high) == (0.02, 0.05)
    assert spec.params[1].name == "experiment.train.epochs" and spec.params[1].kind == "int"
    assert spec.num_trials == 3 and spec.max_tasks == 3
    assert apply_sweep_overrides({"search": {"a.b": {"choice": [1]}}}, ["search.a.b.choice=[2]"]) == {
        "search": {"a.b": {"choice": [2]}}
    }


def test_fingerprint_follows_content_not_cluster(write_yaml, tiny):
    a = load_sweep(write_yaml(tiny))
    assert load_sweep(write_yaml(tiny + "cluster: {address: auto}\n")).fingerprint == a.fingerprint
    assert load_sweep(write_yaml(tiny), ["experiment.train.epochs=2"]).fingerprint != a.fingerprint
    assert parse_sweep(a.data).fingerprint == a.fingerprint  # round trip through the stored data


def test_non_scalar_choices_are_allowed(write_yaml, tiny):
    spec = load_sweep(
        write_yaml(tiny + "search:\n  experiment.backbone.hidden_dims: {choice: [[16], [32, 32]]}\n")
    )
    assert spec.experiment_for({"experiment.backbone.hidden_dims": [32, 32]}).backbone.params.hidden_dims == [
        32,
        32,
    ]


def test_first_k_runs_fewer_tasks(write_yaml, tiny):
    spec = load_sweep(write_yaml(tiny + "protocol: {name: first_k, k: 1}\n"))
    assert spec.max_tasks_per_trial() == 1 and spec.max_tasks == 1
    assert spec.trial_tasks(spec.experiment_for({})) == 1


@pytest.mark.parametrize(
    "extra, where, message",
    [
        (
            "search:\n  experiment.algorithm.s_max: {uniform: [1, 10]}\n",
            "search.experiment.algorithm.s_max",
            "HAT knob on a non-HAT algorithm",
        ),
        (
            "search:\n  experiment.train.lr: {uniform: [0.1, 0.01]}\n",
            "search.experiment.train.lr",
            "low 0.1 > high 0.01",
        ),
        (
            "search:\n  experiment.train.lr: {log_uniform: [0, 0.1]}\n",
            "search.experiment.train.lr",
            "log scale needs low > 0",
        ),
        (
            "search:\n  experiment.train.optimizer: {choice: []}\n",
            "search.experiment.train.optimizer",
            "empty",
        ),
        (
            "search:\n  experiment.train.optimizer: {choice: [sgd, rmsprop]}\n",
            "search.experiment.train.optimizer",
            "'rmsprop'",
        ),
        (
            "search:\n  experiment.train.lrate: {uniform: [0.1, 1]}\n",
            "search.experiment.train.lrate",
            "unknown training parameter",
        ),
        ("search:\n  experiment.seed: {choice: [1, 2]}\n", "search.experiment.seed", "use `seeds:`"),
        (
            "search:\n  experiment.train.lr: {uniform: [0.1, 1], choice: [1]}\n",
            "search.experiment.train.lr",
            "exactly one",
        ),
        (
            "search:\n  experiment.train.lr: {uniform: [0.01, 0.1]}\nsearcher: {name: grid}\n",
            "search.experiment.train.lr",
            "finite values",
        ),
        ("objective: {metric: avg_acc_test}\n", "objective.metric", "reads the test split"),
        ("objective: {metric: avg_acc_test}\nprotocol: {name: test}\n", "protocol.leaky", "leaky: true"),
        ("objective: {metric: accuracy}\n", "objective.metric", "unknown metric"),
        ("objective: {metric: capacity_mean, mode: min}\n", "objective.metric", "HAT-family algorithms only"),
        ("protocol: {name: first_k}\n", "protocol.k", "needs k"),
        ("protocol: {name: first_k, k: 9}\n", "protocol.k", "only 2 tasks"),
        (
            "objective: [{metric: avg_acc_val}, {metric: forgetting_val}]\nscheduler: {name: asha}\n",
            "scheduler.name",
            "two objectives",
        ),
        ("scheduler: {name: asha, grace_period: 3}\n", "scheduler.grace_period", "nothing to stop"),
        ("seeds: []\n", "seeds", "empty"),
        ("searcher: {samples: 5}\n", "searcher.samples", "nothing is sampled"),
        ("searcher: {name: bayes}\n", "searcher.name", "'bayes'"),
        ("resources: {gpus: -1}\n", "resources.gpus", "greater than or equal to 0"),
        ("colour: blue\n", "colour", "unknown key"),
    ],
)
def test_bad_sweep_files_name_the_field(write_yaml, tiny, extra, where, message):
    found = problems(tiny + extra, write_yaml)
    assert any(w.endswith(where) and message in m for w, m, _ in found), found


def test_conditions_are_checked(write_yaml, tiny):
    base = tiny.replace("{name: finetuning}", "{name: hat}").replace("{name: mlp,", "{name: hat_mask_mlp,")
    found = problems(
        base
        + """
search:
  experiment.train.lr: {uniform: [0.01, 0.1]}
  experiment.algorithm.s_max: {uniform: [10, 100], when: {experiment.train.lr: 0.1}}
  experiment.algorithm.aggregation: {choice: [min, max], when: {variants.method: hat}}
  experiment.train.momentum: {choice: [0.0, 0.9], when: {experiment.train.batch_size: 32}}
  experiment.train.batch_size: {choice: [32, 64]}
""",
        write_yaml,
    )
    assert {(w, m.split(" (")[0].split(";")[0]) for w, m, _ in found} == {
        (
            "search.experiment.algorithm.s_max.when.experiment.train.lr",
            "a condition cannot depend on a continuous entry",
        ),
        ("search.experiment.algorithm.aggregation.when.variants.method", "unknown variant axis 'method'"),
        (
            "search.experiment.train.momentum.when.experiment.train.batch_size",
            "conditions may only use entries listed before",
        ),
    }
    never = problems(
        base
        + "search:\n  experiment.train.lr: {uniform: [0.01, 0.1], when: {experiment.algorithm.name: adahat}}\n",
        write_yaml,
    )
    assert never == [
        ("search.experiment.train.lr.when", "this condition never holds, so the entry is never sampled", 9)
    ]


def test_errors_carry_line_numbers(write_yaml, tiny):
    found = problems(tiny + "search:\n  experiment.train.lr: {uniform: [0.1, 0.01]}\n", write_yaml)
    assert found[0][2] == 9  # the line of the search entry


def test_variant_errors_point_into_the_variant(write_yaml):
    text = BENCH.replace("{name: hat, s_max: 100}", "{name: hat, s_max: -1}")
    found = problems(text, write_yaml)
    assert any(w.endswith("variants.method.hat.algorithm.s_max") for w, _, _ in found), found
