"""The Python API on a real sweep: clsweep.run's summary, clsweep.load's frame and per-trial data,
clsweep.run_experiment, and the CLI's validation errors raised as SpecError."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

import clsweep


def test_run_returns_summary_paths_and_parent(api_sweep):
    result, storage = api_sweep
    assert result.exit_code == 1 and result.complete  # one trial failed (NaN loss): exit status 1
    assert {k: result.counts[k] for k in ("finished", "pruned", "failed")} == {
        "finished": 1,
        "pruned": 1,
        "failed": 1,
    }
    assert result.best_config == {"experiment.train.lr": 0.05}
    assert result.objective == ["avg_acc_val (max)"] and 0.2 < result.best_value[0] <= 1.0
    assert result.sweep_dir == storage / "apisweep" and result.sweep_dir.is_dir()
    assert result.tracking_uri == f"sqlite:///{storage / 'mlflow.db'}"
    assert result.report is not None and result.report.is_absolute() and result.report.is_file()
    assert result.parent_run_id


def test_load_gives_one_row_per_trial(api_sweep):
    result, storage = api_sweep
    df = clsweep.load("apisweep", storage=storage)
    assert len(df) == 3 and list(df.columns[:6]) == [
        "trial_id",
        "run_id",
        "stage",
        "status",
        "seed",
        "experiment.train.lr",
    ]
    assert sorted(df.status) == ["failed", "finished", "pruned"] and set(df.stage) == {"search"}
    assert set(df.seed) == {4}
    assert sorted(df["experiment.train.lr"]) == [1.0e-5, 0.05, 1.0e30]
    done = df[df.status == "finished"].iloc[0]
    assert done["tasks_done"] == 3 and done["avg_acc_val"] == pytest.approx(result.best_value[0])
    sweep = df.attrs["sweep"]
    per_task = sweep.per_task(done["trial_id"])
    assert list(per_task.index) == [1, 2, 3] and per_task["avg_acc_val"].iloc[-1] == done["avg_acc_val"]
    matrix = sweep.matrix(done["trial_id"], "test")
    assert matrix.shape == (3, 3) and math.isnan(matrix.iloc[0, 2]) and not matrix.iloc[2].isna().any()
    pruned = df[df.status == "pruned"].iloc[0]
    assert list(sweep.per_task(pruned["trial_id"]).index) == [1]
    assert df.copy().attrs["sweep"] is sweep  # copies keep the accessor, not a deep copy of the client


def test_run_experiment_returns_results(tmp_path):
    cfg = {
        "seed": 0,
        "benchmark": {"name": "permuted", "source": "digits", "num_tasks": 2, "seed": 0},
        "backbone": {"name": "mlp", "hidden_dims": [16]},
        "algorithm": {"name": "finetuning"},
        "train": {"epochs": 1},
    }
    data = clsweep.run_experiment(cfg, overrides=["train.lr=0.05"])
    assert len(data["test_acc_matrix"]) == 2 and data["config"]["train"]["lr"] == 0.05
    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps(cfg))
    again = clsweep.run_experiment(path, overrides=["experiment.train.lr=0.05"])
    assert again["test_acc_matrix"] == data["test_acc_matrix"]  # same seed, same numbers


def test_bad_input_raises_spec_error_with_problems(tmp_path):
    with pytest.raises(clsweep.SpecError) as err:
        clsweep.run(
            {"name": "bad", "experiment": {"benchmark": {"name": "nope"}}, "searcher": {"name": "x"}},
            storage=tmp_path,
        )
    assert err.value.problems[0].path == ("searcher", "name") and not (tmp_path / "bad").exists()
    with pytest.raises(clsweep.SpecError):
        clsweep.run_experiment({"benchmark": {"name": "permuted"}, "train": {"epochs": "many"}})
    with pytest.raises(clsweep.SpecError):
        clsweep.load("no_such_sweep", storage=tmp_path)


def test_import_clsweep_stays_light():
    code = (
        "import sys, clsweep; print(sorted(m for m in ('torch', 'ray', 'mlflow', 'pandas', 'pydantic') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
