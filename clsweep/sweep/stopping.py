"""The Tune callback of clsweep.sweep.signals: keeps the trials a stop interrupted unfinished, and
stops a sweep whose trials wait too long for a node that can place them."""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

from clsweep.sweep.signals import STATE, live_trials, request_stop

__all__ = ["StopCallback"]


class StopCallback(Callback):
    """Keeps the trials that a stop interrupted unfinished, and stops a sweep whose trials wait for
    resources longer than ``STATE.pending_timeout``. Must come first in Tune's callback list."""

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        STATE.trials = trials
        if STATE.pending_timeout is None or STATE.stopping:
            return
        statuses = {t.status for t in trials}
        now = time.monotonic()
        if "RUNNING" in statuses or "PENDING" not in statuses:
            STATE.pending_since = None
        elif STATE.pending_since is None:
            STATE.pending_since = now
        elif now - STATE.pending_since > STATE.pending_timeout:
            request_stop(
                f"no trial could start for {STATE.pending_timeout:.0f} s (resources.pending_timeout): "
                "no node of the cluster offers the resources a trial asks for"
            )

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if STATE.stopping:
            STATE.live = live_trials(trials)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if not STATE.stopping:
            return
        for trial in trials:  # stopped by Tune's clean-up, not finished: still unfinished in its snapshot
            if trial.trial_id in STATE.live and trial.status == "TERMINATED":
                trial.set_status("RUNNING")
