"""Sweeps end to end on the shared local Ray: every shipped sweep file validates, the offline ones
run (shrunk with --set), and a sweep with a failing and a pruned trial records each correctly."""

from __future__ import annotations

import glob
import pickle
from pathlib import Path

import pytest
from optuna.trial import TrialState

from clsweep.spec.sweep import load_sweep

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
SHRINK = [
    "experiment.train.epochs=1",
    "experiment.benchmark.num_tasks=2",
    "resources.max_concurrent=2",
    "experiment.backbone.hidden_dims=[32]",
]
OFFLINE = {  # the sets that make each offline sweep 2-4 trials of 2 tasks x 1 epoch
    "quickstart.yaml": ["searcher.samples=2"],
    "hat_smax.yaml": ["seeds=1", "search.experiment.algorithm.s_max.grid=[100, 400]"],
    "hat_init_aggregation.yaml": ["seeds=1", "search.experiment.algorithm.init_mode.grid=[N01]"],
    "adahat.yaml": ["searcher.samples=2", "protocol.k=2"],
    "benchmark_digits.yaml": [
        "seeds=1",
        "variants.method={finetuning: {}, joint: {algorithm: {name: joint}}, "
        "hat: {algorithm: {name: hat}, backbone: {name: hat_mask_mlp, hidden_dims: [32]}}}",
    ],
    "benchmark_digits_cil.yaml": ["seeds=1", "variants.method={finetuning: {}, er: {algorithm: {name: er}}}"],
    # strengths kept where no method diverges on this shrunk run (a diverged trial is a failed one)
    "baselines_tuned_digits.yaml": [
        "searcher.samples=3",
        "search.experiment.algorithm.strength.log_uniform=[0.1,10]",
    ],
    "hat_pbt_digits.yaml": ["searcher.samples=3"],  # 3 trials, one PBT boundary
}


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_file_validates(path, cli):
    code, out, err = cli("validate", str(path))
    assert code == 0, err


def test_offline_files_are_the_ones_run_below():
    offline = {
        p.name
        for p in SPACES.glob("*.yaml")
        if load_sweep(p).experiment["benchmark"]["source"] in ("digits", "synthetic")
    }
    assert offline == set(OFFLINE)


@pytest.fixture(scope="module")
def shared_storage(tmp_path_factory):
    """One storage root (one MLflow store) for the shipped sweeps, as a user would have."""
    return tmp_path_factory.mktemp("storage")


@pytest.mark.parametrize("name", list(OFFLINE))
def test_offline_sweep_runs(name, cli, ray_address, shared_storage, runs_of, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the report (quickstart only) goes to ./reports/NAME
    sets = [a for s in SHRINK + OFFLINE[name] for a in ("--set", s)] + (
        ["--no-report"] if name != "quickstart.yaml" else []
    )
    spec = load_sweep(SPACES / name, SHRINK + OFFLINE[name])
    assert spec.num_trials <= 4
    code, out, err = cli(
        "run", str(SPACES / name), "--storage", str(shared_storage), "--address", ray_address, *sets
    )
    assert code == 0, err
    assert (tmp_path / "reports" / spec.name / "index.html").exists() == (name == "quickstart.yaml")
    tmp_path = shared_storage
    runs = runs_of(f"sqlite:///{tmp_path}/mlflow.db", spec.name)
    trials = [r for r in runs if r.data.tags.get("clsweep.role") == "trial"]
    assert len(trials) == spec.num_trials
    for run in trials:
        state = run.data.tags["clsweep.status"]
        assert (state, run.info.status) in {("finished", "FINISHED"), ("pruned", "KILLED")}
        assert run.data.metrics["tasks_done"] == (2 if state == "finished" else 1)
        assert run.data.params["benchmark.num_tasks"] == "2"
    [parent] = [r for r in runs if r.data.tags.get("clsweep.role") == "sweep"]
    assert parent.info.status == "FINISHED"


FAILING = """
name: faults
experiment:
  benchmark: {name: permuted, source: digits, num_tasks: 2, seed: 0}
  backbone: {name: mlp, hidden_dims: [32]}
  algorithm: {name: finetuning}
  train: {epochs: 3, lr: 0.05}
search:
  experiment.train.lr: {grid: [0.05, 1.0e-5, 1.0e10]}   # good, hopeless (pruned), absurd (NaN loss)
searcher: {name: grid}
scheduler: {name: asha, grace_period: 1, reduction_factor: 2}
resources: {max_concurrent: 1}
retries: 0
"""


def test_failed_and_pruned_trials_are_recorded(cli, ray_address, write_yaml, tmp_path, runs_of):
    code, out, err = cli(
        "run", str(write_yaml(FAILING)), "--storage", str(tmp_path), "--address", ray_address, "--no-report"
    )
    assert code == 1  # a trial failed, and stderr says which and why
    [line] = [x for x in err.splitlines() if x.startswith("failed:")]
    assert "NonFiniteLossError" in line and "error.txt" in line, err
    runs = {
        r.data.params["train.lr"]: r
        for r in runs_of(f"sqlite:///{tmp_path}/mlflow.db", "faults")
        if r.data.tags["clsweep.role"] == "trial"
    }
    assert {lr: (r.info.status, r.data.tags["clsweep.status"]) for lr, r in runs.items()} == {
        "0.05": ("FINISHED", "finished"),
        "1e-05": ("KILLED", "pruned"),
        "10000000000.0": ("FAILED", "failed"),
    }
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    failed = runs["10000000000.0"].info.run_id
    assert {a.path for a in client.list_artifacts(failed)} >= {"traceback.txt", "config.yaml"}
    assert (
        "NonFiniteLossError"
        in Path(client.download_artifacts(failed, "traceback.txt", str(tmp_path))).read_text()
    )
    finished = runs["0.05"].info.run_id
    assert {a.path for a in client.list_artifacts(finished)} == {
        "config.yaml",
        "acc_matrix_val.csv",
        "acc_matrix_test.csv",
    }
    state = pickle.loads(Path(glob.glob(str(tmp_path / "faults" / "searcher-state-*.pkl"))[0]).read_bytes())
    assert [t.state for t in state["_ot_study"].trials] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.FAIL,
    ]
    from clsweep.sweep.summary import stored_sweep

    stored = stored_sweep(tmp_path, "faults")
    assert stored.state == "complete" and stored.summary.total == 3
    assert {k: stored.summary.counts[k] for k in ("finished", "pruned", "failed")} == {
        "finished": 1,
        "pruned": 1,
        "failed": 1,
    }
    assert stored.summary.best[0].config == {"experiment.train.lr": 0.05}
    assert cli("status", "faults", "--storage", str(tmp_path))[0] == 0
