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
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

__all__ = ["TrimCallback", "bound_forced_snapshots"]

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


class TrimCallback(Callback):
    """Drops an ended trial's running metric statistics from Tune's trial (see the module
    docstring). Comes last in the callback list: every other callback has seen the trial end."""

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        _trim(trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        _trim(trial)


def _trim(trial: Any) -> None:
    metadata = getattr(trial, "run_metadata", None)
    if metadata is not None and hasattr(metadata, "metric_n_steps"):
        # both together: Tune adds a metric to both when it first sees it (a trial that reports
        # again after a restore starts its statistics afresh)
        metadata.metric_analysis = {}
        metadata.metric_n_steps = {}
