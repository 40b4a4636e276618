"""Results a paper can cite: two importance evaluators, importance per rung, rung fidelity and the
leak gap, checked against hand computations from what MLflow holds."""

from __future__ import annotations

import json
import statistics

import pandas as pd
import pytest
from mlflow import MlflowClient

from clsweep.report.honesty import spearman
from clsweep.report.importance import param_importance
from clsweep.spec.search_space import Param
from tests.report.test_real_sweep import _children


def test_importance_ranks_the_knob_that_decides_first_under_both_evaluators():
    """A known function: the categorical knob moves the objective a lot, the float one barely."""
    mode = Param("experiment.algorithm.init_mode", "choice", values=("N01", "U-11", "U01"))
    s_max = Param("experiment.algorithm.s_max", "log_uniform", 25.0, 800.0, log=True)
    level = {"N01": 0.59, "U-11": 0.71, "U01": 0.82}
    configs, values = [], []
    for i in range(24):
        m, s = ("N01", "U-11", "U01")[i % 3], 25.0 * (32.0 ** ((i * 7 % 24) / 23))
        configs.append({mode.name: m, s_max.name: s})
        values.append([level[m] + 1e-4 * (s / 800.0)])
    imp = param_importance(configs, values, [("avg_acc_val", "max")], [s_max, mode])
    for evaluator in ("values", "second"):
        ranked = imp[evaluator]["avg_acc_val"]
        assert max(ranked, key=ranked.get) == "algorithm.init_mode", (evaluator, ranked)
        assert ranked["algorithm.init_mode"] > 0.9 and sum(ranked.values()) == pytest.approx(1.0)
    assert imp["disagreement"] == {} and not imp["rough"] and "fANOVA" in imp["evaluator"]


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    x, y = [0.1, 0.4, 0.4, 0.9, 0.5], [1.0, 3.0, 2.0, 5.0, 4.0]
    assert spearman(x, y) == pytest.approx(pd.Series(x).rank().corr(pd.Series(y).rank()))
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1, 2], [1, 2]) is None


def _histories(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_rung_fidelity_and_leak_gap_equal_a_hand_computation_from_mlflow(sweeps, main_report):
    sweep = sweeps["main"]  # ASHA, 2 tasks: rung fidelity after task 1
    summary = json.loads((main_report / "summary.json").read_text())
    client = MlflowClient(sweep.tracking_uri)
    runs = _children(sweep.tracking_uri, "quickstart")
    finished = [r for r in runs.values() if r.data.tags["clsweep.status"] == "finished"]
    after_1 = [_histories(client, r.info.run_id, "avg_acc_val")[1] for r in finished]
    final = [r.data.metrics["avg_acc_val"] for r in finished]
    fidelity = summary["rung_fidelity"]
    assert fidelity["available"] and fidelity["rungs"][0]["after_task"] == 1
    assert fidelity["rungs"][0]["trials"] == len(finished) == 6
    by_hand = pd.Series(after_1).rank().corr(pd.Series(final).rank())
    assert fidelity["rungs"][0]["spearman"] == pytest.approx(by_hand)

    groups: dict[str, dict[str, list[float]]] = {}
    for r in finished:
        g = groups.setdefault(r.data.tags["clsweep.config"], {"val": [], "test": []})
        g["val"].append(r.data.metrics["avg_acc_val"])
        g["test"].append(r.data.metrics["avg_acc_test"])
    means = {k: (statistics.mean(g["val"]), statistics.mean(g["test"])) for k, g in groups.items()}
    honest = max(means, key=lambda k: means[k][0])
    leaky = max(means, key=lambda k: means[k][1])
    gap = summary["leak_gap"]["overall"]
    assert gap["test_metric"] == "avg_acc_test"
    assert gap["honest"]["test"] == pytest.approx(means[honest][1])
    assert gap["test_tuned"]["test"] == pytest.approx(means[leaky][1])
    assert gap["gap"] == pytest.approx(means[leaky][1] - means[honest][1]) and gap["gap"] >= 0
    assert json.dumps(gap["honest"]["config"], sort_keys=True) == honest

    html = (main_report / "index.html").read_text()
    assert '<section id="honesty">' in html and "leak gap" in html and "Spearman" in html
    rung_rows = summary["rung_importance"]
    assert [r["after_task"] for r in rung_rows] == [1, 2] and all(r["configurations"] == 3 for r in rung_rows)


KNOWN = """
name: known
experiment:
  imports: [tests.report.known_function_plugin]
  seed: 0
  benchmark: {name: permuted, source: synthetic, num_tasks: 2, seed: 0}
  backbone: {name: mlp, hidden_dims: [32]}
  algorithm: {name: known_function}
  train: {epochs: 2, batch_size: 32, lr: 0.1}
search:
  experiment.algorithm.mode: {choice: [sharp, blurred, blind]}
  experiment.algorithm.jitter: {uniform: [0.0, 0.001]}
searcher: {name: random, samples: 12, seed: 0}
resources: {max_concurrent: 2}
"""


def test_a_sweep_of_a_known_function_ranks_the_knob_that_decides_first(tmp_path):
    """A real sweep of a plugin algorithm whose validation accuracy is a known function of its
    knobs: the report ranks the categorical knob that decides first under both evaluators."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from clsweep.report import report_sweep
    from tests.report import known_function_plugin  # noqa: F401 - registers the algorithm here too

    repo = Path(__file__).resolve().parents[2]
    space = tmp_path / "known.yaml"
    space.write_text(KNOWN)
    env = {**os.environ, "PYTHONPATH": str(repo), "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clsweep",
            "run",
            str(space),
            "--storage",
            str(tmp_path / "runs"),
            "--no-report",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    index = report_sweep("known", storage=tmp_path / "runs", out=tmp_path / "report")
    summary = json.loads((index.parent / "summary.json").read_text())
    imp = summary["importance"]
    for evaluator in ("values", "second"):
        ranked = imp[evaluator]["avg_acc_val"]
        assert max(ranked, key=ranked.get) == "algorithm.mode", (evaluator, ranked)
        assert ranked["algorithm.mode"] > 5 * ranked["algorithm.jitter"]
