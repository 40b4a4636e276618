"""Live progress of a sweep, and the status file ``clsweep status`` reads.

On a terminal the display is one block redrawn in place (trials finished / running / pruned /
failed, the best objective with its configuration, elapsed time); elsewhere (a log file, CI) it
prints one line per trial that ends. Both come from the Tune trial list at each step, so the
display is right after a restore without any state of its own.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from clsweep.spec.sweep import SweepPlan
from clsweep.storage import driver_identity, write_json
from clsweep.sweep.summary import format_summary, summarize
from clsweep.sweep.tasks import plan_of
from clsweep.sweep.tracking_callback import MLflowCallback, guarded, stopped_state, trial_state

__all__ = ["ProgressCallback", "lost_records", "mark_start", "trial_row"]

_COMMAND_STARTED: float | None = None


def mark_start(at: float | None = None) -> None:
    """Count elapsed time from ``at`` (time.monotonic() at the start of the command), else now."""
    global _COMMAND_STARTED
    _COMMAND_STARTED = time.monotonic() if at is None else at


def trial_row(trial: Any, spec: SweepPlan, state: str | None = None) -> dict[str, Any]:
    last = trial.last_result or {}
    values = [last.get(o.metric) for o in spec.objectives]
    return {
        "trial_id": trial.trial_id,
        "state": state or trial_state(trial),
        "config": spec.searched(trial.config),
        "seed": trial.config.get("seed"),
        "tasks_done": last.get("tasks_done", 0),
        "tasks_total": last.get("tasks_total"),
        "objective": None if any(v is None for v in values) else [float(v) for v in values if v is not None],
    }


class ProgressCallback(Callback):
    """Draws the display and writes ``status_path``. Picklable (Tune stores its callbacks)."""

    def __init__(
        self,
        plan: dict[str, Any],
        status_path: Path,
        *,
        display: bool | None = None,
        interval: float = 0.5,
        stage: str = "search",
        total: int | None = None,
    ) -> None:
        self.stage, self.total = stage, total
        """The stage this Tune experiment runs, and its trials (None: the search's)."""
        self.plan = plan
        """The sweep plan's payload (SweepPlan.payload())."""
        self.status_path = Path(status_path)
        self.display = display
        self.interval = interval
        self._reset()

    def _reset(self) -> None:
        self.failures = 0
        """Events whose display or status-file update failed in this run of the sweep."""
        self._started = time.monotonic()
        self._drawn = 0
        self._last_draw = 0.0
        self._last_write = 0.0
        self._tty = False

    @property
    def spec(self) -> SweepPlan:
        return plan_of(self.plan)  # rebuilt once per process, kept by fingerprint

    def setup(self, **info: Any) -> None:  # type: ignore[override]
        self._reset()
        self._started = _COMMAND_STARTED or self._started
        self._tty = sys.stdout.isatty() if self.display is None else self.display

    def lines(self, rows: list[dict[str, Any]]) -> list[str]:
        objectives = [{"metric": o.metric, "mode": str(o.mode)} for o in self.spec.objectives]
        summary = summarize(rows, [str(o.mode) for o in self.spec.objectives], self._total)
        name = self.spec.name if self.stage == "search" else f"{self.spec.name} ({self.stage})"
        return format_summary(summary, objectives, elapsed=time.monotonic() - self._started, name=name)

    @property
    def _total(self) -> int:
        total = getattr(self, "total", None)  # a callback pickled before stages existed has none
        return self.spec.num_trials if total is None else int(total)

    def _write(self, rows: list[dict[str, Any]], *, done: bool, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < 2.0:
            return
        self._last_write = now
        write_json(
            self.status_path,
            {
                "sweep": self.spec.name,
                "updated": time.time(),
                "driver": driver_identity(),
                "ended": done,
                "stage": getattr(self, "stage", "search"),
                "total": self._total,
                "elapsed_s": now - self._started,
                "objectives": [{"metric": o.metric, "mode": o.mode} for o in self.spec.objectives],
                "trials": rows,
            },
        )

    def _draw(self, lines: list[str]) -> None:
        out = sys.stdout
        if self._drawn:
            out.write(f"\x1b[{self._drawn}F\x1b[J")  # back to the block's first line, clear below
        out.write("\n".join(lines) + "\n")
        out.flush()
        self._drawn = len(lines)

    @guarded
    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        now = time.monotonic()
        if now - self._last_draw < self.interval:
            return
        self._last_draw = now
        rows = [trial_row(t, self.spec) for t in trials]
        self._write(rows, done=False)
        if self._tty:
            self._draw(self.lines(rows))

    def _ended(self, trials: list[Any], trial: Any, state: str) -> None:
        row = trial_row(trial, self.spec, state)
        rows = [row if t is trial else trial_row(t, self.spec) for t in trials]
        self._write(rows, done=False, force=True)
        if not self._tty:
            value = "" if row["objective"] is None else " " + "/".join(f"{v:.4f}" for v in row["objective"])
            print(
                f"[{time.monotonic() - self._started:7.1f}s] trial {trial.trial_id} {state} after "
                f"{row['tasks_done']} task(s){value}  {row['config']} seed={row['seed']}",
                flush=True,
            )

    @guarded
    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._ended(trials, trial, stopped_state(trial.last_result))

    @guarded
    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._ended(trials, trial, "failed")

    @guarded
    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        rows = [trial_row(t, self.spec) for t in trials]
        self._write(rows, done=True, force=True)
        if self._tty:
            self._draw(self.lines(rows))


def lost_records(tuner: Any) -> int:
    """The tracking records the sweep's MLflow and progress callbacks lost (their ``failures``), as
    counted by the objects Tune called: those of the tuner's run config. For a new sweep they are
    the ones the driver made; a restored tuner calls the copies pickled in its tuner.pkl, and a
    tuner under Ray Client runs on the cluster (its run config comes back by value)."""
    local = getattr(tuner, "_local_tuner", None)  # Ray 2.60's Tuner has no public accessor of its run config
    if local is not None:
        config = local.get_run_config()
    else:
        import ray

        config = ray.get(tuner._remote_tuner.get_run_config.remote())
    return sum(
        c.failures for c in config.callbacks or [] if isinstance(c, (MLflowCallback, ProgressCallback))
    )
