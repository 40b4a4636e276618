"""A real ``mlflow server`` on loopback over a sweep's store, for the tests that read the runs
through the server's REST API or its UI (tests/report/test_mlflow_ui.py, tests/api/)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

MLFLOW = Path(sys.executable).with_name("mlflow")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MlflowServer:
    """``mlflow server`` on ``storage``'s sqlite store and artifacts, on one loopback port for its
    whole life: :meth:`stop` it and :meth:`start` it again (a tracking outage) at the same URL."""

    def __init__(self, storage: Path, log_path: Path, port: int | None = None) -> None:
        self.storage, self.log_path = storage, log_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: object = None

    def start(self, wait: bool = True) -> None:
        """Start it (about 15 s here); ``wait``: return once it answers ``/health``."""
        command = [
            str(MLFLOW),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{self.storage / 'mlflow.db'}",
            "--default-artifact-root",
            str(self.storage / "mlartifacts"),
            "--serve-artifacts",
        ]
        log = self.log_path.open("a")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        if wait:
            self.wait_up()

    def wait_up(self, timeout: float = 120) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.5)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        """Stop it and its uvicorn worker (in its own session); the port stops answering."""
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


@contextlib.contextmanager
def mlflow_server(storage: Path, log_path: Path) -> Iterator[str]:
    """The server on ``storage``'s sqlite store and artifacts (about 15 s to start here); yields its
    URL and stops it afterwards."""
    server = MlflowServer(storage, log_path)
    try:
        server.start()
        yield server.url
    finally:
        server.stop()
