"""The Tune callback that lets a new trial take over a trial Tune lost with a killed driver.

A trial created after Tune's last experiment snapshot is unknown to a restored sweep, though its
folder and its checkpoints are still there. When the searcher proposes its config again (a grid,
seeds), the new trial adopts it: its folder gets an adoption file naming the lost trial
(clsweep.recovery), whose checkpoints the trial then replays instead of training
(clsweep.sweep.trial), and the MLflow callback, which comes after this one in the callback list
and asks :meth:`AdoptionCallback.lost_trial`, gives it the lost trial's run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune import Callback

from clsweep.recovery import (
    CHECKPOINT_PATTERN,
    complete_checkpoints,
    orphan_trial,
    unknown_folders,
    write_adoption,
)
from clsweep.sweep.tracking_callback import guarded

__all__ = ["AdoptionCallback"]


class AdoptionCallback(Callback):
    """Decides, when a trial starts, whether it adopts a lost trial. Must come before the callbacks
    that ask :meth:`lost_trial` (Tune calls callbacks in list order)."""

    def __init__(self, sweep_dir: Path) -> None:
        self.sweep_dir = Path(sweep_dir)
        self.adopted: dict[str, str] = {}
        """Trial id -> id of the lost trial it adopted (kept in Tune's experiment state)."""
        self._seen: set[str] = set()
        self._unknown: list[str] | None = None
        """The folders of the sweep that this driver's Tune did not know when the first trial
        started: the only ones a lost trial can be in (Tune knows every trial it makes later)."""
        self.failures = 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_seen": set(), "_unknown": None}

    def get_state(self) -> dict[str, Any]:
        return {"adopted": dict(self.adopted)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.adopted.update(state.get("adopted", {}))

    def lost_trial(self, trial_id: str) -> str | None:
        """The id of the lost trial that ``trial_id`` adopted, if any."""
        return self.adopted.get(trial_id)

    @guarded
    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.adopt(trial, trials)

    def adopt(self, trial: Any, trials: list[Any]) -> str | None:
        """For a trial this driver starts for the first time with no checkpoint of its own: the id of
        a trial with the same config that ran before the driver died and that Tune lost; its folder
        then names it in an adoption file. None when there is none."""
        tid = trial.trial_id
        if tid in self.adopted or tid in self._seen:
            return self.adopted.get(tid)
        self._seen.add(tid)
        if complete_checkpoints((self.sweep_dir / tid).glob(CHECKPOINT_PATTERN)):
            return None  # the trial ran before: it is not new, whatever Tune's snapshot says
        if getattr(self, "_unknown", None) is None:  # once per driver, not per trial: O(trials)
            self._unknown = unknown_folders(self.sweep_dir, (t.trial_id for t in trials))
        lost = orphan_trial(self.sweep_dir, trial.config, self.adopted.values(), among=self._unknown)
        if lost:
            write_adoption(self.sweep_dir / tid, lost)
            self.adopted[tid] = lost
        return lost
