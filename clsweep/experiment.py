"""One CL experiment: build benchmark, backbone, heads and algorithm, then run the task loop.

The loop is written out here, top to bottom. Lightning (Fabric) places the model and the optimiser
on the device and runs the backward pass; the algorithm (a LightningModule) supplies the learning
rule through the hooks listed in :mod:`clsweep.algorithms.base`. Each task's tensors are moved to
the device once and batches are drawn by index there: no DataLoader, no per-sample Python.

This module imports neither Ray nor MLflow: it reports each finished task through a callback and
the sweeper turns that into Tune reports and MLflow metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clsweep import metrics, registry
from clsweep.algorithms.base import CLAlgorithm
from clsweep.recovery import STATE_FILE, write_atomically
from clsweep.spec.experiment import ExperimentConfig
from clsweep.training import NonFiniteLossError, train_task

__all__ = ["ExperimentResult", "NonFiniteLossError", "TaskReport", "build", "run_experiment"]


@dataclass
class TaskReport:
    """What the loop knows after finishing a task (1-based ``task`` = tasks done)."""

    task: int
    num_tasks: int
    metrics: dict[str, float]
    val_acc_matrix: list[list[float | None]]
    test_acc_matrix: list[list[float | None]]
    diagnostics: dict[str, float]
    seconds: float
    checkpoint_dir: Path | None = None


@dataclass
class ExperimentResult:
    config: dict[str, Any]
    val_acc_matrix: list[list[float | None]]
    test_acc_matrix: list[list[float | None]]
    per_task: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        last = self.per_task[-1] if self.per_task else {}
        return {
            "acc": last.get("avg_acc_test"),
            "bwt": last.get("bwt_test"),
            "forgetting": last.get("forgetting_test"),
            "acc_val": last.get("avg_acc_val"),
            "bwt_val": last.get("bwt_val"),
            "forgetting_val": last.get("forgetting_val"),
            **({"fwt": last["fwt_test"]} if "fwt_test" in last else {}),
            "seconds": self.seconds,
            "device": self.device,
            "test_acc_matrix": self.test_acc_matrix,
            "val_acc_matrix": self.val_acc_matrix,
            "per_task": self.per_task,
            "config": self.config,
        }


def build(cfg: ExperimentConfig) -> tuple[Any, CLAlgorithm]:
    """The benchmark stream and the algorithm (with its backbone and heads) for ``cfg``.
    Initialisation is seeded by the trial seed."""
    registry.import_plugins(cfg.imports)
    stream = registry.create("benchmark", cfg.benchmark.name, cfg.paradigm, params=cfg.benchmark.params)
    torch.manual_seed(cfg.seed)
    backbone = registry.create(
        "backbone", cfg.backbone.name, tuple(stream.input_shape), params=cfg.backbone.params
    )
    heads = registry.create("heads", cfg.heads.name, backbone.output_dim, params=cfg.heads.params)
    algorithm = registry.create("algorithm", cfg.algorithm.name, backbone, heads, params=cfg.algorithm.params)
    algorithm.train_config = cfg.train
    return stream, algorithm


def _task_seed(seed: int, task_id: int) -> int:
    return (seed * 1_000_003 + task_id * 7919) % (2**63 - 1)


@torch.no_grad()
def _accuracy(
    algorithm: CLAlgorithm, x: torch.Tensor, y: torch.Tensor, task_id: int, batch_size: int
) -> float:
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        logits = algorithm.evaluate_logits(x[start : start + batch_size], task_id)
        correct += (logits.argmax(1) == y[start : start + batch_size]).sum()
    return float(correct.item()) / max(1, x.shape[0])


def _save(directory: Path, state: dict[str, Any]) -> None:
    """Replace the state file in ``directory`` (clsweep.recovery: a copy never sees half a file)."""
    write_atomically(directory / STATE_FILE, lambda tmp: torch.save(state, tmp))


def _fabric(device: str) -> Any:
    from lightning.fabric import Fabric

    if device == "cpu":
        return Fabric(accelerator="cpu", devices=1, precision="32-true")
    index = int(device.split(":")[1]) if ":" in device else 0
    return Fabric(accelerator="cuda", devices=[index], precision="32-true")


def run_experiment(
    cfg: ExperimentConfig,
    *,
    on_task_end: Callable[[TaskReport], None] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    max_tasks: int | None = None,
    device: str | None = None,
) -> ExperimentResult:
    """Train the task sequence of ``cfg`` and evaluate every seen task after each one.

    ``checkpoint_dir``: after each task the full state is written there (replacing the previous
    one) before ``on_task_end`` is called. ``resume_from``: a directory written that way; training
    continues after its last task with the same numbers as an uninterrupted run (CPU).
    ``max_tasks``: stop after this many tasks. ``device`` overrides ``cfg.device``.
    """
    device = device or cfg.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available on this machine")
    started = time.perf_counter()
    fabric = _fabric(device)
    stream, algorithm = build(cfg)
    T = stream.num_tasks
    last_task = min(T, max_tasks) if max_tasks else T
    columns = T if cfg.evaluate_future else None
    val_rows: list[list[float | None]] = []
    test_rows: list[list[float | None]] = []
    per_task: list[dict[str, float]] = []
    initial_test: list[float] = []
    first = 1
    elapsed_before = 0.0

    if resume_from is not None and (Path(resume_from) / STATE_FILE).exists():
        state = torch.load(Path(resume_from) / STATE_FILE, map_location="cpu", weights_only=False)
        for t in range(1, state["tasks_done"] + 1):
            algorithm.setup_task(t, stream.task(t).num_classes)
        algorithm.load_state_dict(state["model"])
        algorithm.load_extra_state(state["extra"])
        val_rows, test_rows, per_task = state["val"], state["test"], state["per_task"]
        initial_test, elapsed_before = state["initial_test"], state["seconds"]
        first = state["tasks_done"] + 1

    module = fabric.setup_module(algorithm)
    module.mark_forward_method("training_step")
    dev = fabric.device
    eval_bs = cfg.train.eval_batch_size
    cache: dict[int, Any] = {}

    def on_device(task_id: int) -> Any:
        """Task data moved to the device once, then reused for training and every evaluation."""
        if task_id not in cache:
            cache[task_id] = stream.task(task_id).to(dev)
        return cache[task_id]

    for t in range(1, first):  # resumed: the algorithm sees the completed tasks' data again, in order
        algorithm.on_task_data(t, on_device(t))

    if cfg.evaluate_future and first == 1:  # the untrained model's accuracy, for FWT
        for t in range(1, T + 1):
            algorithm.setup_task(t, stream.task(t).num_classes)
        fabric.to_device(algorithm)
        algorithm.eval()
        initial_test = [
            _accuracy(algorithm, on_device(t).test_x, on_device(t).test_y, t, eval_bs)
            for t in range(1, T + 1)
        ]

    for t in range(first, last_task + 1):
        task = on_device(t)
        torch.manual_seed(_task_seed(cfg.seed, t))  # same numbers whether or not the run was resumed
        algorithm.setup_task(t, task.num_classes)
        fabric.to_device(algorithm)  # a new head was created on the CPU
        algorithm.on_task_data(t, task)
        algorithm.on_task_start(t)
        generator = torch.Generator(device=dev).manual_seed(_task_seed(cfg.seed, t) + 1)
        try:
            trained = train_task(fabric, module, algorithm, task, t, cfg.train, generator)
        except NonFiniteLossError as err:
            err.result = ExperimentResult(
                cfg.to_dict(),
                val_rows,
                test_rows,
                per_task,
                elapsed_before + time.perf_counter() - started,
                str(dev),
            )
            raise
        algorithm.on_task_end(t)

        algorithm.eval()
        columns_now = T if cfg.evaluate_future else t
        val_row: list[float | None] = [None] * (columns or T)
        test_row: list[float | None] = [None] * (columns or T)
        for j in range(1, columns_now + 1):
            tj = on_device(j)
            val_row[j - 1] = _accuracy(algorithm, tj.val_x, tj.val_y, j, eval_bs)
            test_row[j - 1] = _accuracy(algorithm, tj.test_x, tj.test_y, j, eval_bs)
        val_rows.append(val_row)
        test_rows.append(test_row)

        row_metrics: dict[str, float] = {
            "tasks_done": float(t),
            "loss_train": trained.loss_train,
            "epochs_run": float(trained.epochs_run),
        }
        for split, rows in (("val", val_rows), ("test", test_rows)):
            for key, value in metrics.summary(rows).items():
                row_metrics[f"{key}_{split}"] = value
        if cfg.evaluate_future and t >= 2:
            row_metrics["fwt_test"] = metrics.forward_transfer(test_rows, initial_test)
        diagnostics = algorithm.diagnostics()
        row_metrics.update(diagnostics)
        per_task.append(row_metrics)
        seconds = elapsed_before + time.perf_counter() - started

        saved_to = None
        if checkpoint_dir is not None:
            saved_to = Path(checkpoint_dir)
            _save(
                saved_to,
                {
                    "tasks_done": t,
                    "model": algorithm.state_dict(),
                    "extra": algorithm.extra_state(),
                    "val": val_rows,
                    "test": test_rows,
                    "per_task": per_task,
                    "initial_test": initial_test,
                    "seconds": seconds,
                },
            )
        if on_task_end is not None:
            on_task_end(
                TaskReport(
                    t,
                    T,
                    row_metrics,
                    [list(r) for r in val_rows],
                    [list(r) for r in test_rows],
                    diagnostics,
                    seconds,
                    saved_to,
                )
            )

    return ExperimentResult(
        cfg.to_dict(), val_rows, test_rows, per_task, elapsed_before + time.perf_counter() - started, str(dev)
    )
