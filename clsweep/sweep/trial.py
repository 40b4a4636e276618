"""The trial: one experiment of a sweep, run inside a Ray Tune worker.

It reports to Tune once per finished task, with that task's checkpoint, and resumes from the last
checkpoint Tune hands back (a retried trial, a restored sweep). The device is the GPU Ray assigned
to the trial, else the CPU: never "auto" (a CPU-only trial on a GPU node sees every GPU in Ray 2.60).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from clsweep.spec.sweep import SweepSpec

__all__ = ["task_result", "train_trial"]

_SPECS: dict[str, SweepSpec] = {}  # parsed sweep per fingerprint, for reused actors


def _quiet_environment() -> None:
    """Drop SLURM_* (Lightning would take the trial for a SLURM task: wrong world size, rank, no
    logs) and keep Lightning's console tips out of the worker logs. Before Lightning is imported."""
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        os.environ.pop(key)
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _spec(data: Mapping[str, Any]) -> SweepSpec:
    import hashlib

    key = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    if key not in _SPECS:
        _SPECS[key] = SweepSpec.from_data(dict(data))
    return _SPECS[key]


def task_result(report: Any, tasks_total: int, cpu_start: float = 0.0) -> dict[str, Any]:
    """The Tune result of one finished task: the task loop's metrics (flat floats), progress, the
    CPU time the trial's process used so far, and the accuracy matrices as JSON text (text so that
    Tune's loggers pass them through untouched)."""
    result: dict[str, Any] = {k: float(v) for k, v in report.metrics.items()}
    result.update({
        "tasks_done": int(report.task),
        "tasks_total": int(tasks_total),
        "experiment_seconds": float(report.seconds),
        "trial_cpu_seconds": time.process_time() - cpu_start,
        "acc_matrix_val": json.dumps(report.val_acc_matrix),
        "acc_matrix_test": json.dumps(report.test_acc_matrix),
    })
    return result


def train_trial(config: dict[str, Any], *, spec_data: dict[str, Any],
                report: Callable[[dict[str, Any], Any], None] | None = None) -> None:
    """Tune function trainable. ``report(result, checkpoint_dir)`` replaces ``tune.report`` (tests)."""
    cpu_start = time.process_time()
    _quiet_environment()
    from ray import tune

    from clsweep.experiment import run_experiment

    spec = _spec(spec_data)
    cfg = spec.experiment_for(config)
    total = spec.trial_tasks(cfg)

    def to_tune(result: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(result, checkpoint=checkpoint)  # copies the checkpoint to storage before returning

    send = report or to_tune
    device = trial_device()
    with tempfile.TemporaryDirectory(prefix="clsweep-trial-") as scratch:
        resume_from = None
        checkpoint = tune.get_checkpoint() if report is None else None
        if checkpoint is not None:
            resume_from = Path(scratch) / "resume"
            checkpoint.to_directory(str(resume_from))
        try:
            run_experiment(
                cfg,
                on_task_end=lambda r: send(task_result(r, total, cpu_start), r.checkpoint_dir),
                checkpoint_dir=Path(scratch) / "state",
                resume_from=resume_from,
                max_tasks=spec.max_tasks_per_trial,
                device=device,
            )
        finally:  # the actor is reused for the next trial: leave no GPU memory behind
            if device.startswith("cuda"):
                import gc

                import torch

                gc.collect()
                torch.cuda.empty_cache()


def trial_device() -> str:
    """cuda when Ray assigned this trial a GPU (Ray then exposes only that GPU), else cpu."""
    import ray

    return "cuda" if ray.is_initialized() and ray.get_gpu_ids() else "cpu"
