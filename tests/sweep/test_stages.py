"""The stage after the search, on real tiny sweeps (synthetic data, 2 tasks, 1 epoch): confirmation of
the best configurations on new seeds, a driver killed during it, and protocol first_task's final runs.
Every expectation is computed by hand from the MLflow runs."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from clsweep.report.stats import spread
from clsweep.storage import SweepPaths, read_json
from clsweep.sweep.summary import stored_sweep
from tests.sweep.test_reliability import start_driver

SWEEP = """
name: {name}
experiment:
  seed: 0
  benchmark: {{name: permuted, source: synthetic, num_tasks: 2, seed: 0}}
  backbone: {{name: mlp, hidden_dims: [16]}}
  algorithm: {{name: finetuning}}
  train: {{epochs: 1, batch_size: 64, lr: 0.05}}
search:
  experiment.train.lr: {{grid: [0.05, 0.02, 0.01]}}
searcher: {{name: grid}}
{extra}
"""


def trial_runs(runs_of: Any, storage: Path, name: str) -> list[Any]:
    runs = runs_of(f"sqlite:///{storage}/mlflow.db", name)
    return [r for r in runs if r.data.tags.get("clsweep.role") == "trial"]


def by_stage(runs: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for r in runs:
        out[r.data.tags["clsweep.stage"]].append(r)
    return out


def means(runs: list[Any], metric: str = "avg_acc_val") -> dict[str, list[float]]:
    """Configuration (its clsweep.config tag) -> the final objective of each of its runs."""
    out: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        out[r.data.tags["clsweep.config"]].append(r.data.metrics[metric])
    return out


def test_confirmation_reruns_the_top_k_on_new_seeds_and_picks_the_winner_on_their_mean(
    write_yaml, tmp_path, ray_address, cli, runs_of
):
    path = write_yaml(SWEEP.format(name="conf", extra="seeds: 1\nconfirm: {top_k: 2, seeds: 2}"))
    code, out, _ = cli("validate", str(path))
    assert code == 0 and "confirm" in out and "new seeds 1..2" in out
    code, _, err = cli("run", str(path), "--storage", str(tmp_path), "--address", ray_address, "--no-report")
    assert code == 0, err

    runs = trial_runs(runs_of, tmp_path, "conf")
    stages = by_stage(runs)
    assert len(stages["search"]) == 3 and len(stages["confirm"]) == 2 * 2  # top_k x seeds
    search_seeds = {int(r.data.tags["clsweep.seed"]) for r in stages["search"]}
    confirm_seeds = {int(r.data.tags["clsweep.seed"]) for r in stages["confirm"]}
    assert search_seeds == {0} and confirm_seeds == {1, 2}  # new seeds, never used by the search
    assert all(r.data.tags["clsweep.protocol"] == "validation" and r.info.status == "FINISHED" for r in runs)

    searched = {c: sum(v) / len(v) for c, v in means(stages["search"]).items()}
    confirmed = means(stages["confirm"])
    assert all(len(v) == 2 for v in confirmed.values()) and len(confirmed) == 2
    left_out = [m for c, m in searched.items() if c not in confirmed]
    assert min(searched[c] for c in confirmed) >= max(left_out)  # the top 2 of the search (ties allowed)
    confirm_mean = {c: sum(v) / len(v) for c, v in confirmed.items()}
    best = max(confirm_mean.values())

    paths = SweepPaths.at(tmp_path, "conf")
    record = read_json(paths.record)
    assert record["complete"] and record["stage"]["seeds"] == [1, 2]
    sweep = stored_sweep(tmp_path, "conf")  # clsweep status
    assert sweep.stage == "confirm" and sweep.summary.done == 4 and sweep.search is not None
    assert sweep.summary.best[0].values[0] == pytest.approx(best)

    out_dir = tmp_path / "report"
    code, _, err = cli("report", "conf", "--storage", str(tmp_path), "--out", str(out_dir))
    assert code == 0, err
    section = json.loads((out_dir / "summary.json").read_text())["confirmation"]
    assert section["stage"] == "confirm" and section["seeds"] == [1, 2]
    assert sorted(json.dumps(c, sort_keys=True) for c in section["configs"]) == sorted(confirmed)
    for entry in section["ranking"]:
        values = confirmed[json.dumps(entry["config"], sort_keys=True)]
        expected = spread(values)
        assert entry["objective"]["mean"] == pytest.approx(expected["mean"])
        assert entry["objective"]["ci95"] == pytest.approx(expected["ci95"])
    winner = section["winner"]
    assert winner["objective"]["mean"] == pytest.approx(best)
    assert confirm_mean[json.dumps(winner["config"], sort_keys=True)] == pytest.approx(best)
    assert set(winner["test_metrics"]) >= {"avg_acc_test"}

    from clsweep.api import best_experiment, load

    best_trial = best_experiment(load("conf", storage=tmp_path).attrs["sweep"])  # clsweep best
    assert best_trial.stage == "confirm" and best_trial.mean == pytest.approx(best)
    assert best_trial.seed in (1, 2)


def _results(folder: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in folder.glob("*/result.json")}


def _done(text: str) -> bool:
    """A trial's result.json text shows its last task done."""
    lines = [json.loads(x) for x in text.splitlines() if x.strip()]
    return any(r.get("tasks_done") == r.get("tasks_total") for r in lines)


