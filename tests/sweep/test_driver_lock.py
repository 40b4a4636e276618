"""One driver per sweep: a second ``clsweep run`` of a sweep whose driver lives exits 2 and writes
nothing; the lock of a driver that is gone (SIGKILLed here) is taken over and the sweep finishes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from clsweep.storage import LOCK_FILE, SweepPaths, read_json
from clsweep.sweep import lock
from clsweep.sweep.lock import LEASE_S

from .test_signals import SWEEP, start_driver, wait_for_a_report


def test_a_second_driver_is_refused_and_a_dead_drivers_lock_is_taken_over(
    write_yaml, tmp_path, ray_address, cli
):
    path = write_yaml(SWEEP.format(name="locked"))
    paths = SweepPaths.at(tmp_path, "locked")
    first = start_driver(path, tmp_path, "--address", ray_address)
    try:
        wait_for_a_report(paths, first)
        held = json.loads((paths.sweep_dir / LOCK_FILE).read_text())
        assert (held["pid"], held["host"]) == (first.pid, socket.gethostname())
        before = sorted(p.name for p in paths.sweep_dir.iterdir())
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "clsweep",
                "run",
                str(path),
                "--storage",
                str(tmp_path),
                "--address",
                ray_address,
                "--no-report",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 2, second.stderr
        assert f"pid {first.pid} on host {socket.gethostname()}" in second.stderr
        assert json.loads((paths.sweep_dir / LOCK_FILE).read_text())["token"] == held["token"]
        assert set(before) <= {p.name for p in paths.sweep_dir.iterdir()}
    finally:
        os.kill(first.pid, signal.SIGKILL)  # leaves its lock behind, naming a dead pid
        first.wait()
    assert (paths.sweep_dir / LOCK_FILE).exists()

    code, _, err = cli(
        "resume", "locked", "--storage", str(tmp_path), "--address", ray_address, "--no-report"
    )
    assert code == 0, err
    assert read_json(paths.record)["complete"] is True
    assert not (paths.sweep_dir / LOCK_FILE).exists()  # released at the end


def test_a_lock_of_another_host_holds_for_its_lease(tmp_path):
    paths = SweepPaths.at(tmp_path, "elsewhere")
    paths.sweep_dir.mkdir(parents=True)

    def write(age: float) -> None:
        now = time.time()
        (paths.sweep_dir / LOCK_FILE).write_text(
            json.dumps(
                {"host": "another-host", "pid": 1, "started": now - age, "heartbeat": now - age, "token": "t"}
            )
        )

    write(age=5)
    assert lock.held(paths) is not None
    write(age=LEASE_S + 5)
    assert lock.held(paths) is None
    driver = lock.DriverLock(paths)
    driver.acquire()  # takes the stale one over
    assert json.loads((paths.sweep_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
    driver.release()
    assert not (paths.sweep_dir / LOCK_FILE).exists()
