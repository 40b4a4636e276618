"""The per-task schedules: fixed epochs, and the HAT code's plateau schedule (lr divided on a
validation plateau, early stop, best epoch restored); a diverging run ends with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clsweep.experiment import run_experiment
from clsweep.recovery import STATE_FILE
from clsweep.spec import parse_experiment
from tests.core import schedule_plugin

ROOT = Path(__file__).resolve().parents[2]


def _cfg(algorithm: str, schedule: dict, tasks: int = 1, **train) -> dict:
    return {
        "imports": ["tests.core.schedule_plugin"],
        "seed": 0,
        "benchmark": {"name": "permuted", "source": "synthetic", "num_tasks": tasks},
        "backbone": {"name": "mlp", "hidden_dims": [16]},
        "algorithm": {"name": algorithm},
        "train": {"schedule": schedule, "batch_size": 32, "lr": 0.1, "eval_batch_size": 4096, **train},
    }


def _final_weights(tmp_path: Path) -> dict[str, torch.Tensor]:
    return torch.load(tmp_path / STATE_FILE, map_location="cpu", weights_only=False)["model"]


@pytest.fixture(autouse=True)
def _fresh_log():
    schedule_plugin.LOG.clear()
    yield
    schedule_plugin.LOG.clear()


def test_plateau_divides_the_learning_rate_stops_and_restores_the_best_epoch(tmp_path):
    # validation loss 3, 2, 1 (best, epoch 3), then 2, 3: patience 2 runs out -> lr 0.1 / 2 = 0.05,
    # fresh optimiser, patience reset; 4, 5: out again -> 0.025 < min_lr 0.03: stop after epoch 7
    schedule_plugin.SCRIPT[:] = [3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    schedule = {"name": "plateau", "max_epochs": 50, "patience": 2, "factor": 2.0, "min_lr": 0.03}
    result = run_experiment(parse_experiment(_cfg("scripted_validation", schedule)), checkpoint_dir=tmp_path)
    assert result.per_task[0]["epochs_run"] == 7
    assert [e["lr"] for e in schedule_plugin.LOG] == pytest.approx([0.1] * 5 + [0.05] * 2)
    final, best = _final_weights(tmp_path), schedule_plugin.LOG[2]["weights"]
    assert final.keys() == best.keys() and all(torch.equal(final[k], best[k]) for k in final)
    last = schedule_plugin.LOG[-1]["weights"]
    assert not all(torch.equal(final[k], last[k]) for k in final)  # training went on after the best epoch


def test_plateau_keeps_the_last_weights_without_restore_best(tmp_path):
    schedule_plugin.SCRIPT[:] = [3.0, 2.0, 1.0, 2.0, 3.0]
    schedule = {
        "name": "plateau",
        "max_epochs": 50,
        "patience": 2,
        "factor": 2.0,
        "min_lr": 0.06,
        "restore_best": False,
    }
    result = run_experiment(parse_experiment(_cfg("scripted_validation", schedule)), checkpoint_dir=tmp_path)
    assert result.per_task[0]["epochs_run"] == 5  # 0.1 / 2 = 0.05 < 0.06 after epoch 5
    final, last = _final_weights(tmp_path), schedule_plugin.LOG[-1]["weights"]
    assert all(torch.equal(final[k], last[k]) for k in final)


def test_plateau_stops_at_max_epochs_while_the_loss_improves():
    schedule_plugin.SCRIPT[:] = [10.0 - i for i in range(10)]
    schedule = {"name": "plateau", "max_epochs": 4, "patience": 1}
    result = run_experiment(parse_experiment(_cfg("scripted_validation", schedule, tasks=2)))
    assert [p["epochs_run"] for p in result.per_task] == [4, 4]  # per task, fresh schedule each task


def test_plateau_on_real_data_restores_the_epoch_of_least_validation_loss(tmp_path):
    schedule = {"name": "plateau", "max_epochs": 12, "patience": 2, "factor": 3.0, "min_lr": 0.01}
    cfg = parse_experiment(_cfg("recorded_validation", schedule, lr=0.8))
    result = run_experiment(cfg, checkpoint_dir=tmp_path)
    log = schedule_plugin.LOG
    assert result.per_task[0]["epochs_run"] == len(log)
    assert len({e["n"] for e in log}) == 1 and log[0]["n"] > 0  # one pass per epoch, over the whole split
    best = min(range(len(log)), key=lambda i: log[i]["loss"])
    final = _final_weights(tmp_path)
    assert all(torch.equal(final[k], log[best]["weights"][k]) for k in final)


def test_fixed_schedule_runs_its_epochs_and_reports_them():
    cfg = parse_experiment(_cfg("finetuning", {"name": "fixed"}, tasks=2, epochs=3))
    assert [p["epochs_run"] for p in run_experiment(cfg).per_task] == [3, 3]


def test_a_diverging_run_ends_with_one_line_and_the_completed_tasks(tmp_path):
    import yaml

    config = tmp_path / "diverge.yaml"
    config.write_text(yaml.safe_dump(_cfg("diverges_in_task_2", {"name": "fixed"}, tasks=3, epochs=1)))
    done = subprocess.run(
        [sys.executable, "-m", "clsweep", "experiment", str(config), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert "diverged" in done.stderr and "task 2, epoch 1" in done.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(results["per_task"]) == 1 and len(results["test_acc_matrix"]) == 1
    assert "task 2" in results["diverged"]


def test_the_sgd_optimiser_updates_bit_for_bit_like_torchs_default_sgd() -> None:
    """make_optimizer's SGD (foreach kernels) against torch.optim.SGD with its default
    implementation, momentum and weight decay on, some parameters without a gradient at some
    steps (an old task's head): the same weights to the last bit."""
    import copy

    from clsweep.experiment import build

    raw = _cfg("finetuning", {"name": "fixed"}, tasks=2, momentum=0.9, weight_decay=5e-4)
    raw["train"].pop("schedule")
    _, ours = build(parse_experiment(raw))
    for t in (1, 2):
        ours.setup_task(t, 10)
    plain = copy.deepcopy(ours)
    opt_ours = ours.make_optimizer(0.1)
    opt_plain = torch.optim.SGD(
        [p for p in plain.parameters() if p.requires_grad], lr=0.1, momentum=0.9, weight_decay=5e-4
    )
    assert opt_ours.defaults["foreach"] and not opt_plain.defaults["foreach"]
    gen = torch.Generator().manual_seed(0)
    for step in range(20):
        x = torch.randn(16, *ours.backbone.input_shape, generator=gen)
        y = torch.randint(0, 10, (16,), generator=gen)
        task = 1 + step % 3 // 2  # task 2's head sits out some steps, task 1's others
        for model, opt in ((ours, opt_ours), (plain, opt_plain)):
            opt.zero_grad(set_to_none=True)
            logits, _ = model(x, stage="train", task_id=task)
            torch.nn.functional.cross_entropy(logits, y).backward()
            opt.step()
    for (name, a), b in zip(ours.state_dict().items(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
