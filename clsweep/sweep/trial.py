"""The trial: one experiment of a sweep, run inside a Ray Tune worker.

It reports to Tune once per finished task, with that task's checkpoint, and resumes from the newest
complete checkpoint of the trial (a retried trial, a restored sweep, a lost trial it adopts; the
folders and the rules are clsweep.recovery's); a trial already done trains nothing again. What it
exchanges with Tune goes through a :class:`TrialIO`, which a test replaces. The device is the GPU
Ray assigned to the trial, else the CPU: never "auto" (a CPU-only trial on a GPU node sees every
GPU in Ray 2.60).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clsweep.recovery import foreign_checkpoint, resume_point, trial_checkpoints
from clsweep.spec.sweep import stage_of
from clsweep.sweep.tasks import Report, plan_of, quiet_environment, run_tasks

__all__ = ["TrialIO", "train_trial", "trial_device"]


@dataclass(frozen=True)
class TrialIO:
    """What a trial exchanges with whoever runs it: Tune (:meth:`from_tune`), or a test."""

    report: Report
    """Called after each task; the checkpoint folder may be removed once it returns."""
    checkpoint: Path | None = None
    """The checkpoint folder the trial was handed to restart from (a retry, a restored sweep)."""
    trial_id: str | None = None
    """The trial's id: with ``sweep_dir``, where its stored checkpoints are."""
    workdir: Path | None = None
    """Where the trial's scratch folder goes; None: the system's temporary folder."""

    @classmethod
    def from_tune(cls) -> TrialIO:
        """Inside a Tune trial: tune.report with the checkpoint (copied to storage before it
        returns), the checkpoint Tune hands back, the trial's id and its working folder (a worker
        killed mid-task then leaves nothing in the system's temporary folder)."""
        from ray import tune

        def report(result: dict[str, Any], checkpoint_dir: Path | None) -> None:
            checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
            tune.report(result, checkpoint=checkpoint)

        context = tune.get_context()
        given = (
            tune.get_checkpoint()
        )  # a folder in the sweep's storage: a filesystem path (clsweep.sweep.cluster)
        return cls(
            report,
            Path(given.path) if given is not None else None,
            context.get_trial_id(),
            Path(context.get_trial_dir()),
        )


def train_trial(
    config: dict[str, Any],
    *,
    plan: dict[str, Any],
    sweep_dir: str | None = None,
    forkserver: str | None = None,
    io: TrialIO | None = None,
) -> None:
    """Tune function trainable. ``plan``: the sweep plan's payload (SweepPlan.payload()); the plan
    is rebuilt from it once per process, without enumerating the sweep.

    It starts from the newest complete checkpoint of this trial (clsweep.recovery.resume_point):
    the one it is handed, or a newer one in ``<sweep_dir>/<trial id>/`` or in the folder of the
    lost trial it adopts (Tune's experiment snapshot can lag the checkpoints a killed driver had
    already stored). The results stored with those newer checkpoints are sent again first, marked
    ``replayed`` (the MLflow callback logs one only if its step is missing), so a trial whose
    newest checkpoint holds all its tasks trains nothing and still ends with its final result.
    ``forkserver``: the address of the driver's fork server (clsweep.sweep.forkserver), which then
    trains the tasks in a child process with torch already imported; None, or a server that does not
    answer, and they are trained in this process. ``io``: Tune's (the default) or a test's."""
    cpu_start = time.process_time()
    quiet_environment()
    io = io or TrialIO.from_tune()
    spec = plan_of(plan)
    cfg = spec.experiment_for(config)
    stored = trial_checkpoints(Path(sweep_dir), io.trial_id) if sweep_dir and io.trial_id else []
    if sweep_dir and io.trial_id and foreign_checkpoint(io.checkpoint, Path(sweep_dir), io.trial_id):
        stored = []  # a PBT exploit: the donor's checkpoint and config, not this trial's past
    resume = resume_point(io.checkpoint, stored, spec.trial_tasks(cfg, stage_of(config)))
    report = io.report
    if spec.scheduler.name == "pbt":
        from clsweep.sweep.pbt import lineage_reporter

        report = lineage_reporter(io.report, spec, config, io.trial_id, resume.start_from)
    for result in resume.replay:
        report(result, None)
    if resume.done:
        return
    scratch = _scratch_dir(io.workdir)
    try:
        device = trial_device()
        if forkserver and device == "cpu":
            from clsweep.sweep.forkserver import run_forked

            request = {
                "plan": dict(plan),
                "config": dict(config),
                "scratch": str(scratch),
                "resume_from": str(resume.start_from) if resume.start_from else None,
            }
            if run_forked(
                forkserver, request, lambda result, path: report(result, Path(path) if path else None)
            ):
                return
        run_tasks(plan, config, report, scratch, resume.start_from, cpu_start=cpu_start, device=device)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _scratch_dir(workdir: Path | None) -> Path:
    """A fresh scratch folder in ``workdir``, else in the system's temporary folder."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".clsweep-scratch-", dir=workdir))
    return Path(tempfile.mkdtemp(prefix="clsweep-trial-"))


def trial_device() -> str:
    """cuda when Ray assigned this trial a GPU (Ray then exposes only that GPU), else cpu."""
    import ray

    return "cuda" if ray.is_initialized() and ray.get_gpu_ids() else "cpu"