def test_a_driver_killed_during_confirmation_resumes_it_without_rerunning_anything(
    write_yaml, tmp_path, ray_address, cli, runs_of
):
    extra = "seeds: 1\nconfirm: {top_k: 1, seeds: 3}\nresources: {max_concurrent: 1}"
    path = write_yaml(SWEEP.format(name="killed", extra=extra))
    paths = SweepPaths.at(tmp_path, "killed")
    driver = start_driver(path, tmp_path, ray_address)
    # killed as soon as one confirmation trial has written its last task's result (the trials'
    # own files, written as they happen; the status file is written at a bounded rate)
    deadline, finished = time.monotonic() + 240, set()
    while time.monotonic() < deadline and not finished:
        finished = {tid for tid, text in _results(paths.sweep_dir / "confirm").items() if _done(text)}
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    finished = {tid for tid, text in _results(paths.sweep_dir / "confirm").items() if _done(text)}
    assert finished and len(finished) < 3, finished  # killed with confirmation runs still to do
    search_before = _results(paths.sweep_dir)
    confirm_before = _results(paths.sweep_dir / "confirm")
    assert len(search_before) == 3 and read_json(paths.record)["stage"]["seeds"] == [1, 2, 3]

    code, _, err = cli(
        "resume", "killed", "--storage", str(tmp_path), "--address", ray_address, "--no-report"
    )
    assert code == 0, err
    assert _results(paths.sweep_dir) == search_before  # the search did not run again
    for tid in finished:  # finished confirmation trials trained nothing again
        lines = [json.loads(x) for x in _results(paths.sweep_dir / "confirm")[tid].splitlines()]
        assert lines[: len(confirm_before[tid].splitlines())] == [
            json.loads(x) for x in confirm_before[tid].splitlines()
        ]
        assert [r["tasks_done"] for r in lines if not r.get("replayed")] == [1, 2]
    stages = by_stage(trial_runs(runs_of, tmp_path, "killed"))
    assert len(stages["search"]) == 3 and len(stages["confirm"]) == 3  # exactly one run per trial
    pairs = {(r.data.tags["clsweep.config"], r.data.tags["clsweep.seed"]) for r in stages["confirm"]}
    assert len(pairs) == 3 and {s for _, s in pairs} == {"1", "2", "3"}
    assert all(r.info.status == "FINISHED" for rs in stages.values() for r in rs)
    after = read_json(paths.sweep_dir / "confirm" / "clsweep_status.json")
    assert sorted(t["trial_id"] for t in after["trials"]) == sorted(
        r.data.tags["clsweep.trial_id"] for r in stages["confirm"]
    )
    assert read_json(paths.record)["complete"] is True


