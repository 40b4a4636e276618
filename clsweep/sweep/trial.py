"""The trial: one experiment of a sweep, run inside a Ray Tune worker.

It reports to Tune once per finished task, with that task's checkpoint, and resumes from the newest
complete checkpoint of the trial (a retried trial, a restored sweep); a trial already done trains
nothing again. The device is the GPU Ray assigned
to the trial, else the CPU: never "auto" (a CPU-only trial on a GPU node sees every GPU in Ray 2.60).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from clsweep.spec.sweep import SweepSpec

__all__ = ["ADOPT_FILE", "RESULT_FILE", "complete_checkpoints", "orphan_trial", "run_tasks",
           "saved_result", "task_result", "train_trial"]

RESULT_FILE = "clsweep_result.json"
"""Written into each task's checkpoint folder: the result reported with it."""
ADOPT_FILE = "clsweep_adopts.json"
"""Written by the driver into a new trial's folder when a trial with the same config ran under an
id Tune lost (see :func:`orphan_trial`): that trial's checkpoints are this one's."""
STATE_FILE = "state.pt"  # clsweep.experiment.STATE_FILE (not imported: that module imports torch)

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
    CPU time the trial's process used so far and its pid, and the accuracy matrices as JSON text (text so that
    Tune's loggers pass them through untouched)."""
    result: dict[str, Any] = {k: float(v) for k, v in report.metrics.items()}
    result.update({
        "tasks_done": int(report.task),
        "tasks_total": int(tasks_total),
        "experiment_seconds": float(report.seconds),
        "trial_cpu_seconds": time.process_time() - cpu_start,
        "trial_pid": os.getpid(),  # the process that trains: the actor's, or a child of the fork server
        "acc_matrix_val": json.dumps(report.val_acc_matrix),
        "acc_matrix_test": json.dumps(report.test_acc_matrix),
    })
    return result


