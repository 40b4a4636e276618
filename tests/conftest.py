"""Ending the test process: pytest's exit status, without the interpreter's own teardown.

A full run of the suite (741 passed) once ended in a segmentation fault after pytest had printed
its summary, while the interpreter tore down what the tests had left in the process: a local Ray
shut down and started again many times, MLflow clients, their native threads. Every test had
passed; the crash was in that teardown, and it turned the run's status into 139. Once pytest is
done (its summary printed, every plugin unconfigured), the process therefore ends with
``os._exit`` and pytest's own status (0, 1 for a failure, 5 for no test ...), skipping the
interpreter's finalisation and atexit handlers. Nothing a test checks happens there.
"""

from __future__ import annotations

import os
import sys

import pytest

_STATUS: list[int] = []


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if not _STATUS or os.environ.get("CLSWEEP_TEST_NORMAL_EXIT"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_STATUS[-1])
