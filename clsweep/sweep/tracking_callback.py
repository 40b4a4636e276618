"""The Tune callback that turns trial events into MLflow records (driver side, one writer).

Each trial gets one child run of the sweep's parent run: params are the trial's resolved
experiment config (dotted names), tags say sweep, trial, algorithm, benchmark, paradigm, seed,
protocol, status, node and device (cuda / cpu), and the benchmark is the run's dataset input
(the runs table's Dataset column); metrics are logged per task with step = tasks done (a result a trial
sends again after a restore, marked ``replayed``, only when its step is not logged yet); at the
end the resolved config, the accuracy matrices (CSV) and, for a failed trial, its traceback are
stored as artifacts.

The callback does not call MLflow: it appends each record to the sweep's tracking journal
(clsweep.tracking.journal), which the driver's sender thread sends (clsweep.tracking.replay), so
no trial event waits for the tracking server and an outage loses nothing. Records name trials,
not runs; what the callback must know (was this trial recorded, which of its steps) it reads from
the journal, which a resumed driver loads again, so a restored sweep keeps one run per trial.

A trial that adopts a trial Tune lost with a killed driver (clsweep.sweep.adoption) is given
the lost trial's run, re-tagged ``clsweep.adopted_from``; runs of lost trials nobody adopts are
deleted at the end (clsweep.recovery.orphan_runs).

Every event handler is :func:`guarded`: a failing journal write (disk full) loses that record,
not the sweep. The count of such failures, ``failures``, is read by the driver after the sweep
(exit status 1).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml
from ray.tune import Callback

from clsweep.recovery import REPLAYED
from clsweep.spec.experiment import ExperimentConfig, flatten
from clsweep.spec.sweep import SweepPlan, stage_of
from clsweep.sweep.tasks import plan_of
from clsweep.tracking.journal import Journal, live
from clsweep.tracking.mlflow_ui import dataset_of

__all__ = ["Adoptions", "MLflowCallback", "guarded", "stopped_state", "trial_state", "trial_tags"]

logger = logging.getLogger(__name__)
_F = TypeVar("_F", bound=Callable[..., Any])


def guarded(method: _F) -> _F:
    """A callback failure (tracking server down, disk full) is logged as a warning, counted in the
    callback's ``failures`` and the sweep goes on: losing a record is better than losing the trials."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception:  # noqa: BLE001
            self.failures += 1
            logger.warning(
                "%s.%s failed; the sweep goes on without this record",
                type(self).__name__,
                method.__name__,
                exc_info=True,
            )
            return None

    return wrapper  # type: ignore[return-value]


# Tune's own bookkeeping in every result: not metrics of the experiment.
_TUNE_KEYS = {
    "timestamp",
    "time_this_iter_s",
    "time_total_s",
    "pid",
    "hostname",
    "node_ip",
    "time_since_restore",
    "iterations_since_restore",
    "training_iteration",
    "done",
    "date",
    "trial_id",
    "experiment_tag",
    "checkpoint_dir_name",
    "should_checkpoint",
    "tasks_total",
    REPLAYED,
    "trial_pid",
    "device",
}


def stopped_state(last_result: dict[str, Any] | None) -> str:
    """finished, or pruned when the trial stopped before its last task (scheduler, or never ran)."""
    last = last_result or {}
    if "tasks_done" not in last:
        return "pruned"
    return "pruned" if int(last["tasks_done"]) < int(last.get("tasks_total", 0)) else "finished"


def trial_state(trial: Any) -> str:
    """pending / running / paused / finished / pruned (stopped by the scheduler) / failed."""
    status = trial.status
    if status == "ERROR":
        return "failed"
    if status == "TERMINATED":
        return stopped_state(trial.last_result)
    return {"RUNNING": "running", "PAUSED": "paused"}.get(status, "pending")


def trial_device_of(trial: Any) -> str:
    """cuda when the trial asked Ray for a GPU (a trial with a GPU trains on it, see
    clsweep.sweep.trial.trial_device), else cpu; used when the result does not say."""
    try:
        gpus = float(trial.placement_group_factory.required_resources.get("GPU", 0))
    except AttributeError:
        return "?"
    return "cuda" if gpus > 0 else "cpu"


def trial_tags(spec: SweepPlan, config: dict[str, Any], cfg: ExperimentConfig) -> dict[str, str]:
    searched = spec.searched(config)
    tags = {
        "clsweep.stage": stage_of(config),
        "clsweep.algorithm": cfg.algorithm.name,
        "clsweep.backbone": cfg.backbone.name,
        "clsweep.benchmark": cfg.benchmark.name,
        "clsweep.source": str(getattr(cfg.benchmark.params, "source", "")),
        "clsweep.paradigm": cfg.paradigm,
        "clsweep.seed": str(cfg.seed),
        "clsweep.protocol": spec.protocol_tag,
        "clsweep.config": json.dumps(searched, sort_keys=True, default=str),
    }
    tags.update({f"clsweep.{k}": str(v) for k, v in config.items() if k.startswith("variants.")})
    return tags


def _csv(matrix_json: str | None) -> str | None:
    if not matrix_json:
        return None
    rows = json.loads(matrix_json)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["after_task"] + [f"task_{j + 1}" for j in range(len(rows[0]) if rows else 0)])
    for t, row in enumerate(rows):
        writer.writerow([t + 1] + ["" if v is None else f"{v:.6f}" for v in row])
    return out.getvalue()


class Adoptions(Protocol):
    """Who adopted which lost trial (clsweep.sweep.adoption.AdoptionCallback)."""

    def lost_trial(self, trial_id: str) -> str | None:
        """The id of the lost trial that ``trial_id`` adopted, if any."""
        ...