def saved_result(directory: Path) -> dict[str, Any] | None:
    """The Tune result a checkpoint folder was reported with, or None when the folder is not a
    complete checkpoint (no result file, or a state file cut short by a killed copy)."""
    try:
        result = json.loads((directory / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    state = directory / STATE_FILE
    if not isinstance(result, dict) or "tasks_done" not in result or not zipfile.is_zipfile(state):
        return None  # torch.save writes a zip archive: a truncated one has no central directory
    return result


def complete_checkpoints(candidates: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """The complete checkpoints among ``candidates`` with their results, by tasks done (one per count)."""
    found: dict[int, tuple[Path, dict[str, Any]]] = {}
    for directory in candidates:
        result = saved_result(directory) if directory.is_dir() else None
        if result is not None:
            found.setdefault(int(result["tasks_done"]), (directory, result))
    return [found[k] for k in sorted(found)]


def train_trial(config: dict[str, Any], *, spec_data: dict[str, Any], sweep_dir: str | None = None,
                forkserver: str | None = None, report: Callable[[dict[str, Any], Any], None] | None = None,
                checkpoint_dir: Path | None = None, trial_id: str | None = None) -> None:
    """Tune function trainable.

    It starts from the newest complete checkpoint of this trial: the one Tune hands back, or a
    newer one in ``<sweep_dir>/<trial id>/`` (Tune's experiment snapshot can lag the checkpoints a
    killed driver had already stored). The results stored with those newer checkpoints are sent
    again first, marked ``replayed`` (the MLflow callback logs one only if its step is missing), so
    a trial whose newest checkpoint holds all its tasks trains nothing and still ends with its
    final result.
    ``forkserver``: the address of the driver's fork server (clsweep.sweep.forkserver), which then
    trains the tasks in a child process with torch already imported; None, or a server that does not
    answer, and they are trained in this process.
    ``report(result, checkpoint_dir)`` replaces ``tune.report``, ``checkpoint_dir`` the checkpoint
    Tune hands back and ``trial_id`` Tune's trial id (tests, without Ray)."""
    cpu_start = time.process_time()
    _quiet_environment()
    from ray import tune

    spec = _spec(spec_data)
    cfg = spec.experiment_for(config)
    total = spec.trial_tasks(cfg)
    in_tune = report is None

    def to_tune(result: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(result, checkpoint=checkpoint)  # copies the checkpoint to storage before returning

    send = report or to_tune
    scratch = _scratch_dir(in_tune)
    try:
        given: list[Path] = []
        checkpoint = tune.get_checkpoint() if in_tune else None
        if checkpoint is not None:
            checkpoint_dir = scratch / "resume"
            checkpoint.to_directory(str(checkpoint_dir))
        if checkpoint_dir is not None:
            given.append(Path(checkpoint_dir))
        known = max((int(r["tasks_done"]) for _, r in complete_checkpoints(given)), default=0)
        trial_id = trial_id or (tune.get_context().get_trial_id() if in_tune else None)
        stored = _stored_checkpoints(Path(sweep_dir), trial_id) if sweep_dir and trial_id else []
        usable = complete_checkpoints([*given, *stored])
        for _, result in usable:  # stored after the checkpoint Tune knows: Tune may have missed them
            if int(result["tasks_done"]) > known:
                send({**result, "replayed": True}, None)
        if usable and int(usable[-1][1]["tasks_done"]) >= total:
            return  # all tasks done: nothing to train
        # a checkpoint without its result file (older clsweep) still holds the state to resume from
        resume_from = usable[-1][0] if usable else next(iter(given), None)
        device = trial_device()
        if forkserver and device == "cpu":
            from clsweep.sweep.forkserver import run_forked

            request = {"spec_data": dict(spec_data), "config": dict(config), "scratch": str(scratch),
                       "resume_from": str(resume_from) if resume_from else None}
            if run_forked(forkserver, request, lambda result, path: send(result, Path(path) if path else None)):
                return
        run_tasks(spec_data, config, send, scratch, resume_from, cpu_start=cpu_start, device=device)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _stored_checkpoints(sweep_dir: Path, trial_id: str) -> list[Path]:
    """The checkpoint folders stored for the trial, and for the lost trial it adopts, if any."""
    found = sorted((sweep_dir / trial_id).glob("checkpoint_*"))
    adopted = _read_adoption(sweep_dir / trial_id)
    return found + (sorted((sweep_dir / adopted).glob("checkpoint_*")) if adopted else [])


def _read_adoption(trial_dir: Path) -> str | None:
    """The id of the lost trial that the trial in ``trial_dir`` adopts, if any."""
    try:
        found = json.loads((trial_dir / ADOPT_FILE).read_text(encoding="utf-8")).get("trial_id")
    except (OSError, ValueError, AttributeError):
        return None
    return str(found) if found else None


def orphan_trial(sweep_dir: Path, config: Mapping[str, Any], known: Iterable[str]) -> str | None:
    """A trial that ran in ``sweep_dir`` with ``config`` but that Tune no longer knows (it was created
    after the last experiment snapshot of a driver that then died), with at least one complete
    checkpoint; None if there is none. ``known``: the trial ids Tune knows, and those adopted already."""
    wanted = json.loads(json.dumps(dict(config), sort_keys=True, default=str))
    skip = set(known)
    for folder in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name not in skip) if sweep_dir.is_dir() else []:
        try:
            params = json.loads((folder / "params.json").read_text(encoding="utf-8"))  # Tune's copy of the config
        except (OSError, ValueError):
            continue
        if params == wanted and complete_checkpoints(folder.glob("checkpoint_*")):
            return folder.name
    return None


def _scratch_dir(in_tune: bool) -> Path:
    """A fresh scratch folder: under the trial's own working folder in Tune (so that a worker
    killed mid-task leaves nothing in the system temporary folder), else a temporary folder."""
    if in_tune:
        from ray import tune

        root = Path(tune.get_context().get_trial_dir())
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".clsweep-scratch-", dir=root))
    return Path(tempfile.mkdtemp(prefix="clsweep-trial-"))


def run_tasks(spec_data: dict[str, Any], config: dict[str, Any], send: Callable[[dict[str, Any], Any], None],
              scratch: Path, resume_from: Path | None, *, cpu_start: float = 0.0, device: str = "cpu") -> None:
    """Train the trial's tasks in this process (the trial's actor, or a child of the fork server),
    from ``resume_from`` if given; ``send(result, checkpoint_dir)`` after each task."""
    from clsweep.experiment import run_experiment

    spec = _spec(spec_data)
    cfg = spec.experiment_for(config)
    total = spec.trial_tasks(cfg)

    def on_task_end(task: Any) -> None:
        result = task_result(task, total, cpu_start)
        if task.checkpoint_dir is not None:  # the result travels with its checkpoint (see train_trial)
            (Path(task.checkpoint_dir) / RESULT_FILE).write_text(json.dumps(result), encoding="utf-8")
        send(result, task.checkpoint_dir)

    try:
        run_experiment(cfg, on_task_end=on_task_end, checkpoint_dir=scratch / "state", resume_from=resume_from,
                       max_tasks=spec.max_tasks_per_trial, device=device)
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
