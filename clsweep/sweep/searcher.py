"""Ray Tune's OptunaSearch, corrected for continual learning.

Stock OptunaSearch tells Optuna that a trial the scheduler stopped after task 2 of 10 is COMPLETE
with its task-2 value. In CL that value is optimistic (fewer tasks, less forgetting), so the
sampler would learn from inflated numbers. Here such a trial is told PRUNED (Optuna's TPE ranks
pruned trials after complete ones, by how far they got), and a trial that raised is told FAIL even
if it reported results before failing.

A trial is "stopped early" when its last result has ``tasks_done < tasks_total`` (both reported
by every clsweep trial). This class uses OptunaSearch's private attributes ``_ot_study``,
``_ot_trials`` and ``_completed_trials``; Ray is pinned to 2.60.x and tests/sweep/test_searcher.py
checks the behaviour.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune.search.optuna import OptunaSearch

__all__ = ["SEED_ATTR", "CLOptunaSearch"]

SEED_ATTR = "clsweep.seed"
logger = logging.getLogger(__name__)


class CLOptunaSearch(OptunaSearch):
    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        from optuna.trial import TrialState

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result=result, error=error)
        if error:
            state = TrialState.FAIL
        elif result and int(result.get("tasks_done", 0)) < int(result.get("tasks_total", 0)):
            state = TrialState.PRUNED
        else:
            return super().on_trial_complete(trial_id, result=result, error=error)
        study: Any = self._ot_study
        try:
            study.tell(self._ot_trials[trial_id], state=state)
        except Exception as exc:  # noqa: BLE001 - same leniency as the base class
            logger.warning("could not tell Optuna about trial %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)

    def enqueue(self, params: dict[str, Any], *, seed: int) -> None:
        """Queue a configuration (Optuna-encoded values) to run next with ``seed``."""
        study: Any = self._ot_study
        study.enqueue_trial(params, user_attrs={SEED_ATTR: seed})

    @property
    def study(self) -> Any:
        """The Optuna study (trial states, values, parameters)."""
        return self._ot_study

    def optuna_trial_number(self, trial_id: str) -> int | None:
        trial = self._ot_trials.get(trial_id)
        return None if trial is None else int(trial.number)
