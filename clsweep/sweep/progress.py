"""Live progress of a sweep, and the status file ``clsweep status`` reads.

On a terminal the display is one block redrawn in place (trials finished / running / pruned /
failed, the best objective with its configuration, elapsed time); elsewhere (a log file, CI) it
prints one line per trial that ends. Both come from the Tune trial list at each step, so the
display is right after a restore without any state of its own.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from clsweep.recovery import write_atomically
from clsweep.spec.sweep import SweepPlan
from clsweep.storage import driver_identity
from clsweep.sweep.summary import RunningSummary, Summary, format_summary, summarize
from clsweep.sweep.tasks import plan_of
from clsweep.sweep.tracking_callback import MLflowCallback, error_text, guarded, stopped_state, trial_state

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


_ENDED = ("TERMINATED", "ERROR")
_COST_SHARE = 19
"""A status write waits for ``_COST_SHARE`` times its last duration after the last one: at most
5% of the driver's time goes to it however many rows it holds (the rule Tune's own snapshots
follow); a small sweep still writes at every trial end."""


class ProgressCallback(Callback):
    """Draws the display and writes ``status_path``. Picklable (Tune stores its callbacks).

    A row is kept per trial: an ended trial's row is made once, when it ends (or when it is first
    seen ended, after a restore), and encoded once; only the open trials' rows (running, pending,
    paused: at most a few) are made again at each step. So a step costs the same at trial 2000 as
    at trial 20; the status file, which holds every row, is written at a bounded share of the
    time (see ``_COST_SHARE``), and at the end with every row made afresh from Tune's trials."""

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

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_rows", "_texts", "_open", "_list", "_seen", "_summary"):
            state.pop(key, None)  # rebuilt by setup() from Tune's trials
        return state

    def _reset(self) -> None:
        self.failures = 0
        """Events whose display or status-file update failed in this run of the sweep."""
        self._started = time.monotonic()
        self._drawn = 0
        self._last_draw = 0.0
        self._last_write = 0.0
        self._write_took = 0.0
        self._tty = False
        self._forget()

    def _forget(self) -> None:
        self._rows: dict[str, dict[str, Any]] = {}
        """Trial id -> row, in the order of Tune's trial list."""
        self._texts: dict[str, str] = {}
        """Trial id -> the JSON of an ended trial's row (made once)."""
        self._open: dict[str, Any] = {}
        """Trial id -> Tune trial, for the trials not ended: their rows are made at each step."""
        self._list: list[Any] | None = None
        """Tune's trial list, of which the first ``_seen`` trials have rows."""
        self._seen = 0
        self._summary: RunningSummary | None = None

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
        return self._format(summary, objectives)

    def _format(self, summary: Summary, objectives: list[dict[str, str]]) -> list[str]:
        name = self.spec.name if self.stage == "search" else f"{self.spec.name} ({self.stage})"
        return format_summary(summary, objectives, elapsed=time.monotonic() - self._started, name=name)

    @property
    def _total(self) -> int:
        total = getattr(self, "total", None)  # a callback pickled before stages existed has none
        return self.spec.num_trials if total is None else int(total)

    def _refresh(self, trials: list[Any]) -> None:
        """Bring the rows up to date with Tune's trial list (one list per experiment, which Tune
        only appends to): rows for the trials new since the last call and for the open ones."""
        if trials is not self._list or len(trials) < self._seen:
            self._forget()
            self._list = trials
        if self._summary is None:
            self._summary = RunningSummary([str(o.mode) for o in self.spec.objectives], self._total)
        for trial in trials[self._seen :]:
            self._rows[trial.trial_id] = {}
            self._open[trial.trial_id] = trial
        self._seen = len(trials)
        for tid, trial in list(self._open.items()):
            row = trial_row(trial, self.spec)
            if trial.status in _ENDED:
                self._close(tid, row)
            else:
                self._rows[tid] = row

    def _close(self, tid: str, row: dict[str, Any]) -> None:
        self._open.pop(tid, None)
        if tid in self._texts:
            return
        self._rows[tid] = row
        self._texts[tid] = json.dumps(row, sort_keys=True, default=str)
        assert self._summary is not None
        self._summary.add(row)

    def _write(self, *, done: bool, due: float = 0.0, rows: list[dict[str, Any]] | None = None) -> None:
        """Write the status file if the last write is ``due`` s old and at least ``_COST_SHARE``
        times its duration (always when done); ``rows``: all rows anew (else the kept ones)."""
        now = time.monotonic()
        if not done and now - self._last_write < max(due, _COST_SHARE * self._write_took):
            return
        header = {
            "sweep": self.spec.name,
            "updated": time.time(),
            "driver": driver_identity(),
            "ended": done,
            "stage": getattr(self, "stage", "search"),
            "total": self._total,
            "elapsed_s": now - self._started,
            "objectives": [{"metric": o.metric, "mode": o.mode} for o in self.spec.objectives],
        }
        if rows is None:
            texts = (
                self._texts.get(tid) or json.dumps(row, sort_keys=True, default=str)
                for tid, row in self._rows.items()
            )
        else:
            texts = (json.dumps(row, sort_keys=True, default=str) for row in rows)
        head = json.dumps(header, indent=1, sort_keys=True, default=str)
        text = head[:-2] + ',\n "trials": [\n' + ",\n".join(texts) + "\n ]\n}\n"  # one row a line
        write_atomically(self.status_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        self._last_write = time.monotonic()
        self._write_took = self._last_write - now

    def _draw(self, lines: list[str]) -> None:
        out = sys.stdout
        if self._drawn:
            out.write(f"\x1b[{self._drawn}F\x1b[J")  # back to the block's first line, clear below
        out.write("\n".join(lines) + "\n")
        out.flush()
        self._drawn = len(lines)

    def _draw_summary(self) -> None:
        assert self._summary is not None
        objectives = [{"metric": o.metric, "mode": str(o.mode)} for o in self.spec.objectives]
        open_rows = [self._rows[tid] for tid in self._open]
        self._draw(self._format(self._summary.summary(open_rows), objectives))

    @guarded
    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        now = time.monotonic()
        if now - self._last_draw < self.interval:
            return
        self._last_draw = now
        self._refresh(trials)
        self._write(done=False, due=2.0)
        if self._tty:
            self._draw_summary()

    def _ended(self, trials: list[Any], trial: Any, state: str) -> None:
        self._refresh(trials)
        row = trial_row(trial, self.spec, state)  # its status may still read RUNNING here
        self._close(trial.trial_id, row)
        self._write(done=False)
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
        if self._tty and self._drawn:  # the line goes above the block, which is drawn again below it
            sys.stdout.write(f"\x1b[{self._drawn}F\x1b[J")
            sys.stdout.flush()
            self._drawn = 0
        print(failure_line(trial), file=sys.stderr, flush=True)

    @guarded
    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        rows = [trial_row(t, self.spec) for t in trials]  # once, from Tune's final states
        self._write(done=True, rows=rows)
        if self._tty:
            self._draw(self.lines(rows))


def failure_line(trial: Any) -> str:
    """One line saying why ``trial`` failed: its error's last line and where its traceback is."""
    where = trial.error_file if trial.error_file and Path(trial.error_file).exists() else None
    text = error_text(trial)
    reason = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "no error was kept")
    return f"failed:    trial {trial.trial_id}: {reason} (traceback: {where or 'traceback.txt of its MLflow run'})"


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
