"""Sending the tracking journal (clsweep.tracking.journal) to MLflow, in order, exactly once.

:class:`Sender` is the driver's thread: it sends each record as soon as it is journaled; when
MLflow does not answer it keeps the records and asks the server's ``/health`` every second, then
sends what waited. :func:`send_pending` sends everything pending in the calling thread
(``clsweep sync``, and a resumed driver before it reopens the parent run).

Every record is idempotent, so one sent twice (the sender was killed after MLflow stored it and
before the sent log said so) appears once:

- a trial's run is looked up by its ``clsweep.trial_id`` tag before one is created; a run found
  that way gets its params (MLflow accepts a param logged again with the same value) and its
  dataset input (MLflow keeps one input per dataset and run) again, in case the first send was
  cut between the two;
- metrics carry the time they were journaled, and MLflow's SQL store drops a metric identical in
  key, value, step and time to one it has;
- tags, artifacts and run statuses are overwritten with the same values.

An error is transient (the record waits and is sent again) when MLflow could not be reached or
answered 5xx/429; any other error (4xx: the run or experiment was deleted, a param changed) is
final: the record is marked rejected in the sent log and counted. A record that fails with a
"transient" error :data:`ATTEMPTS` times while the server's health check passes is rejected too,
so a poisoned record never blocks the ones behind it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import urllib.request
from typing import Any

from clsweep.tracking.journal import Journal
from clsweep.tracking.store import TRIAL_ID, SweepTracker

__all__ = ["ATTEMPTS", "Sender", "apply", "is_transient", "reachable", "send_pending"]

logger = logging.getLogger(__name__)
ATTEMPTS = 5
_RETRY_S = 1.0


class NoRun(Exception):
    """A record of a trial whose run MLflow never got (its start was rejected)."""


def is_transient(err: BaseException) -> bool:
    """Whether sending again later may succeed (MLflow unreachable, overloaded or failing inside)."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, NoRun):
        return False
    if isinstance(err, MlflowException):
        code = int(err.get_http_status_code())
        return code >= 500 or code == 429
    return isinstance(err, (OSError, ConnectionError, TimeoutError)) or "requests" in type(err).__module__


