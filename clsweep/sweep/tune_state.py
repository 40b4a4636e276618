"""What keeps Tune's per-trial cost flat over a long sweep (issue 14; benchmarks/bench_scale.py).

Two things in Ray Tune 2.60 grow with the number of trials a sweep has run, and neither has a
setting:

- **Forced experiment snapshots.** With ``CheckpointConfig(num_to_keep=k)`` Tune snapshots its
  whole experiment state whenever a trial has made ``k`` checkpoints since the last snapshot
  (``_ExperimentCheckpointManager.on_trial_checkpoint``), so that a snapshot never names a
  checkpoint it has deleted. A snapshot serialises every trial, so trials of ``k`` tasks or more
  force one each: O(trials) per trial. :func:`bound_forced_snapshots` holds a forced snapshot
  back until 19 times the last snapshot's duration has passed since it, Tune's own rule for its
  periodic snapshots (at most 5% of the time). A small sweep's snapshots take milliseconds, so it
  still snapshots at every trial's ``k``-th checkpoint; a sweep of thousands of short trials lags
  by a few seconds. A lagging snapshot is what clsweep recovers from anyway (clsweep.recovery: a
  trial resumes from the checkpoints in its folder, and a trial Tune lost is adopted).
- **Running statistics of every metric.** For each trial, Tune keeps the max, min, mean and two
  moving averages (with their deques) of every number it reported, for its own progress reporter
  and ResultGrid, which clsweep uses neither of (the status file and MLflow hold the results):
  about 60 KB per trial in the driver's memory with 22 metrics, and 20 KB in every snapshot.
  :class:`TrimCallback` drops them once a trial has ended; its last result, checkpoints and status
  stay.
- **The full results of finished trials.** Tune keeps a finished trial's last result and the
  result reported with each checkpoint it keeps (Tune's 25-35 auto-filled and reported values
  each, with the accuracy matrices), and their JSON in the trial's cached snapshot state: about
  10 KB per trial. Once a trial has finished (every callback has seen its end, and MLflow's
  journal holds it), :class:`TrimCallback` keeps of each only what is read later: the objective
  metrics and ``tasks_done`` / ``tasks_total`` (the status rows and the summary, made afresh at
  the end and after a restore) and Tune's own bookkeeping keys (:data:`KEPT`). Not under
  population-based training, whose exploits read a donor's checkpoint result, nor for a failed
  trial, which a resume may restore from its checkpoint result.

Holding a forced snapshot back has one consequence a resume must meet: the snapshot a killed
driver leaves can name a checkpoint that ``num_to_keep`` has since deleted (the latest of a trial
that went on to checkpoint twice more), and Tune then fails the trial at its restore ("Could not
recover from checkpoint as it does not exist on storage anymore"), retries included.
:class:`VanishedCheckpoints` hands such a trial its newest checkpoint still stored, or none; the
trial then resumes from the newest complete checkpoint in its folder (clsweep.recovery), which
holds the tasks the snapshot did not know of.

And one thing costs O(trials) at every step of Tune's loop (about ten a second): the FIFO choice of
the next trial to run (``FIFOScheduler.choose_trial_to_run``, which ASHA and median stopping
inherit) looks through every trial of the sweep for a pending one, then again for a paused one.
:class:`LiveFirst` makes the same choice among Tune's live trials (those not ended: a few); the
sweep's schedulers are its subclasses below (population-based training has its own choice).
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, MedianStoppingRule

__all__ = [
    "LiveFirst",
    "LiveFirstASHA",
    "LiveFirstFIFO",
    "LiveFirstMedian",
    "TrimCallback",
    "VanishedCheckpoints",
    "bound_forced_snapshots",
    "kept_result_keys",
]

_COST_SHARE = 19  # Tune's: a snapshot every 19 times its duration takes 5% of the time


def bound_forced_snapshots() -> None:
    """Hold Tune's forced experiment snapshots to at most 5% of the driver's time (see the module
    docstring). Deferred, not dropped: the snapshot happens at the first step after that; Tune's
    explicit snapshots (``force=True``: at the end, on a pause) are untouched. Once per process."""
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager as manager

    if getattr(manager, "_clsweep_bounded", False):
        return
    sync_up, record = manager.sync_up_experiment_state, manager._update_auto_checkpoint_time

    def recording(self: Any, time_taken: float) -> None:
        self._clsweep_took = time_taken  # called after every snapshot, whatever the period setting
        record(self, time_taken)

    def bounded(self: Any, save_fn: Any, force: bool = False, wait: bool = False) -> None:
        if self._should_force_sync_up and not force:
            since = time.monotonic() - self._last_save_time
            if since < min(_COST_SHARE * getattr(self, "_clsweep_took", 0.0), self._checkpoint_period):
                return  # the flag stays set: a later step snapshots
        sync_up(self, save_fn, force=force, wait=wait)

    manager._update_auto_checkpoint_time = recording  # type: ignore[method-assign]
    manager.sync_up_experiment_state = bounded  # type: ignore[method-assign]
    manager._clsweep_bounded = True  # type: ignore[attr-defined]


KEPT = frozenset(
    {
        "tasks_done",
        "tasks_total",
        "done",
        "training_iteration",
        "trial_id",
        "config",
        "time_total_s",
        "timestamp",
    }
)
"""Result keys a finished trial keeps besides its objective metrics (:func:`kept_result_keys`):
what clsweep reads of an ended trial (clsweep.sweep.progress.trial_row, stopped_state) and what
Tune reads of one (``done``, ``training_iteration``, ``config``: searchers' restore, ResultGrid)."""


def kept_result_keys(spec: Any) -> frozenset[str] | None:
    """The result keys a finished trial of ``spec`` (a SweepPlan) keeps; None: keep all (pbt)."""
    if spec.scheduler.name == "pbt":
        return None
    return KEPT | {o.metric for o in spec.objectives}


class TrimCallback(Callback):
    """Drops an ended trial's running metric statistics from Tune's trial and, for a finished one,
    all but ``keep`` of its last result and checkpoint results (see the module docstring; None:
    those stay whole). Comes last in the callback list: every other callback has seen the end."""

    def __init__(self, keep: frozenset[str] | None = None) -> None:
        self.keep = keep

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        _trim(trial)
        if self.keep is not None:
            _shrink_results(trial, self.keep)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        _trim(trial)


class VanishedCheckpoints(Callback):
    """At the first step of a run (a resume: the trials of Tune's snapshot), a trial that is yet to
    start and whose latest checkpoint no longer exists gets its newest existing one, or none."""

    def setup(self, **info: Any) -> None:
        self._checked = False

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if not getattr(self, "_checked", False):
            self._checked = True
            forget_vanished_checkpoints(trials)


def forget_vanished_checkpoints(trials: list[Any]) -> list[str]:
    """Drop the checkpoints that no longer exist from the pending and paused ``trials``; returns
    the ids of the trials whose latest checkpoint was gone."""
    from ray.train._internal.storage import _exists_at_fs_path

    def exists(result: Any) -> bool:
        return _exists_at_fs_path(result.checkpoint.filesystem, result.checkpoint.path)

    fixed = []
    for trial in trials:
        manager = trial.run_metadata.checkpoint_manager
        latest = manager.latest_checkpoint_result
        if trial.status not in ("PENDING", "PAUSED") or latest is None or exists(latest):
            continue
        manager._checkpoint_results = [r for r in manager._checkpoint_results if exists(r)]
        manager._latest_checkpoint_result = (manager._checkpoint_results or [None])[-1]
        trial.run_metadata.invalidate_cache()
        trial.invalidate_json_state()
        fixed.append(trial.trial_id)
    return fixed


def _trim(trial: Any) -> None:
    metadata = getattr(trial, "run_metadata", None)
    if metadata is not None and hasattr(metadata, "metric_n_steps"):
        # both together: Tune adds a metric to both when it first sees it (a trial that reports
        # again after a restore starts its statistics afresh)
        metadata.metric_analysis = {}
        metadata.metric_n_steps = {}


def _shrink_results(trial: Any, keep: frozenset[str]) -> None:
    metadata = getattr(trial, "run_metadata", None)
    if metadata is None or not metadata.last_result:
        return
    # new dicts, not edits: whoever holds the full result (a callback, the scheduler) keeps it
    metadata.last_result = {k: v for k, v in metadata.last_result.items() if k in keep}
    manager = getattr(metadata, "checkpoint_manager", None)
    if manager is not None:
        results = list(getattr(manager, "_checkpoint_results", []))
        latest = getattr(manager, "_latest_checkpoint_result", None)
        for result in {id(r): r for r in (*results, latest) if r is not None}.values():
            result.metrics = {k: v for k, v in result.metrics.items() if k in keep}
    metadata.invalidate_cache()  # the snapshot's JSON of this trial is made again, smaller
    trial.invalidate_json_state()


class LiveFirst:
    """Mixed in before a Tune scheduler that inherits FIFO's ``choose_trial_to_run``: the first
    pending trial in the order Tune added them, else the first paused one, looked for among the
    live trials (``get_live_trials``, which Tune lets schedulers read) instead of all trials."""

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        order = self.__dict__.setdefault("_order", {})  # trial id -> when added, live trials only
        order.setdefault(trial.trial_id, len(order) + self.__dict__.setdefault("_ended", 0))
        super().on_trial_add(tune_controller, trial)  # type: ignore[misc]

    def _forget(self, trial: Any) -> None:
        if self.__dict__.get("_order", {}).pop(trial.trial_id, None) is not None:
            self._ended = self.__dict__.get("_ended", 0) + 1

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._forget(trial)
        super().on_trial_complete(tune_controller, trial, result)  # type: ignore[misc]

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._forget(trial)
        super().on_trial_error(tune_controller, trial)  # type: ignore[misc]

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._forget(trial)
        super().on_trial_remove(tune_controller, trial)  # type: ignore[misc]

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        order: dict[str, int] = self.__dict__.get("_order", {})
        live = list(tune_controller.get_live_trials())
        for status in ("PENDING", "PAUSED"):
            found = [t for t in live if t.status == status]
            if found:
                return min(found, key=lambda t: order.get(t.trial_id, -1))
        return None


class LiveFirstFIFO(LiveFirst, FIFOScheduler):
    """Tune's default scheduler (no early stopping)."""


class LiveFirstASHA(LiveFirst, AsyncHyperBandScheduler):
    pass


class LiveFirstMedian(LiveFirst, MedianStoppingRule):
    pass
