"""The driver's side of tracking: the store and parent run opened before any trial starts, the
journal's sender while the sweep runs, and what is left unsent when it ends.

The parent run is opened directly (the tracking server was checked to answer before anything was
written); every later record goes through the journal (clsweep.tracking.journal), so an outage
during the sweep delays records and loses none. Records an earlier driver left unsent are sent
before the parent run is reopened, so an old "parent run KILLED" cannot land after this driver
set it running.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from clsweep.common import versions
from clsweep.storage import write_json
from clsweep.tracking.journal import Journal, live
from clsweep.tracking.replay import Sender, reachable, send_pending
from clsweep.tracking.store import SweepTracker

__all__ = ["HTTP_DEFAULTS", "TrackingSession", "open_tracking", "sync_journal"]

HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
"""MLflow's client retries a refused connection 7 times over about two minutes by default; the
journal retries by itself, so the driver asks for one quick retry (a variable the user set wins)."""


@dataclass
class TrackingSession:
    tracker: SweepTracker
    journal: Journal
    rejected_before: int
    """Records MLflow refused before this driver started (they were counted by an earlier run)."""
    sender: Sender | None = None

    def start(self, *, echo: bool = True) -> None:
        self.sender = Sender(self.journal, self.tracker, echo=echo)
        self.sender.start()

    def finish(self, outage_timeout: float, stopping: bool = False) -> tuple[int, int]:
        """Send what is left (waiting at most ``outage_timeout`` s for a server that does not
        answer; 5 s when a signal stopped the sweep: its resume sends the rest) and stop the
        sender; returns (records still unsent, records MLflow refused in this run of the sweep)."""
        wait = min(outage_timeout, 5.0) if stopping else outage_timeout
        unsent = self.sender.finish(wait) if self.sender else self.journal.pending
        self.sender = None
        return unsent, self.journal.rejected - self.rejected_before


def open_tracking(plan: Any, record: dict[str, Any]) -> TrackingSession:
    """Write the sweep record, send what an earlier driver left in the journal, create the MLflow
    experiment and the parent run (or find them). ``plan``: the driver's Plan."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    spec, paths = plan.spec, plan.paths
    paths.sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json(paths.record, record)
    local = plan.tracking_uri.startswith("sqlite:")
    tracker = SweepTracker(
        plan.tracking_uri, plan.experiment, spec.name, artifact_root=paths.artifact_root if local else None
    )
    journal = live(paths.sweep_dir)
    rejected_before = journal.rejected
    if journal.pending and record.get("parent_run_id"):
        print(
            f"tracking:  sending the {journal.pending} records an earlier driver left in {journal.path.name}",
            file=sys.stderr,
        )
        try:
            tracker.attach(str(record["parent_run_id"]))
            send_pending(journal, tracker)
        except LookupError:  # the experiment is gone: the sender meets MLflow's refusals, counted
            pass
    record["parent_run_id"] = tracker.open(
        record.get("parent_run_id"),
        plan=spec.payload(),
        tags={
            "clsweep.protocol": spec.protocol_tag,
            "clsweep.searcher": spec.searcher.name,
            "clsweep.objective": ", ".join(f"{o.metric} ({o.mode})" for o in spec.objectives),
            "clsweep.fingerprint": spec.fingerprint,
            "clsweep.versions": json.dumps(versions()),
        },
    )
    write_json(paths.record, record)
    return TrackingSession(tracker, journal, rejected_before)


def sync_journal(paths: Any, tracking_uri: str, experiment: str, parent_run_id: str) -> tuple[int, int, int]:
    """Send the records of the sweep at ``paths`` (a SweepPaths) that MLflow lacks, in this thread,
    with no driver running (the caller holds the sweep's lock). Returns (sent, still unsent,
    refused by MLflow)."""
    journal = live(paths.sweep_dir)
    before, rejected_before = journal.pending, journal.rejected
    if before == 0 or not reachable(tracking_uri):
        return 0, before, 0
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    local = tracking_uri.startswith("sqlite:")
    tracker = SweepTracker(
        tracking_uri, experiment, paths.name, artifact_root=paths.artifact_root if local else None
    )
    tracker.attach(parent_run_id)
    left = send_pending(journal, tracker)
    rejected = journal.rejected - rejected_before
    return before - left - rejected, left, rejected
