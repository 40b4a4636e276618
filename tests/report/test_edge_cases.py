"""Reports of sweeps that are not the happy path: failed and pruned trials, a single trial, a
benchmark sweep (algorithms x benchmarks), a sweep with no trial, two objectives."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
from mlflow import MlflowClient

from clsweep.report import report_sweep


def _report(sweep, out: Path) -> tuple[dict, str, str]:
    index = report_sweep(sweep.name, storage=sweep.storage, out=out)
    return (
        json.loads((out / "summary.json").read_text()),
        index.read_text(),
        (out / "README.md").read_text(),
    )


def _trials(sweep) -> dict[str, object]:
    client = MlflowClient(sweep.tracking_uri)
    exp = client.get_experiment_by_name(sweep.name)
    return {
        r.info.run_id: r for r in client.search_runs([exp.experiment_id], "tags.`clsweep.role` = 'trial'")
    }


def test_failed_and_pruned_trials(sweeps, tmp_path):
    sweep = sweeps["faults"]
    assert sweep.exit_code == 1  # a trial failed
    summary, html, markdown = _report(sweep, tmp_path)
    runs = _trials(sweep)
    assert summary["counts"] == {"finished": 1, "pruned": 1, "failed": 1, "other": 0, "runs": 3, "budget": 3}
    [pruned] = summary["pruned"]
    run = runs[pruned["run_id"]]
    assert run.data.tags["clsweep.status"] == "pruned" and run.info.status == "KILLED"
    assert pruned["stopped_after"] == run.data.metrics["tasks_done"] == 1 and pruned["tasks_total"] == 3
    assert pruned["value_at_stop"] == run.data.metrics["avg_acc_val"]
    assert summary["objective_curves"][pruned["run_id"]] == [[1, run.data.metrics["avg_acc_val"]]]
    [failed] = summary["failed"]
    assert runs[failed["run_id"]].info.status == "FAILED"
    assert "NonFiniteLossError" in failed["error"]
    # only the finished trial is ranked and is the best trial; its matrix has 3 tasks
    [top] = summary["top_configurations"]
    finished = next(t for t in summary["trials"] if t["state"] == "finished")
    assert top["run_ids"] == [finished["run_id"]] == [summary["best_trial"]["run_id"]]
    assert len(summary["best_trial"]["matrices"]["test"]) == 3
    assert summary["history"][-1]["best_so_far"] == finished["metrics"]["avg_acc_val"]
    assert not summary["importance"]["available"] and "at least 2" in summary["importance"]["reason"]
    assert summary["capacity"] is None  # finetuning: no HAT masks
    for page in (html, markdown):
        assert "1 of 3 tasks" in page and "NonFiniteLossError" in page and "No HAT-family trial" in page


def test_single_trial_and_the_report_written_by_clsweep_run(sweeps, tmp_path):
    sweep = sweeps["single"]
    assert sweep.exit_code == 0
    written = sweep.storage.parent / "single-cwd" / "reports" / "single"  # by `clsweep run` (no --no-report)
    assert {p.name for p in written.iterdir()} >= {"index.html", "README.md", "summary.json", "figures"}
    summary, html, _ = _report(sweep, tmp_path)
    assert summary["counts"]["runs"] == 1 and summary["counts"]["finished"] == 1
    [top] = summary["top_configurations"]
    assert top["config"] == {} and top["seeds"] == [3] and top["objectives"]["avg_acc_val"]["ci95"] is None
    assert summary["setup"]["search"] == []
    assert not summary["importance"]["available"]
    assert "No parameter was searched" in html and "One seed per configuration" in html
    assert not (tmp_path / "figures" / "objective_vs_params.png").exists()
    assert not (tmp_path / "figures" / "importance.png").exists()
    assert (tmp_path / "figures" / "accuracy_matrix.png").stat().st_size > 2000
    stored = json.loads((written / "summary.json").read_text())
    assert stored["trials"] == summary["trials"]


def _half_ci(values: list[float]) -> float:
    return (
        12.706 * statistics.stdev(values) / len(values) ** 0.5 if len(values) == 2 else float("nan")
    )  # t_0.975,1


def test_benchmark_table(sweeps, tmp_path):
    sweep = sweeps["bench"]
    assert sweep.exit_code == 0
    summary, html, markdown = _report(sweep, tmp_path)
    table = summary["benchmark_table"]
    assert (table["row_axis"], table["col_axis"]) == ("method", "benchmark")
    assert table["rows"] == ["finetuning", "hat"] and sorted(table["columns"]) == ["permuted", "split"]
    values: dict[tuple[str, str], list[float]] = {}
    for run in _trials(sweep).values():
        key = (run.data.tags["clsweep.variants.method"], run.data.tags["clsweep.variants.benchmark"])
        values.setdefault(key, []).append(run.data.metrics["avg_acc_test"])
    for (method, bench), vals in values.items():
        cell = table["cells"]["avg_acc_test"][method][bench]
        assert cell["n"] == 2 and cell["mean"] == pytest.approx(statistics.mean(vals))
        assert cell["std"] == pytest.approx(statistics.stdev(vals))
        shown = f"{100 * statistics.mean(vals):.1f} ± {100 * _half_ci(vals):.1f}"  # 95% CI half-width
        assert shown in html and shown in markdown
    for bench in table["columns"]:
        best = max(table["rows"], key=lambda m: statistics.mean(values[m, bench]))
        assert table["best"]["avg_acc_test"][bench] == best
        shown = (
            f"{100 * statistics.mean(values[best, bench]):.1f} ± {100 * _half_ci(values[best, bench]):.1f}"
        )
        assert f"<strong>{shown}</strong>" in html and f"**{shown}**" in markdown
    latex = (tmp_path / "benchmark_table.tex").read_text()
    assert latex.count("\\begin{tabular}") == len(table["metrics"]) and "\\toprule" in latex
    assert re.search(r"\\textbf\{\d+\.\d \$\\pm\$ \d+\.\d\}", latex)
    assert '<section id="benchmark">' in html
    assert (
        summary["capacity"]["algorithm"] == "hat"
    )  # the best HAT-family trial, though finetuning ranked first


def _tracker(tmp_path: Path, spec_text: str):
    import yaml

    from clsweep.spec.sweep import parse_sweep
    from clsweep.tracking.store import SweepTracker

    tracker = SweepTracker(
        f"sqlite:///{tmp_path / 'mlflow.db'}", "hand", "hand", artifact_root=tmp_path / "art"
    )
    tracker.open(
        None, tags={"clsweep.protocol": "validation"}, plan=parse_sweep(yaml.safe_load(spec_text)).payload()
    )
    return tracker


SPEC = """
name: hand
experiment:
  benchmark: {name: permuted, source: digits, num_tasks: 2}
  backbone: {name: hat_mask_mlp, hidden_dims: [8]}
  algorithm: {name: hat}
