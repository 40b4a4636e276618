"""Bad input through the real command line: exit status 2, one message naming the field (and the
line), nothing started and nothing written (no storage folder, no MLflow store)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clsweep.storage import SweepPaths, write_json

HAT = """
name: tiny
experiment:
  benchmark: {name: permuted, source: digits, num_tasks: 2}
  backbone: {name: hat_mask_mlp, hidden_dims: [32]}
  algorithm: {name: hat}
  train: {epochs: 1}
"""

CASES = {
    "unknown key": (HAT + "serach: {}\n", [], "serach: unknown key"),
    "wrong type": (HAT.replace("epochs: 1", "epochs: many"), [], "experiment.train.epochs"),
    "s_max <= 0": (HAT.replace("{name: hat}", "{name: hat, s_max: 0}"), [], "experiment.algorithm.s_max"),
    "searched s_max <= 0": (
        HAT + "search:\n  experiment.algorithm.s_max: {uniform: [0, 10]}\n",
        [],
        "search.experiment.algorithm.s_max: value 0.0",
    ),
    "empty choice": (
        HAT + "search:\n  experiment.algorithm.init_mode: {choice: []}\n",
        [],
        "list of values is empty",
    ),
    "unknown algorithm": (
        HAT.replace("{name: hat}", "{name: hta}"),
        [],
        "experiment.algorithm.name: unknown algorithm 'hta'",
    ),
    "unknown backbone": (
        HAT.replace("hat_mask_mlp", "hat_mask_mpl"),
        [],
        "experiment.backbone.name: unknown backbone",
    ),
    "unknown benchmark": (
        HAT.replace("permuted", "permutated"),
        [],
        "experiment.benchmark.name: unknown benchmark",
    ),
    "unknown init mode": (
        HAT + "search:\n  experiment.algorithm.init_mode: {grid: [N01, N11]}\n",
        [],
        "search.experiment.algorithm.init_mode: value 'N11'",
    ),
    "unknown aggregation": (
        HAT.replace("{name: hat}", "{name: hat, aggregation: mean}"),
        [],
        "experiment.algorithm.aggregation",
    ),
    "HAT knob, non-HAT algorithm": (
        HAT.replace("{name: hat}", "{name: finetuning}").replace("hat_mask_mlp", "mlp")
        + "search:\n  experiment.algorithm.s_max: {log_uniform: [25, 800]}\n",
        [],
        "HAT knob on a non-HAT algorithm",
    ),
    "unsupported paradigm": (
        HAT + "  paradigm: cil\n",
        [],
        "experiment.paradigm: algorithm 'hat' does not support paradigm 'cil'",
    ),
    "low > high": (HAT + "search:\n  experiment.train.lr: {uniform: [0.5, 0.1]}\n", [], "low 0.5 > high 0.1"),
    "malformed --set": (
        HAT,
        ["--set", "experiment.train.epochs"],
        "--set: 'experiment.train.epochs' is not of the form",
    ),
    "YAML syntax error": (HAT + "search: {experiment.train.lr: [\n", [], "YAML syntax error"),
    "unreachable tracking URI": (HAT, ["--tracking-uri", "http://127.0.0.1:9"], "tracking.uri: cannot reach"),
    "file tracking store": (HAT, ["--tracking-uri", "file:///tmp/mlruns"], "refuses file stores"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_and_writes_nothing(case, cli, write_yaml, tmp_path):
    text, extra, expected = CASES[case]
    storage = tmp_path / "store"
    code, out, err = cli("run", str(write_yaml(text)), "--storage", str(storage), *extra)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and expected in err, err
    assert not storage.exists()


def test_line_numbers_in_messages(cli, write_yaml, tmp_path):
    path = write_yaml(HAT + "search:\n  experiment.train.lr: {uniform: [0.5, 0.1]}\n")
    code, _, err = cli("validate", str(path))
    assert code == 2 and f"{path}:8: search.experiment.train.lr" in err


def test_storage_of_another_sweep_is_refused(cli, write_yaml, tmp_path):
    storage = tmp_path / "store"
    other = SweepPaths.at(storage, "tiny")
    write_json(other.record, {"format": 1, "name": "tiny", "fingerprint": "0123456789abcdef", "spec": {}})
    (other.sweep_dir / "tuner.pkl").write_bytes(b"x")
    before = sorted(p.name for p in storage.rglob("*"))
    code, _, err = cli("run", str(write_yaml(HAT)), "--storage", str(storage))
    assert code == 2 and "name: " in err and "holds another sweep named 'tiny'" in err
    assert sorted(p.name for p in storage.rglob("*")) == before  # no mlflow.db, nothing new


def test_foreign_non_empty_folder_is_refused(cli, write_yaml, tmp_path):
    (tmp_path / "store" / "tiny").mkdir(parents=True)
    (tmp_path / "store" / "tiny" / "notes.txt").write_text("mine")
    code, _, err = cli("run", str(write_yaml(HAT)), "--storage", str(tmp_path / "store"))
    assert code == 2 and "holds no clsweep sweep" in err


def test_resume_and_status_of_unknown_sweep(cli, tmp_path):
    for command in ("resume", "status"):
        code, _, err = cli(command, "nope", "--storage", str(tmp_path))
        assert code == 2 and "no sweep 'nope'" in err


PROBE = """
import sys, time, json
from clsweep.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'lightning', 'mlflow', 'optuna'})
print(json.dumps({"code": code, "seconds": time.perf_counter() - start, "heavy": heavy}))
"""


def probe(*argv):
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_validate_imports_neither_torch_nor_ray_and_is_fast():
    quickstart = Path(__file__).resolve().parents[2] / "search_spaces" / "quickstart.yaml"
    found = probe("validate", str(quickstart))
    assert found["code"] == 0 and found["heavy"] == []
    assert found["seconds"] < 1.0


def test_bad_run_starts_no_ray(tmp_path):
    quickstart = Path(__file__).resolve().parents[2] / "search_spaces" / "quickstart.yaml"
    found = probe(
        "run", str(quickstart), "--storage", str(tmp_path / "s"), "--tracking-uri", "http://127.0.0.1:9"
    )
    assert found["code"] == 2 and "ray" not in found["heavy"] and "torch" not in found["heavy"]
    assert not (tmp_path / "s").exists()


def test_a_malformed_forkserver_setting_is_bad_input(cli, write_yaml, tmp_path, monkeypatch):
    monkeypatch.setenv("CLSWEEP_FORKSERVER", "flase")
    code, _, err = cli("run", str(write_yaml(HAT)), "--storage", str(tmp_path / "s"))
    assert (
        code == 2
        and "CLSWEEP_FORKSERVER: environment variable set to 'flase'; expected 1 (on) or 0 (off)" in err
    )
    assert not (tmp_path / "s").exists()
