"""``clsweep best`` and ``clsweep export`` on a real sweep: the best config reruns with
``clsweep experiment`` to the best trial's test accuracy matrix; the Optuna study written to a
real sqlite RDB storage loads back with the same trials, states, intermediate values and best value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import clsweep

CLSWEEP = Path(sys.executable).with_name("clsweep")


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as in a 1-CPU trial
    return subprocess.run(
        [str(CLSWEEP), *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd
    )


def test_best_reruns_to_the_best_trials_matrix(api_sweep, tmp_path):
    _, storage = api_sweep
    out = tmp_path / "best.yaml"
    done = _cli("best", "apisweep", "--storage", str(storage), "-o", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert "'apisweep'" in header[0] and "protocol validation" in header[0]
    assert any("avg_acc_val (max) =" in line for line in header)
    config = yaml.safe_load(text)
    assert config["train"]["lr"] == 0.05 and config["seed"] == 4 and config["benchmark"]["seed"] == 1
    df = clsweep.load("apisweep", storage=storage)
    best = df[df.status == "finished"].iloc[0]
    expected = df.attrs["sweep"].matrix(best["trial_id"], "test")
    ran = _cli("experiment", str(out), "--out", str(tmp_path / "rerun"))
    assert ran.returncode == 0, ran.stderr
    got = json.loads((tmp_path / "rerun" / "results.json").read_text())["test_acc_matrix"]
    for t, row in enumerate(got):
        for j, value in enumerate(row):
            want = expected.iloc[t, j]
            assert (value is None and want != want) or value == pytest.approx(want, abs=1e-6)
    assert _cli("best", "no_such_sweep", "--storage", str(storage)).returncode == 2


def test_export_writes_an_optuna_study(api_sweep, tmp_path):
    import optuna

    _, storage = api_sweep
    url = f"sqlite:///{tmp_path / 'study.db'}"
    done = _cli("export", "apisweep", "--storage", str(storage), "--optuna-storage", url)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="apisweep", storage=url)
    df = clsweep.load("apisweep", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == len(df) == 3
    states = {t.user_attrs["trial_id"]: t.state.name for t in trials}
    expected = {"finished": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL"}
    assert states == {r.trial_id: expected[r.status] for r in df.itertuples()}
    best = df[df.status == "finished"].iloc[0]
    assert study.best_value == pytest.approx(best["avg_acc_val"])
    assert study.best_trial.params == {"experiment.train.lr": 0.05}
    assert study.best_trial.distributions[
        "experiment.train.lr"
    ] == optuna.distributions.CategoricalDistribution([0.05, 1.0e-5, 1.0e30])
    assert sorted(study.best_trial.intermediate_values) == [1, 2, 3]
    assert {t.user_attrs["seed"] for t in trials} == {4}
    [pruned] = [t for t in trials if t.state.name == "PRUNED"]
    assert sorted(pruned.intermediate_values) == [1] and pruned.value == pruned.intermediate_values[1]
    again = _cli("export", "apisweep", "--storage", str(storage), "--optuna-storage", url)
    assert again.returncode == 2 and "already has a study" in again.stderr
