"""The report of a real (tiny) quickstart sweep: every section is there, every number in
summary.json is the one MLflow holds, the figures are real PNGs, the page is self-contained."""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from clsweep.report.cli import add_report_command
from clsweep.report.load import dedupe_by_step, parse_matrix_csv
from clsweep.report.stats import t_quantile_975
from clsweep.spec.errors import SpecError

SECTIONS = [
    "setup",
    "top",
    "parameters",
    "importance",
    "history",
    "best",
    "capacity",
    "pruned",
    "failed",
    "trials",
]
FIGURES = [
    "objective_vs_params",
    "importance",
    "history",
    "objective_curves",
    "accuracy_matrix",
    "task_curves",
    "capacity",
]


def _children(uri: str, name: str) -> dict[str, object]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    [parent] = [r for r in runs if r.data.tags.get("clsweep.role") == "sweep"]
    return {r.info.run_id: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}


def _history(client: MlflowClient, run_id: str, key: str) -> list[list[float]]:
    points = [(m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key)]
    return [[s, v] for s, v in dedupe_by_step(points)]


def test_the_sweep_ran(sweeps):
    assert sweeps["main"].exit_code == 0


def test_every_section_and_figure_is_present(main_report):
    html = (main_report / "index.html").read_text()
    markdown = (main_report / "README.md").read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
        assert f'<a id="{section}"></a>' in markdown
    assert "benchmark" not in re.findall(r'<section id="(\w+)">', html)  # one algorithm: no benchmark table
    assert not (main_report / "benchmark_table.tex").exists()
    for name in FIGURES:
        png = (main_report / "figures" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000
        assert f"](figures/{name}.png)" in markdown
        assert f'id="fig-{name}"' in html
    import matplotlib.image

    pixels = matplotlib.image.imread(main_report / "figures" / "accuracy_matrix.png")
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0.05  # not a blank canvas


def test_html_is_one_offline_file(main_report):
    html = (main_report / "index.html").read_text()
    assert "<script" not in html
    assert not re.search(
        r'(src|href)="(?!data:image/png;base64,|#)', html
    )  # no external resource, no file link
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', html)) == len(FIGURES)


def test_summary_equals_what_mlflow_holds(sweeps, main_report):
    sweep = sweeps["main"]
    summary = json.loads((main_report / "summary.json").read_text())
    client = MlflowClient(sweep.tracking_uri)
    runs = _children(sweep.tracking_uri, "quickstart")
    assert summary["counts"] == {"finished": 6, "pruned": 0, "failed": 0, "other": 0, "runs": 6, "budget": 6}
    assert {t["run_id"] for t in summary["trials"]} == set(runs)
    for t in summary["trials"]:
        run = runs[t["run_id"]]
        assert t["state"] == run.data.tags["clsweep.status"]
        assert t["seed"] == int(run.data.tags["clsweep.seed"])
        assert t["config"] == json.loads(run.data.tags["clsweep.config"])
        assert t["metrics"]["avg_acc_val"] == run.data.metrics["avg_acc_val"]
        assert t["tasks_done"] == run.data.metrics["tasks_done"] == 2
        assert t["compute_s"] == run.data.metrics["experiment_seconds"]
    assert summary["compute"]["trial_compute_s"] == pytest.approx(
        sum(r.data.metrics["experiment_seconds"] for r in runs.values())
    )

    # best configurations: mean, sample std and the t-interval over the seeds of each configuration
    groups: dict[str, list[float]] = {}
    for run in runs.values():
        groups.setdefault(run.data.tags["clsweep.config"], []).append(run.data.metrics["avg_acc_val"])
    means = sorted((statistics.mean(v) for v in groups.values()), reverse=True)
    top = summary["top_configurations"]
    assert [g["objectives"]["avg_acc_val"]["mean"] for g in top] == pytest.approx(means)
    for g in top:
        values = groups[json.dumps(g["config"], sort_keys=True)]
        stats = g["objectives"]["avg_acc_val"]
        assert stats["n"] == len(values) == 2 and g["seeds"] == [0, 1]
        assert stats["std"] == pytest.approx(statistics.stdev(values))
        half = t_quantile_975(1) * statistics.stdev(values) / math.sqrt(2)
        assert stats["ci95"] == pytest.approx(
            [statistics.mean(values) - half, statistics.mean(values) + half]
        )

    # the best trial: one of the best configuration's seeds, with its histories and matrices
    best = summary["best_trial"]
    assert best["run_id"] in top[0]["run_ids"]
    for key in ("avg_acc_test", "bwt_test", "forgetting_test", "avg_acc_val"):
        assert best["per_task"][key] == _history(client, best["run_id"], key)
        assert [s for s, _ in best["per_task"][key]] == [1, 2]  # step = tasks done
    for split in ("test", "val"):
        path = client.download_artifacts(best["run_id"], f"acc_matrix_{split}.csv", str(main_report.parent))
        assert best["matrices"][split] == parse_matrix_csv(Path(path).read_text())
    layers = [
        k.removeprefix("capacity/") for k in runs[best["run_id"]].data.metrics if k.startswith("capacity/")
    ]
    assert sorted(summary["capacity"]["layers"]) == sorted(layers) and layers
    for layer in layers:
        assert summary["capacity"]["layers"][layer] == _history(client, best["run_id"], f"capacity/{layer}")

    # the history: finished trials in the order they ended, best so far never decreasing
    history = summary["history"]
    assert len(history) == 6
    best_so_far = [h["best_so_far"] for h in history]
    assert best_so_far == sorted(best_so_far)
    assert best_so_far[-1] == max(r.data.metrics["avg_acc_val"] for r in runs.values())
    importance = summary["importance"]
    assert importance["available"] and set(importance["values"]["avg_acc_val"]) <= {
        "algorithm.s_max",
        "algorithm.init_mode",
        "algorithm.aggregation",
    }
    assert sum(importance["values"]["avg_acc_val"].values()) == pytest.approx(1.0)
    assert summary["setup"]["protocol"] == "validation" and summary["versions"]["report"]["clsweep"]


def test_the_page_shows_the_summary_numbers(main_report):
    summary = json.loads((main_report / "summary.json").read_text())
    html = (main_report / "index.html").read_text()
    markdown = (main_report / "README.md").read_text()
    best = summary["top_configurations"][0]["objectives"]["avg_acc_val"]
    shown = f"{best['mean']:.4f} ± {best['std']:.4f} (n=2)"
    assert shown in html and shown in markdown
    assert f"{best['ci95'][0]:.4f}, {best['ci95'][1]:.4f}" in html
    assert summary["best_trial"]["trial_id"] in html


def test_a_relogged_step_keeps_the_last_value(sweeps, main_report, tmp_path):
    """A resumed trial may log a task again: the report keeps the later value of that step."""
    from clsweep.report import report_sweep

    sweep = sweeps["main"]
    shutil.copytree(sweep.storage, tmp_path / "store", ignore=shutil.ignore_patterns("mlartifacts"))
    (tmp_path / "store" / "mlartifacts").symlink_to(sweep.storage / "mlartifacts")
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    best = json.loads((main_report / "summary.json").read_text())["best_trial"]["run_id"]
    MlflowClient(uri).log_metric(best, "avg_acc_test", 0.123, step=1)
    index = report_sweep("quickstart", tracking_uri=uri, out=tmp_path / "out")
    summary = json.loads((index.parent / "summary.json").read_text())
    assert summary["best_trial"]["per_task"]["avg_acc_test"][0] == [1, 0.123]
    assert len(summary["best_trial"]["per_task"]["avg_acc_test"]) == 2


def test_report_command(sweeps, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="clsweep")
    add_report_command(parser.add_subparsers())
    sweep = sweeps["main"]
    args = parser.parse_args(
        ["report", "quickstart", "--storage", str(sweep.storage), "--out", str(tmp_path / "r"), "--top", "2"]
    )
    assert args.func(args) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert len(summary["top_configurations"]) == 2
    assert str(tmp_path / "r" / "index.html") in capsys.readouterr().out
    args = parser.parse_args(["report", "nope", "--storage", str(sweep.storage)])
    with pytest.raises(SpecError, match="no sweep 'nope'"):
        args.func(args)
    args = parser.parse_args(["report", "nope", "--tracking-uri", sweep.tracking_uri])
    with pytest.raises(SpecError, match="no sweep 'nope'"):
        args.func(args)


def test_writing_a_report_imports_neither_ray_nor_torch(sweeps, tmp_path):
    sweep = sweeps["main"]
    code = (
        "import sys; from clsweep.report import report_sweep; "
        f"report_sweep('quickstart', storage={str(sweep.storage)!r}, out={str(tmp_path)!r}); "
        "print(sorted(m for m in ('ray', 'torch', 'lightning') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "index.html").exists()
