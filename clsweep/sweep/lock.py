"""One driver per sweep: the lock file ``<storage>/<name>/clsweep_driver.lock``.

It names the driver's host and pid, when it started and a heartbeat time that the driver
rewrites every :data:`HEARTBEAT_S` seconds. :func:`check` (in ``driver.prepare``) only reads it and
refuses, writing nothing, while the driver it names is alive. :class:`DriverLock` takes it before
the driver writes anything else and gives it back when the driver ends, signals included.

A lock is stale, and taken over with a note on stderr, when its driver is gone: on this host,
its pid no longer runs; on another host (a shared storage folder), its heartbeat is older than
:data:`LEASE_S`. A lock is created whole (a complete file is linked into place), so a reader never
sees half of one.

Ray-free and MLflow-free.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from clsweep.spec.errors import Problem, SpecError
from clsweep.storage import LOCK_FILE, SweepPaths

__all__ = ["HEARTBEAT_S", "LEASE_S", "LOCK_FILE", "DriverLock", "Holder", "check", "held"]

LEASE_S = 120.0
"""A lock of another host whose heartbeat is older than this is stale."""
HEARTBEAT_S = 30.0
"""How often the driver refreshes its heartbeat (a quarter of the lease)."""


@dataclass(frozen=True)
class Holder:
    """The driver a lock file names."""

    host: str
    pid: int
    started: float
    heartbeat: float
    token: str

    def describe(self, now: float | None = None) -> str:
        age = (time.time() if now is None else now) - self.heartbeat
        return f"pid {self.pid} on host {self.host} (heartbeat {age:.0f} s ago)"


def lock_path(paths: SweepPaths) -> Path:
    return paths.sweep_dir / LOCK_FILE


def read_holder(path: Path) -> Holder | None:
    """The holder named by the lock at ``path``; None when there is none or it cannot be read
    (a lock that is not a clsweep lock file holds nothing)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Holder(
            str(data["host"]),
            int(data["pid"]),
            float(data["started"]),
            float(data["heartbeat"]),
            str(data["token"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def alive(holder: Holder, *, now: float | None = None) -> bool:
    """Whether the driver ``holder`` names still runs (see the module's notes on staleness)."""
    if holder.host == socket.gethostname():
        return holder.pid != os.getpid() and _pid_runs(holder.pid)
    return (time.time() if now is None else now) - holder.heartbeat <= LEASE_S


def held(paths: SweepPaths) -> Holder | None:
    """The live driver holding the sweep's lock, if any. Reads only."""
    holder = read_holder(lock_path(paths))
    return holder if holder is not None and alive(holder) else None


def _refusal(paths: SweepPaths, holder: Holder) -> SpecError:
    return SpecError(
        [
            Problem(
                ("name",),
                (
                    f"sweep {paths.name!r} is being run by another driver: {holder.describe()}; one driver per sweep. "
                    f"Wait for it to end, or stop it (Ctrl-C there, or `kill -TERM {holder.pid}` on {holder.host}) "
                    "and resume"
                ),
            )
        ]
    )


def check(paths: SweepPaths) -> None:
    """Raise SpecError (exit status 2) while a live driver holds the sweep. Writes nothing."""
    holder = held(paths)
    if holder is not None:
        raise _refusal(paths, holder)


class DriverLock:
    """The lock of one driver: :meth:`acquire`, then :meth:`release` (a heartbeat thread between)."""

    def __init__(self, paths: SweepPaths) -> None:
        self.path = lock_path(paths)
        self.paths = paths
        self.me = Holder(socket.gethostname(), os.getpid(), time.time(), time.time(), uuid.uuid4().hex)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _text(self) -> str:
        return json.dumps({**asdict(self.me), "heartbeat": time.time()}, indent=1)

    def _create(self) -> bool:
        """Link a complete lock file into place; False when a lock is there already."""
        tmp = self.path.with_name(f".{LOCK_FILE}.{self.me.token}")
        tmp.write_text(self._text(), encoding="utf-8")
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, stale: Holder | None) -> None:
        """Move a stale lock aside; put it back if it turns out to be another one by then."""
        aside = self.path.with_name(f".{LOCK_FILE}.stale.{self.me.token}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.path, aside)
            moved = read_holder(aside)
            if moved is not None and (stale is None or moved.token != stale.token):
                with contextlib.suppress(OSError):
                    os.link(aside, self.path)  # a new live lock, taken meanwhile: it stays
            aside.unlink(missing_ok=True)
        if stale is not None:
            print(
                f"note: taking over the lock of sweep {self.paths.name!r} from a driver that is gone: "
                f"{stale.describe()}",
                file=sys.stderr,
            )

    def acquire(self) -> None:
        """Take the lock (SpecError while a live driver holds it) and start the heartbeat."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._create():
                break
            holder = read_holder(self.path)
            if holder is not None and alive(holder):
                raise _refusal(self.paths, holder)
            self._take_over(holder)
        else:
            raise SpecError(
                [Problem(("name",), f"cannot take the lock {self.path}: other drivers race for it")]
            )
        self._thread = threading.Thread(target=self._beat, name="clsweep-lock-heartbeat", daemon=True)
        self._thread.start()

    def _mine(self) -> bool:
        holder = read_holder(self.path)
        return holder is not None and holder.token == self.me.token

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                if self._mine():
                    tmp = self.path.with_name(f".{LOCK_FILE}.{self.me.token}")
                    tmp.write_text(self._text(), encoding="utf-8")
                    os.replace(tmp, self.path)

    def release(self) -> None:
        """Give the lock back (only if it is still this driver's). Safe to call twice."""
        self._stop.set()
        with contextlib.suppress(OSError):
            if self._mine():
                self.path.unlink()


@contextlib.contextmanager
def holding(paths: SweepPaths) -> Iterator[DriverLock]:
    lock = DriverLock(paths)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