def test_first_task_protocol_searches_on_task_one_then_runs_the_whole_stream(
    write_yaml, tmp_path, ray_address, cli, runs_of
):
    text = SWEEP.format(name="first", extra="protocol: {name: first_task}").replace(
        "num_tasks: 2", "num_tasks: 4"
    )
    path = write_yaml(text)
    shrink = [
        "--set",
        "experiment.benchmark.num_tasks=2",
        "--set",
        "seeds=2",
        "--set",
        "search.experiment.train.lr.grid=[0.05,0.01]",
    ]
    code, out, _ = cli("validate", str(path), *shrink)
    assert code == 0 and "task 1 only" in out and "final" in out
    code, _, err = cli(
        "run", str(path), "--storage", str(tmp_path), "--address", ray_address, "--no-report", *shrink
    )
    assert code == 0, err
    runs = trial_runs(runs_of, tmp_path, "first")
    stages = by_stage(runs)
    assert set(stages) == {"search", "final"} and len(stages["search"]) == 2 * 2 and len(stages["final"]) == 2
    for r in stages["search"]:
        assert r.data.metrics["tasks_done"] == 1 and r.data.params["trial.tasks"] == "1"
    for r in stages["final"]:
        assert r.data.metrics["tasks_done"] == 2 and r.data.params["trial.tasks"] == "2"
    assert {r.data.tags["clsweep.seed"] for r in stages["final"]} == {"0", "1"}  # the sweep's seeds
    searched = {c: sum(v) / len(v) for c, v in means(stages["search"]).items()}
    (chosen,) = {r.data.tags["clsweep.config"] for r in stages["final"]}
    assert searched[chosen] == max(searched.values())  # chosen on task 1's validation split
    parent = [
        r
        for r in runs_of(f"sqlite:///{tmp_path}/mlflow.db", "first")
        if r.data.tags.get("clsweep.role") == "sweep"
    ]
    assert all(r.data.tags["clsweep.protocol"] == "first_task" for r in runs + parent)
    assert (
        parent[0].info.status == "FINISHED" and read_json(SweepPaths.at(tmp_path, "first").record)["complete"]
    )

    code, _, err = cli("report", "first", "--storage", str(tmp_path), "--out", str(tmp_path / "report"))
    assert code == 0, err
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert (
        summary["setup"]["protocol"] == "first_task"
        and "Lee et al. 2024" in summary["setup"]["protocol_note"]
    )
    section = summary["confirmation"]
    assert section["stage"] == "final" and section["seeds"] == [0, 1]
    assert [json.dumps(c, sort_keys=True) for c in section["configs"]] == [chosen]
    assert summary["best_trial"]["run_id"] in {r.info.run_id for r in stages["final"]}


def _plan(extra: str) -> Any:
    import yaml

    from clsweep.spec.sweep import parse_sweep

    return parse_sweep(yaml.safe_load(SWEEP.format(name="plan", extra=extra)))


def _problems(extra: str) -> list[tuple[tuple[object, ...], str]]:
    from clsweep.spec.errors import SpecError

    with pytest.raises(SpecError) as err:
        _plan(extra)
    return [(tuple(p.path), p.message) for p in err.value.problems]


def test_the_confirm_section_is_checked_before_anything_runs():
    assert any(path[:1] == ("confirm",) for path, _ in _problems("confirm: {top_k: 0}"))
    assert any(path[:1] == ("confirm",) for path, _ in _problems("confirm: {seeds: 0}"))
    assert any(path[:1] == ("confirm",) for path, _ in _problems("confirm: {top_k: 2, size: 3}"))
    two = "objective: [{metric: avg_acc_val}, {metric: bwt_val}]\nconfirm: {top_k: 2}"
    assert ("confirm",) in [path for path, _ in _problems(two)]
    assert ("confirm",) in [
        path for path, _ in _problems("protocol: {name: first_task}\nconfirm: {top_k: 2}")
    ]
    assert ("scheduler", "grace_period") in [
        path for path, _ in _problems("protocol: {name: first_task}\nscheduler: {name: asha}")
    ]
    plan = _plan("seeds: [3, 7]\nconfirm: {top_k: 2, seeds: 2}")
    assert plan.later_stage == "confirm" and _plan("").later_stage is None
    assert _plan("protocol: {name: first_task}").later_stage == "final"


def test_the_stage_takes_the_search_ranking_and_new_seeds():
    from clsweep.sweep.stages import choose, stage_points

    plan = _plan("seeds: [3, 7]\nconfirm: {top_k: 2, seeds: 2}")
    rows = [
        {"state": "finished", "config": {"lr": 0.1}, "seed": 3, "objective": [0.5]},
        {"state": "finished", "config": {"lr": 0.1}, "seed": 7, "objective": [0.7]},  # mean 0.6
        {"state": "finished", "config": {"lr": 0.2}, "seed": 3, "objective": [0.9]},
        {"state": "failed", "config": {"lr": 0.2}, "seed": 7, "objective": None},  # mean 0.9 (one seed)
        {"state": "finished", "config": {"lr": 0.3}, "seed": 3, "objective": [0.55]},
        {"state": "pruned", "config": {"lr": 0.4}, "seed": 3, "objective": [0.99]},  # never ranked
    ]
    stage = choose(plan, rows)
    assert stage["configs"] == [{"lr": 0.2}, {"lr": 0.1}] and stage["seeds"] == [8, 9]
    assert [e["mean"] for e in stage["search_ranking"]] == pytest.approx([0.9, 0.6, 0.55])
    points = stage_points(stage)
    assert [(p["lr"], p["seed"], p["stage"]) for p in points] == [
        (0.2, 8, "confirm"),
        (0.2, 9, "confirm"),
        (0.1, 8, "confirm"),
        (0.1, 9, "confirm"),
    ]
    final = choose(_plan("seeds: 2\nprotocol: {name: first_task}"), rows)
    assert final["name"] == "final" and final["configs"] == [{"lr": 0.2}] and final["seeds"] == [0, 1]
