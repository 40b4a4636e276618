"""Training a trial's tasks in the process that runs them: a Tune trial's actor, or a child of
the fork server (clsweep.sweep.forkserver). Both start from the sweep plan's payload."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from clsweep.recovery import save_result
from clsweep.spec.sweep import SweepPlan, stage_of

__all__ = ["Report", "plan_of", "quiet_environment", "run_tasks", "task_result"]

Report = Callable[[dict[str, Any], Path | None], None]
"""Send one result, with the folder of the checkpoint it comes with (or None)."""

_PLANS: dict[str, SweepPlan] = {}


def quiet_environment() -> None:
    """Drop SLURM_* (Lightning would take the trial for a SLURM task: wrong world size, rank, no
    logs) and keep Lightning's console tips out of the worker logs. Before Lightning is imported."""
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        os.environ.pop(key)
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def plan_of(payload: Mapping[str, Any]) -> SweepPlan:
    """The sweep plan of a payload, rebuilt once per process (a reused actor, the fork server's
    children) and kept by its fingerprint."""
    key = str(payload.get("fingerprint"))
    if key not in _PLANS:
        _PLANS[key] = SweepPlan.from_payload(payload)
    return _PLANS[key]


def task_result(report: Any, tasks_total: int, cpu_start: float = 0.0, device: str = "cpu") -> dict[str, Any]:
    """The Tune result of one finished task: the task loop's metrics (flat floats), progress, the
    CPU time the trial's process used so far and its pid, and the accuracy matrices as JSON text (text so that
    Tune's loggers pass them through untouched)."""
    result: dict[str, Any] = {k: float(v) for k, v in report.metrics.items()}
    result.update(
        {
            "tasks_done": int(report.task),
            "tasks_total": int(tasks_total),
            "experiment_seconds": float(report.seconds),
            "trial_cpu_seconds": time.process_time() - cpu_start,
            "trial_pid": os.getpid(),  # the process that trains: the actor's, or a child of the fork server
            "device": device,  # where the tasks trained (a string: not logged as a metric)
            "acc_matrix_val": json.dumps(report.val_acc_matrix),
            "acc_matrix_test": json.dumps(report.test_acc_matrix),
        }
    )
    return result


def run_tasks(
    plan: Mapping[str, Any],
    config: dict[str, Any],
    send: Report,
    scratch: Path,
    resume_from: Path | None,
    *,
    cpu_start: float = 0.0,
    device: str = "cpu",
) -> None:
    """Train the trial's tasks in this process (the trial's actor, or a child of the fork server),
    from ``resume_from`` if given; ``send(result, checkpoint_dir)`` after each task."""
    from clsweep.experiment import run_experiment

    spec = plan_of(plan)
    cfg = spec.experiment_for(config)
    total = spec.trial_tasks(cfg, stage_of(config))

    def on_task_end(task: Any) -> None:
        result = task_result(task, total, cpu_start, device)
        if task.checkpoint_dir is not None:  # the result travels with its checkpoint (see train_trial)
            save_result(Path(task.checkpoint_dir), result)
        send(result, task.checkpoint_dir)

    try:
        run_experiment(
            cfg,
            on_task_end=on_task_end,
            checkpoint_dir=scratch / "state",
            resume_from=resume_from,
            max_tasks=spec.max_tasks_per_trial(stage_of(config)),
            device=device,
        )
    finally:  # the actor is reused for the next trial: leave no GPU memory behind
        if device.startswith("cuda"):
            import gc

            import torch

            gc.collect()
            torch.cuda.empty_cache()
