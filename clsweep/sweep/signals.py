"""Ctrl-C and SIGTERM during a sweep: stop cleanly, lose nothing, exit 130 / 143.

While :func:`interruptible` is active (the whole of ``driver.execute``), the first SIGINT or
SIGTERM to the driver asks Ray Tune for its own graceful stop: Tune leaves its loop after the
current step, writes its experiment snapshot (the trials that were running are stored as
unfinished, so a resumed sweep restarts them from their last task checkpoint) and stops the trial
actors. Tune's own SIGINT handler is turned off (``TUNE_DISABLE_SIGINT_HANDLER``, set by
clsweep.sweep.ray_setup); the stop goes through the handler Tune always installs for SIGUSR1.
A signal that arrives while Ray starts is acted on before Tune starts (no trial is started).

Tune then marks the stopped trials TERMINATED in memory, which would read as "pruned". The
:class:`~clsweep.sweep.stopping.StopCallback`, first in the callback list, sets the trials that were running back to
RUNNING before the other callbacks see the experiment end; the driver then marks their MLflow
runs and the parent run KILLED. A second signal, or a stop that takes longer than
:data:`GRACE_S`, exits at once (``os._exit``): the driver's lock is released first, and the fork
server and the processes of an embedded Ray die with the driver (they are set to).

The same stop serves a sweep whose trials no cluster node can place (:func:`request_stop`).
The callback reads this module's state, not its own: a restored Tuner calls the copy pickled
with its run config. Importing this module imports neither Ray nor torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

__all__ = [
    "GRACE_S",
    "STATE",
    "exit_status",
    "fitting",
    "interruptible",
    "live_trials",
    "reinstall",
    "request_stop",
]

GRACE_S = 30.0
"""After the first signal the driver exits within this many seconds, cleanly or not."""
_LIVE = ("RUNNING", "PENDING", "PAUSED")


@dataclass
class _State:
    signum: int | None = None
    """The first signal received, if any."""
    reason: str | None = None
    """Why the sweep was stopped other than by a signal (no node can place a trial)."""
    installed: bool = False
    fitting: bool = False
    trials: list[Any] | None = None
    live: set[str] = field(default_factory=set)
    """Trials that were running when the stop was asked for."""
    pending_timeout: float | None = None
    """Stop the sweep when trials wait this long with none running (None: wait)."""
    pending_since: float | None = None
    on_force_exit: list[Callable[[], None]] = field(default_factory=list)
    timer: threading.Timer | None = None

    def reset(self) -> None:
        self.__dict__.update(_State().__dict__)

    @property
    def stopping(self) -> bool:
        return self.signum is not None or self.reason is not None


STATE = _State()


def exit_status(signum: int) -> int:
    """The shell's convention: 128 + the signal's number (130 SIGINT, 143 SIGTERM)."""
    return 128 + signum


def _force_exit(code: int) -> None:
    for release in STATE.on_force_exit:
        with contextlib.suppress(Exception):
            release()
    with contextlib.suppress(Exception):
        sys.stderr.write(f"\nclsweep: stopped at once (exit status {code}); the sweep can be resumed\n")
        sys.stderr.flush()
    os._exit(code)


def live_trials(trials: list[Any] | None) -> set[str]:
    return {t.trial_id for t in trials or [] if t.status in _LIVE}


def _stop_tune(signum: int, frame: FrameType | None) -> None:
    """Ask Tune to stop after its current step (its SIGUSR1 handler sets its stop event)."""
    STATE.live = live_trials(STATE.trials)
    handler = signal.getsignal(signal.SIGUSR1)
    if STATE.fitting and callable(handler):
        handler(signum, frame)


def _handle(signum: int, frame: FrameType | None) -> None:
    if STATE.signum is not None:
        _force_exit(exit_status(STATE.signum))
    STATE.signum = signum
    STATE.timer = threading.Timer(GRACE_S, _force_exit, (exit_status(signum),))
    STATE.timer.daemon = True
    STATE.timer.start()
    name = signal.Signals(signum).name
    sys.stderr.write(
        f"\nclsweep: {name} received: stopping the sweep (running trials keep their last task checkpoint; "
        f"resumable). Send it again to stop at once.\n"
    )
    sys.stderr.flush()
    _stop_tune(signum, frame)


def request_stop(reason: str) -> None:
    """Stop the sweep as a signal would, for ``reason`` (called from a Tune callback)."""
    if not STATE.stopping:
        STATE.reason = reason
        _stop_tune(signal.SIGUSR1, None)


@contextlib.contextmanager
def interruptible() -> Iterator[_State]:
    """Own SIGINT and SIGTERM for the duration (main thread only; elsewhere nothing changes)."""
    STATE.reset()
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    for sig in previous:
        signal.signal(sig, _handle)
    STATE.installed = main
    try:
        yield STATE
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if STATE.timer is not None:
            STATE.timer.cancel()


def reinstall() -> None:
    """Take SIGINT and SIGTERM back after ``ray.init`` (Ray's core worker installs a handler of its
    own that aborts the process on SIGTERM)."""
    if STATE.installed and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _handle)


@contextlib.contextmanager
def fitting() -> Iterator[None]:
    """Around ``tuner.fit()``: a signal now goes to Tune's graceful stop."""
    reinstall()
    STATE.fitting = True
    try:
        yield
    finally:
        STATE.fitting = False