search:
  experiment.algorithm.s_max: {log_uniform: [25, 800]}
  experiment.algorithm.aggregation: {choice: [min, max]}
objective: [{metric: avg_acc_val, mode: max}, {metric: forgetting_val, mode: min}]
searcher: {name: random, samples: 4}
"""


def test_a_sweep_with_no_trial_yet(tmp_path):
    tracker = _tracker(tmp_path, SPEC)
    index = report_sweep("hand", tracking_uri=tracker.uri, out=tmp_path / "out")
    summary = json.loads((index.parent / "summary.json").read_text())
    assert (
        summary["counts"]["runs"] == 0
        and summary["top_configurations"] == []
        and summary["best_trial"] is None
    )
    assert summary["sweep"]["status"] == "RUNNING"
    html = index.read_text()
    assert "No trial finished" in html and "No trial ran" in html


def test_two_objectives_rank_the_pareto_front_first(tmp_path):
    """Runs written with the sweeper's own tracker (the layout of a real sweep)."""
    tracker = _tracker(tmp_path, SPEC)
    points = {"a": (0.9, 0.30, 100.0, "min"), "b": (0.8, 0.10, 50.0, "max"), "c": (0.7, 0.20, 400.0, "min")}
    for tid, (acc, forget, s_max, agg) in points.items():
        config = {"experiment.algorithm.s_max": s_max, "experiment.algorithm.aggregation": agg}
        run = tracker.start_trial(
            tid,
            f"hand-{tid}",
            params={"trial.tasks": 2},
            tags={
                "clsweep.seed": "0",
                "clsweep.config": json.dumps(config, sort_keys=True),
                "clsweep.algorithm": "hat",
            },
        )
        tracker.log_metrics(run, {"avg_acc_val": acc, "forgetting_val": forget, "tasks_done": 2}, step=2)
        tracker.end_trial(run, "finished")
    index = report_sweep("hand", tracking_uri=tracker.uri, out=tmp_path / "out")
    summary = json.loads((index.parent / "summary.json").read_text())
    ranked = [(g["config"]["experiment.algorithm.s_max"], g["pareto"]) for g in summary["top_configurations"]]
    assert ranked == [(100.0, True), (50.0, True), (400.0, False)]  # c is dominated by b
    assert summary["best_trial"]["matrices"] == {"test": None, "val": None}  # no artifacts logged: no matrix
    assert "accuracy_matrix" not in {p.stem for p in (index.parent / "figures").iterdir()}
    assert set(summary["importance"]["values"]) == {"avg_acc_val", "forgetting_val"}
