"""The sweep plan: validated once on the driver, rebuilt from its payload elsewhere without
enumerating the sweep's configurations again."""

from __future__ import annotations

import json

import pytest

from clsweep.spec import _config_checks, experiment
from clsweep.spec.sweep import SweepPlan, load_sweep
from clsweep.spec.sweep_file import SweepFile

GRID = """
name: plan
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
protocol: {name: first_k, k: 2}
"""


@pytest.fixture
def parses(monkeypatch):
    """Counts configuration enumerations and experiment parses."""
    counts = {"enumerations": 0, "experiments": 0}
    enumerate_all, parse = _config_checks.check_configurations, experiment.parse_experiment

    def counting_enumeration(*args, **kwargs):
        counts["enumerations"] += 1
        return enumerate_all(*args, **kwargs)

    def counting_parse(*args, **kwargs):
        counts["experiments"] += 1
        return parse(*args, **kwargs)

    monkeypatch.setattr(_config_checks, "check_configurations", counting_enumeration)
    monkeypatch.setattr(_config_checks, "parse_experiment", counting_parse)
    import clsweep.spec.sweep as sweep_module

    monkeypatch.setattr(sweep_module, "parse_experiment", counting_parse)
    return counts


def test_the_file_is_a_public_typed_model(write_yaml):
    plan = load_sweep(write_yaml(GRID))
    assert isinstance(plan.file, SweepFile)
    assert plan.file.searcher.name == "grid" and plan.file.protocol.k == 2
    assert plan.name == "plan" and plan.seeds == (7, 8)
    assert plan.num_grid_points == 6 and len(plan.grid_points) == 6  # finetuning x 2 + hat x 2 x 2
    assert plan.num_trials == 12 and plan.max_tasks == 2


def test_a_worker_rebuilds_the_plan_without_enumerating(write_yaml, parses):
    plan = load_sweep(write_yaml(GRID))
    assert parses["enumerations"] == 1  # the driver's validation
    payload = json.loads(json.dumps(plan.payload()))  # travels as plain data
    parses.update(enumerations=0, experiments=0)
    rebuilt = SweepPlan.from_payload(payload)
    config = {
        "variants.method": "hat",
        "experiment.algorithm.aggregation": "max",
        "experiment.train.batch_size": 32,
        "seed": 8,
    }
    cfg = rebuilt.experiment_for(config)
    assert parses == {"enumerations": 0, "experiments": 1}  # the trial's own experiment only
    assert cfg.algorithm.name == "hat" and cfg.algorithm.params.aggregation == "max" and cfg.seed == 8
    assert rebuilt.num_trials == plan.num_trials and rebuilt.max_tasks == plan.max_tasks
    assert rebuilt.fingerprint == plan.fingerprint and rebuilt.params == plan.params
    assert rebuilt.objectives == plan.objectives and rebuilt.grid_points == ()


def test_a_payload_that_does_not_match_its_fingerprint_is_refused(write_yaml):
    payload = load_sweep(write_yaml(GRID)).payload()
    payload["sweep"] = {**payload["sweep"], "seeds": [1, 2]}
    with pytest.raises(ValueError, match="fingerprint"):
        SweepPlan.from_payload(payload)
    with pytest.raises(ValueError, match="payload"):
        SweepPlan.from_payload({"name": "plan"})
