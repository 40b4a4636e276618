"""The task loop end to end on tiny benchmarks: hook order, determinism, resume, Fix, forgetting."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clsweep import registry
from clsweep.experiment import NonFiniteLossError, TaskReport, run_experiment
from clsweep.recovery import STATE_FILE
from clsweep.spec import parse_experiment

ROOT = Path(__file__).resolve().parents[2]


def tiny(algorithm: str = "finetuning", **changes: Any) -> dict[str, Any]:
    hat = "hat_family" in registry.get("algorithm", algorithm).tags
    cfg: dict[str, Any] = {
        "seed": 0,
        "benchmark": {"name": "permuted", "source": "synthetic", "num_tasks": 3},
        "backbone": {"name": "hat_mask_mlp" if hat else "mlp", "hidden_dims": [32, 32]},
        "algorithm": {"name": algorithm},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.1},
    }
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def test_hooks_are_called_in_order_over_two_tasks() -> None:
    from tests.core import recording_plugin

    recording_plugin.CALLS.clear()
    cfg = parse_experiment(
        tiny(
            "finetuning",
            imports=["tests.core.recording_plugin"],
            algorithm__name="recording",
            benchmark__num_tasks=2,
            train__epochs=1,
            train__batch_size=1000,
        )
    )
    run_experiment(cfg)
    step = ["training_step(0)", "on_before_optimizer_step", "on_train_batch_end"]
    expected = [
        "setup_task(1)",
        "on_task_data(1)",
        "on_task_start(1)",
        "training_set(1)",
        "on_train_epoch_start",
        *step,
        "post_train_epochs(1)",
        "on_task_end(1)",
        "evaluate(1)",
        "evaluate(1)",
        "diagnostics",
    ] + [
        "setup_task(2)",
        "on_task_data(2)",
        "on_task_start(2)",
        "training_set(2)",
        "on_train_epoch_start",
        *step,
        "post_train_epochs(2)",
        "on_task_end(2)",
        "evaluate(1)",
        "evaluate(1)",
        "evaluate(2)",
        "evaluate(2)",
        "diagnostics",
    ]
    assert recording_plugin.CALLS == expected


# every registered algorithm except the test-only plugins (hook order, schedules)
@pytest.mark.parametrize(
    "algorithm", [e.name for e in registry.entries("algorithm") if "test_only" not in e.tags]
)
def test_every_algorithm_runs_two_tasks_deterministically(algorithm: str, tmp_path: Path) -> None:
    cfg = parse_experiment(tiny(algorithm, benchmark__num_tasks=2))
    reports: list[TaskReport] = []
    first = run_experiment(cfg, on_task_end=reports.append, checkpoint_dir=tmp_path / "ckpt")
    again = run_experiment(cfg)
    assert first.test_acc_matrix == again.test_acc_matrix and first.val_acc_matrix == again.val_acc_matrix
    assert [r.task for r in reports] == [1, 2]
    assert all(math.isfinite(v) for r in reports for v in r.metrics.values())
    assert reports[-1].test_acc_matrix[0][1] is None  # not evaluated above the diagonal
    assert all(0.0 <= v <= 1.0 for row in first.test_acc_matrix for v in row if v is not None)
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == [
        STATE_FILE
    ]  # replaced in place, nothing beside it
    assert reports[-1].checkpoint_dir == tmp_path / "ckpt"
    other = run_experiment(parse_experiment(tiny(algorithm, benchmark__num_tasks=2, seed=1)))
    assert other.test_acc_matrix != first.test_acc_matrix


@pytest.mark.parametrize("algorithm", ["finetuning", "hat", "adahat"])
def test_resume_after_a_task_gives_the_uninterrupted_numbers(algorithm: str, tmp_path: Path) -> None:
    cfg = parse_experiment(tiny(algorithm))
    whole = run_experiment(cfg)
    run_experiment(cfg, checkpoint_dir=tmp_path, max_tasks=2)
    seen: list[int] = []
    resumed = run_experiment(cfg, resume_from=tmp_path, on_task_end=lambda r: seen.append(r.task))
    assert seen == [3]
    assert resumed.test_acc_matrix == whole.test_acc_matrix
    assert resumed.val_acc_matrix == whole.val_acc_matrix


def test_fix_keeps_task_one_exactly() -> None:
    result = run_experiment(parse_experiment(tiny("fix", train__epochs=3)))
    first = [row[0] for row in result.test_acc_matrix]
    assert first == [first[0]] * len(first)
    assert all(row[0] is not None for row in result.val_acc_matrix)


def test_each_step_updates_with_its_own_gradient_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop clears every gradient before a step's backward: when the optimiser steps, each
    parameter's .grad is exactly the gradient of that step's loss (none left over from the step
    before), and a parameter the loss does not reach (an old task's head) has none."""
    import torch

    from clsweep.algorithms.finetuning import Finetuning

    checked: list[bool] = []
    plain_step = Finetuning.training_step

    def training_step(self: Any, batch: Any, batch_idx: int) -> dict[str, Any]:
        out = plain_step(self, batch, batch_idx)
        self._params = [p for p in self.parameters() if p.requires_grad]
        self._expected = torch.autograd.grad(out["loss"], self._params, retain_graph=True, allow_unused=True)
        return out

    def on_before_optimizer_step(self: Any, optimizer: Any) -> None:
        for p, g in zip(self._params, self._expected, strict=True):
            checked.append(p.grad is None if g is None else p.grad is not None and torch.equal(p.grad, g))

    monkeypatch.setattr(Finetuning, "training_step", training_step)
    monkeypatch.setattr(Finetuning, "on_before_optimizer_step", on_before_optimizer_step)
    run_experiment(parse_experiment(tiny("finetuning", benchmark__num_tasks=2)))
    assert len(checked) > 20 and all(checked)


