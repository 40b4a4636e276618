"""The tracking journal: every MLflow record of a sweep, written to the sweep folder first.

The driver's callbacks never call MLflow. Each record (a trial's run with its params and tags,
metrics at a step, tags, an artifact, a trial's end, the parent run's end, ...) is one JSON line
appended to ``tracking_journal.jsonl`` and flushed before the callback returns; a sender thread
(clsweep.tracking.replay) sends the records to MLflow in order, and appends each one it has sent
(or that MLflow refused for good) to ``tracking_sent.jsonl``. Both files only grow, so a driver
killed at any point leaves them consistent: what is in the journal and not in the sent log is
what MLflow still lacks, and ``clsweep resume`` or ``clsweep sync`` sends it.

A record is addressed by trial id, never by MLflow run id (a trial's run may not exist yet while
the server is down); the sent log keeps which run each trial's record created. Sending a record
twice (a sender killed between MLflow's answer and its line in the sent log) changes nothing:
clsweep.tracking.replay makes every record idempotent.

What the callbacks need to know (was trial t seen, at which steps were its metrics logged) is
read from the journal, not from MLflow, so a result never waits for the tracking server.

Standard library only.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["JOURNAL_FILE", "SENT_FILE", "Journal", "live", "pending_in"]

JOURNAL_FILE = "tracking_journal.jsonl"
SENT_FILE = "tracking_sent.jsonl"

_LIVE: dict[str, Journal] = {}
_LIVE_LOCK = threading.Lock()


def live(sweep_dir: str | Path) -> Journal:
    """The journal of ``sweep_dir`` open in this process (one per sweep folder, shared by every
    callback, including the copies Tune unpickles when it restores an experiment)."""
    key = str(Path(sweep_dir).resolve())
    with _LIVE_LOCK:
        journal = _LIVE.get(key)
        if journal is None or journal.closed:
            journal = _LIVE[key] = Journal(Path(key))
        return journal


def pending_in(sweep_dir: str | Path) -> int:
    """How many records of the sweep MLflow has not received (0 without a journal); reads the files."""
    folder = Path(sweep_dir)
    if not (folder / JOURNAL_FILE).exists():
        return 0
    last = max((int(line["seq"]) for line in _lines(folder / SENT_FILE)), default=0)
    return sum(1 for record in _lines(folder / JOURNAL_FILE) if int(record["seq"]) > last)


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    """The complete JSON lines of ``path`` (a last line cut short by a killed process is skipped)."""
    if not path.exists():
        return
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return
            try:
                yield json.loads(raw)
            except ValueError:
                continue


def _repair(path: Path) -> None:
    """Cut a last line left incomplete by a killed writer, so that the next append starts a line."""
    if not path.exists():
        return
    with path.open("rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


class Journal:
    """One sweep's journal and sent log, loaded once and then appended to. Thread-safe: the
    driver's callbacks append, the sender thread reads what is pending and marks it sent."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path, self.sent_path = folder / JOURNAL_FILE, folder / SENT_FILE
        self._lock = threading.Condition()
        self._seq = 0
        self.sent_seq = 0
        """The last record MLflow has (records are sent strictly in order)."""
        self.runs: dict[str, str] = {}
        """trial id -> MLflow run id, for the trials whose run a sent record created or found."""
        self.rejected = 0
        """Records MLflow refused for good (in the sent log with the reason), over the sweep's life."""
        self._trials: set[str] = set()
        self._steps: dict[str, set[int]] = {}
        self._pending: deque[dict[str, Any]] = deque()
        self._file: Any = None
        self.closed = False
        self._load()

    # ---- loading ----------------------------------------------------------------------------------
    def _load(self) -> None:
        for line in _lines(self.sent_path):
            self.sent_seq = max(self.sent_seq, int(line["seq"]))
            if line.get("run") and line.get("trial"):
                self.runs[str(line["trial"])] = str(line["run"])
            if line.get("rejected"):
                self.rejected += 1
        for record in _lines(self.path):
            self._seq = max(self._seq, int(record["seq"]))
            self._index(record)
            if int(record["seq"]) > self.sent_seq:
                self._pending.append(record)

    def _index(self, record: dict[str, Any]) -> None:
        op, trial = record["op"], record.get("trial")
        if op in ("start", "adopt") and trial:
            self._trials.add(trial)
            if op == "adopt":  # the lost trial's run, with its metrics, becomes this trial's
                self._steps.setdefault(trial, set()).update(self._steps.get(record["lost"], ()))
        elif op == "metrics" and trial:
            self._steps.setdefault(trial, set()).add(int(record["step"]))

    # ---- what the callbacks ask ---------------------------------------------------------------------
    def knows(self, trial: str) -> bool:
        """Whether a run was recorded for ``trial`` (by this driver or an earlier one)."""
        with self._lock:
            return trial in self._trials

    def steps(self, trial: str) -> set[int]:
        """The steps at which metrics of ``trial`` (or of the lost trial it adopted) were recorded."""
        with self._lock:
            return set(self._steps.get(trial, ()))

    # ---- writing ----------------------------------------------------------------------------------
    def append(self, op: str, **fields: Any) -> int:
        """Record ``op`` (durable when this returns: written and flushed); returns its number."""
        with self._lock:
            if self._file is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                _repair(self.path)
                self._file = self.path.open("a", encoding="utf-8")
            self._seq += 1
            record = {"seq": self._seq, "op": op, **fields}
            self._file.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
            self._file.flush()
            self._index(record)
            self._pending.append(record)
            self._lock.notify_all()
            return self._seq

    def mark_sent(
        self, record: dict[str, Any], *, run: str | None = None, rejected: str | None = None
    ) -> None:
        """``record`` reached MLflow (``run``: the run it created or found for its trial), or MLflow
        refused it for good (``rejected``: why); the next pending record is the following one."""
        line: dict[str, Any] = {"seq": record["seq"], "at": round(time.time(), 3)}
        if run and record.get("trial"):
            line.update(trial=record["trial"], run=run)
        if rejected:
            line.update(rejected=rejected[:2000], op=record["op"])
        with self._lock:
            _repair(self.sent_path)
            with self.sent_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(line, separators=(",", ":")) + "\n")
            self.sent_seq = int(record["seq"])
            if run and record.get("trial"):
                self.runs[str(record["trial"])] = run
            if rejected:
                self.rejected += 1
            if self._pending and self._pending[0]["seq"] == record["seq"]:
                self._pending.popleft()
            self._lock.notify_all()

    # ---- what the sender asks -------------------------------------------------------------------
    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def next_pending(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The oldest record MLflow lacks; waits up to ``timeout`` seconds for one (None: none came)."""
        with self._lock:
            if not self._pending and timeout:
                self._lock.wait(timeout)
            return self._pending[0] if self._pending else None

    def wait_sent(self, timeout: float) -> bool:
        """Wait until nothing is pending (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.5))
            return True

    def records(self) -> Iterable[dict[str, Any]]:
        """Every record in the journal file, in order (read from disk)."""
        return _lines(self.path)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            self.closed = True
        with _LIVE_LOCK:
            if _LIVE.get(str(self.folder)) is self:
                del _LIVE[str(self.folder)]