def reachable(uri: str, timeout: float = 2.0) -> bool:
    """An http(s) server answers ``/health``; other stores (sqlite, databases) are taken as up."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:  # noqa: S310
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def _run_of(record: dict[str, Any], tracker: SweepTracker, runs: dict[str, str]) -> str:
    trial = str(record["trial"])
    run = runs.get(trial) or tracker.find_trial(trial)
    if run is None:
        raise NoRun(f"trial {trial} has no MLflow run (its first record was refused)")
    runs[trial] = run
    return run


def apply(record: dict[str, Any], tracker: SweepTracker, runs: dict[str, str]) -> str | None:
    """Send one journal record; returns the run of its trial for the records that create or find
    it (start, adopt). ``runs``: trial id -> run id known so far (updated)."""
    op, trial = record["op"], record.get("trial")
    if op in ("start", "adopt"):
        run = runs.get(str(trial))
        if run is None:
            found = tracker.find_trial(str(trial))
            if found is None and op == "adopt":  # the lost trial's run becomes this trial's
                found = runs.get(record["lost"]) or tracker.find_trial(record["lost"])
                if found is not None:
                    tags = {
                        TRIAL_ID: trial,
                        "mlflow.runName": record["name"],
                        "clsweep.adopted_from": record["lost"],
                    }
                    tracker.set_tags(found, tags)
            if found is None:
                found = tracker.start_trial(
                    str(trial), record["name"], params=record["params"], tags=record["tags"]
                )
                tracker.log_dataset(found, record["dataset"])
            elif op == "start":  # created by a send cut short: complete it (both idempotent)
                tracker.log_params(found, record["params"])
                tracker.log_dataset(found, record["dataset"])
            run = found
        if op == "adopt":
            tracker.resume_trial(run)
        runs[str(trial)] = run
        return run
    if op == "resume":
        tracker.resume_trial(_run_of(record, tracker, runs))
    elif op == "metrics":
        tracker.log_metrics(
            _run_of(record, tracker, runs), record["metrics"], int(record["step"]), at=record["at"]
        )
    elif op == "tags":
        run = tracker.parent_id if trial is None else _run_of(record, tracker, runs)
        tracker.set_tags(str(run), record["tags"])
    elif op == "text":
        tracker.log_text(_run_of(record, tracker, runs), record["text"], record["path"])
    elif op == "end":
        tracker.end_trial(_run_of(record, tracker, runs), record["state"])
    elif op == "orphans":
        tracker.delete_orphans(record["keep"], stage=record.get("stage"))
    elif op == "close":
        tracker.close(tags=record["tags"], status=record["status"])
    elif op == "kill_running":
        tracker.kill_running()
    else:
        raise NoRun(f"unknown journal record {op!r}")
    return None


def _send_one(journal: Journal, tracker: SweepTracker, record: dict[str, Any], failures: int) -> int:
    """Send ``record``; returns the consecutive transient failures of it (0: done, sent or
    rejected). Raises the error when it is transient and the server does not answer."""
    try:
        run = apply(record, tracker, journal.runs)
    except Exception as err:  # noqa: BLE001 - sorted into transient and final below
        why = f"{type(err).__name__}: {err}"
        if is_transient(err):
            if not reachable(tracker.uri):
                raise
            if failures + 1 < ATTEMPTS:
                return failures + 1
        logger.warning("MLflow refused journal record %s (%s): %s", record["seq"], record["op"], why)
        journal.mark_sent(record, rejected=why)
        return 0
    journal.mark_sent(record, run=run)
    return 0


def send_pending(journal: Journal, tracker: SweepTracker) -> int:
    """Send every pending record now, in this thread; returns how many are left (the server
    stopped answering)."""
    failures = 0
    while (record := journal.next_pending()) is not None:
        try:
            failures = _send_one(journal, tracker, record, failures)
        except Exception:  # noqa: BLE001 - the server went away: the rest waits
            return journal.pending
        if failures:
            time.sleep(_RETRY_S * failures)
    return 0


class Sender(threading.Thread):
    """The driver's sender: journal -> MLflow while the sweep runs; see the module docstring."""

    def __init__(self, journal: Journal, tracker: SweepTracker, *, echo: bool = True) -> None:
        super().__init__(name="clsweep-tracking", daemon=True)
        self.journal, self.tracker, self.echo = journal, tracker, echo
        self.down_since: float | None = None
        """time.monotonic() when MLflow stopped answering; None while it answers."""
        self._halt = threading.Event()

    def _say(self, text: str) -> None:
        logger.warning(text)
        if self.echo:
            print(f"tracking:  {text}", file=sys.stderr, flush=True)

    def run(self) -> None:
        failures = 0
        while not self._halt.is_set():
            if self.down_since is not None:
                if not reachable(self.tracker.uri):
                    self._halt.wait(_RETRY_S)
                    continue
                self._say(
                    f"{self.tracker.uri} answers again; sending the {self.journal.pending} records that waited"
                )
                self.down_since = None
            record = self.journal.next_pending(timeout=0.5)
            if record is None:
                continue
            try:
                failures = _send_one(self.journal, self.tracker, record, failures)
            except Exception as err:  # noqa: BLE001 - unreachable: keep the records, retry
                self.down_since = time.monotonic()
                self._say(
                    f"{self.tracker.uri} does not answer ({type(err).__name__}); the sweep goes on and its "
                    f"records wait in {self.journal.path}"
                )
                continue
            if failures:
                self._halt.wait(_RETRY_S * failures)

    def finish(self, outage_timeout: float) -> int:
        """Send what is pending and stop; waits while records are being sent, and at most
        ``outage_timeout`` seconds of MLflow not answering. Returns the records left unsent."""
        started = time.monotonic()
        while self.journal.pending and self.is_alive():
            down = self.down_since
            if down is not None and time.monotonic() - max(down, started) > outage_timeout:
                break
            self.journal.wait_sent(0.5)
        self._halt.set()
        self.join(timeout=30)
        return self.journal.pending