def test_nan_loss_raises() -> None:
    cfg = parse_experiment(tiny("finetuning", train__lr=1e30, train__epochs=3))
    with pytest.raises(NonFiniteLossError, match="task 1"):
        run_experiment(cfg)


@pytest.mark.parametrize(("paradigm", "benchmark"), [("cil", "split"), ("dil", "rotated"), ("til", "split")])
def test_paradigms_run(paradigm: str, benchmark: str) -> None:
    cfg = parse_experiment(
        tiny("finetuning", paradigm=paradigm, benchmark__name=benchmark, benchmark__num_tasks=2)
    )
    result = run_experiment(cfg)
    assert len(result.test_acc_matrix) == 2 and result.test_acc_matrix[1][1] is not None


def test_forward_transfer_in_dil() -> None:
    cfg = parse_experiment(
        tiny("finetuning", paradigm="dil", benchmark__name="rotated", evaluate_future=True)
    )
    result = run_experiment(cfg).to_dict()
    assert all(v is not None for row in result["test_acc_matrix"] for v in row)
    assert "fwt" in result and -1.0 <= result["fwt"] <= 1.0


def test_cli_writes_results_json(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "clsweep",
            "experiment",
            str(ROOT / "configs" / "finetuning_digits.yaml"),
            "--set",
            "train.epochs=2",
            "--set",
            "benchmark.num_tasks=3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "results.json").read_text())
    assert len(data["test_acc_matrix"]) == 3 and data["test_acc_matrix"][0][1] is None
    assert data["val_acc_matrix"][2][0] is not None
    for key in ("acc", "bwt", "forgetting", "seconds"):
        assert isinstance(data[key], float)
    assert data["config"]["train"]["epochs"] == 2 and data["config"]["heads"] == {"name": "til"}
    assert "task 1" in proc.stdout  # the matrix table is printed


@pytest.mark.slow
def test_digits_finetuning_forgets_and_fix_keeps_task_one() -> None:
    """The shipped digits configs: Finetuning's BWT is clearly negative, Fix keeps task 1."""
    from clsweep.spec import load_experiment

    ft = run_experiment(
        load_experiment(ROOT / "configs" / "finetuning_digits.yaml", ["train.epochs=10"])
    ).to_dict()
    fix = run_experiment(load_experiment(ROOT / "configs" / "fix_digits.yaml", ["train.epochs=3"])).to_dict()
    assert ft["bwt"] < -0.05, ft["bwt"]
    assert len({row[0] for row in fix["test_acc_matrix"]}) == 1
    assert fix["bwt"] == pytest.approx(0.0, abs=1e-9)


def test_config_dict_is_not_mutated_by_a_run() -> None:
    raw = tiny("finetuning", benchmark__num_tasks=1)
    before = copy.deepcopy(raw)
    run_experiment(parse_experiment(raw))
    assert raw == before