def error_text(trial: Any) -> str:
    """A failed trial's traceback: Tune's error file, else its error as a string ("" if none)."""
    if trial.error_file and Path(trial.error_file).exists():
        text = Path(trial.error_file).read_text(encoding="utf-8", errors="replace")
        if text:
            return text
    return str(trial.get_error() or "")


class MLflowCallback(Callback):
    """Journals the trials' MLflow records. ``sweep_dir``: the sweep folder (its journal);
    ``adoption``: the callback (before this one in Tune's list) that says which lost trial a new
    trial adopted; its run is then the new trial's. ``stage``: the stage whose trials this Tune
    experiment runs (orphans are looked for among its runs only); ``total``: its trials (default:
    the search's); ``closes``: whether its end ends the parent run (not when a later stage follows)."""

    def __init__(
        self,
        sweep_dir: str | Path,
        plan: dict[str, Any],
        adoption: Adoptions | None = None,
        *,
        stage: str = "search",
        total: int | None = None,
        closes: bool = True,
    ) -> None:
        self.stage, self.total, self.closes = stage, total, closes
        self.sweep_dir = str(sweep_dir)
        self.plan = plan
        """The sweep plan's payload (SweepPlan.payload())."""
        self.adoption = adoption
        self._located: set[str] = set()
        self.failures = 0
        """Events whose record was lost (a failing journal write) in this run of the sweep."""

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_located": set()}

    @property
    def spec(self) -> SweepPlan:
        return plan_of(self.plan)  # rebuilt once per process, kept by fingerprint

    @property
    def journal(self) -> Journal:
        return live(self.sweep_dir)

    def setup(self, **info: Any) -> None:  # type: ignore[override]
        self.failures = 0  # a restored tuner calls the copy pickled by an earlier driver

    # ---- trial events ---------------------------------------------------------------------------
    @guarded
    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        tid, journal = trial.trial_id, self.journal
        if journal.knows(tid):
            journal.append("resume", trial=tid)
            return
        cfg = self.spec.experiment_for(trial.config)
        params = {
            **flatten(cfg.to_dict()),
            "trial.tasks": self.spec.trial_tasks(cfg, stage_of(trial.config)),
        }
        record = {
            "trial": tid,
            "name": f"{self.spec.name}-{tid}",
            "params": params,
            "tags": trial_tags(self.spec, trial.config, cfg),
            "dataset": dataset_of(cfg),
        }
        lost = None if self.adoption is None else self.adoption.lost_trial(tid)
        if lost:  # its run becomes this trial's: its metrics are this trial's replayed results
            journal.append("adopt", lost=lost, **record)
        else:
            journal.append("start", **record)

    @guarded
    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        tid, journal = trial.trial_id, self.journal
        if not journal.knows(tid):
            return
        step = int(result.get("tasks_done", result.get("training_iteration", 0)))
        if result.get(REPLAYED) and step in journal.steps(tid):
            return  # a stored result the trial sent again after a restore, already logged
        if tid not in self._located:
            self._located.add(tid)
            tags = {
                "clsweep.node": f"{result.get('hostname', '?')} ({result.get('node_ip', '?')})",
                "clsweep.device": str(result.get("device") or trial_device_of(trial)),
            }
            journal.append("tags", trial=tid, tags=tags)
        metrics = {
            k: float(v)
            for k, v in result.items()
            if k not in _TUNE_KEYS
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(float(v))
        }
        journal.append("metrics", trial=tid, metrics=metrics, step=step, at=int(time.time() * 1000))

    def _finish(self, trial: Any, state: str, traceback: str | None = None) -> None:
        tid, journal = trial.trial_id, self.journal
        if not journal.knows(tid):
            return
        cfg = self.spec.experiment_for(trial.config)
        journal.append(
            "text", trial=tid, text=yaml.safe_dump(cfg.to_dict(), sort_keys=False), path="config.yaml"
        )
        last = trial.last_result or {}
        for split in ("val", "test"):
            text = _csv(last.get(f"acc_matrix_{split}"))
            if text:
                journal.append("text", trial=tid, text=text, path=f"acc_matrix_{split}.csv")
        if last.get("pbt_lineage"):  # clsweep.sweep.pbt: who trained each task, with which knobs
            journal.append("text", trial=tid, text=str(last["pbt_lineage"]), path="pbt_lineage.json")
            # the config the trial ended with (an exploit replaced the one it started with)
            ended_with = trial_tags(self.spec, trial.config, cfg)["clsweep.config"]
            journal.append("tags", trial=tid, tags={"clsweep.config": ended_with})
        if traceback:
            journal.append("text", trial=tid, text=traceback, path="traceback.txt")
        journal.append("end", trial=tid, state=state)

    @guarded
    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finish(trial, stopped_state(trial.last_result))  # status may still read RUNNING here

    @guarded
    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finish(trial, "failed", error_text(trial) or "the trial failed; Tune kept no traceback")

    @guarded
    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        journal = self.journal
        journal.append("orphans", keep=[t.trial_id for t in trials], stage=self.stage)
        states = [trial_state(t) for t in trials]
        total = self.spec.num_trials if self.total is None else self.total
        complete = all(s in ("finished", "pruned", "failed") for s in states) and len(trials) >= total
        if complete and not self.closes:
            return
        counts = {f"clsweep.{s}": str(states.count(s)) for s in ("finished", "pruned", "failed")}
        journal.append("close", tags=counts, status="FINISHED" if complete else "KILLED")
