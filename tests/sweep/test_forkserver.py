"""The fork server that trains local trials in children of a process with torch already imported:
the same numbers as training in-process, errors and deaths reported, no process left behind, and a
sweep uses it by default on a local Ray (and not when turned off)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clsweep.recovery import RESULT_FILE
from clsweep.spec.sweep import load_sweep
from clsweep.sweep.forkserver import ForkServer, TrialProcessError, run_forked
from clsweep.sweep.tasks import run_tasks

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is Linux-only")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    srv = ForkServer.start(["sklearn.datasets"], tmp_path_factory.mktemp("fork") / "forkserver.log")
    try:
        yield srv
    finally:
        srv.stop()
    assert srv.process.returncode is not None


@pytest.fixture
def spec(write_yaml: Any, tiny: str) -> Any:
    return load_sweep(write_yaml(tiny))


def _request(spec: Any, scratch: Path, **config: Any) -> dict[str, Any]:
    return {
        "plan": spec.payload(),
        "config": {"seed": 0, **config},
        "scratch": str(scratch),
        "resume_from": None,
    }


def _keep(into: list[tuple[dict[str, Any], Path]], folder: Path) -> Any:
    """A report function that copies each checkpoint away, as tune.report does."""

    def report(result: dict[str, Any], checkpoint: Any) -> None:
        into.append((result, folder / f"checkpoint_{len(into)}"))
        shutil.copytree(checkpoint, into[-1][1])

    return report


def test_a_forked_trial_reports_what_an_in_process_one_does(server, spec, tmp_path, alive):
    forked: list[tuple[dict[str, Any], Path]] = []
    assert run_forked(server.address, _request(spec, tmp_path / "a"), _keep(forked, tmp_path))
    local: list[dict[str, Any]] = []
    run_tasks(spec.payload(), {"seed": 0}, lambda r, c: local.append(r), tmp_path / "b", None)

    assert [r["tasks_done"] for r, _ in forked] == [1, 2]
    for (f, path), mine in zip(forked, local, strict=True):
        assert (
            f["acc_matrix_val"] == mine["acc_matrix_val"] and f["acc_matrix_test"] == mine["acc_matrix_test"]
        )
        assert f["trial_pid"] != os.getpid() and mine["trial_pid"] == os.getpid()
        assert json.loads((path / RESULT_FILE).read_text()) == f  # the checkpoint as it was reported
    assert not alive(forked[0][0]["trial_pid"], within=5.0)  # the child is gone once its trial is done
    log = Path(server._log.name).read_text()
    assert (
        "preloaded torch, torch._dynamo, lightning" in log
        and f"forked trial process {forked[0][0]['trial_pid']}" in log
    )


def test_a_forked_trial_resumes_from_a_checkpoint(server, spec, tmp_path):
    first: list[tuple[dict[str, Any], Path]] = []
    run_tasks(spec.payload(), {"seed": 0}, _keep(first, tmp_path), tmp_path / "a", None)
    resumed: list[dict[str, Any]] = []
    request = {**_request(spec, tmp_path / "b"), "resume_from": str(first[0][1])}
    assert run_forked(server.address, request, lambda r, c: resumed.append(r))
    assert [r["tasks_done"] for r in resumed] == [2]
    assert resumed[0]["acc_matrix_test"] == first[1][0]["acc_matrix_test"]


def test_an_error_in_the_child_comes_back_with_its_traceback(server, write_yaml, tiny, tmp_path):
    diverging = load_sweep(write_yaml(tiny.replace("lr: 0.05", "lr: 1.0e+30")))
    seen: list[dict[str, Any]] = []
    with pytest.raises(TrialProcessError, match="NonFiniteLossError") as err:
        run_forked(server.address, _request(diverging, tmp_path), lambda r, c: seen.append(r))
    assert "Traceback" in str(err.value) and seen == []


def test_an_actor_that_stops_listening_takes_its_child_along(server, spec, tmp_path, alive):
    """Tune stopping a trial raises inside the report: the child must not train on."""
    trainers: list[int] = []

    def stop_after_first(result: dict[str, Any], _: Any) -> None:
        trainers.append(result["trial_pid"])
        raise SystemExit("stopped by the scheduler")

    with pytest.raises(SystemExit):
        run_forked(server.address, _request(spec, tmp_path), stop_after_first)
    assert not alive(trainers[0], within=2.0)


def test_a_killed_actor_takes_its_child_along(server, spec, tmp_path, alive):
    """The actor (here a plain process) is SIGKILLed while its child trains: the child exits."""
    script = textwrap.dedent(f"""
        import json, sys, time
        from clsweep.sweep.forkserver import run_forked
        request = json.loads(sys.argv[1])
        def hang(result, path):
            print(result["trial_pid"], flush=True)
            time.sleep(600)
        run_forked({server.address!r}, request, hang)
    """)
    request = _request(spec, tmp_path)
    actor = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(request)], stdout=subprocess.PIPE, text=True
    )
    try:
        child = int(actor.stdout.readline())  # type: ignore[union-attr]
        assert alive(child)
    finally:
        actor.kill()
        actor.wait()
    assert not alive(child, within=5.0)


def test_no_server_means_train_in_process(spec, tmp_path):
    assert run_forked(str(tmp_path / "no-socket"), _request(spec, tmp_path), lambda r, c: None) is False


def test_a_child_that_never_answers_means_train_in_process(spec, tmp_path, monkeypatch):
    """A server that says it forks, and then no child says hello (stuck after the fork)."""
    import socket
    import threading

    from clsweep.sweep import forkserver

    monkeypatch.setattr(forkserver, "_HELLO_TIMEOUT_S", 0.5)
    address = str(tmp_path / "socket")
    (tmp_path / "python").write_text(sys.prefix)  # a server of this environment, as far as it says
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(1)
    listener.settimeout(30)  # a run_forked that never connects fails the test instead of hanging it
    accepted: list[socket.socket] = []
    thread = threading.Thread(
        target=lambda: (accepted.append(listener.accept()[0]), accepted[0].sendall(b"F"))
    )
    thread.start()
    try:
        started = time.monotonic()
        assert run_forked(address, _request(spec, tmp_path), lambda r, c: None) is False
        assert time.monotonic() - started < 10
    finally:
        thread.join()
        for sock in [*accepted, listener]:
            sock.close()


def test_the_server_and_its_children_end_with_the_driver(tmp_path, alive):
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from clsweep.sweep.forkserver import ForkServer
        server = ForkServer.start([], Path({str(tmp_path / "log")!r}))
        print(server.process.pid, flush=True)
        time.sleep(600)
    """)
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    server_pid = int(driver.stdout.readline())  # type: ignore[union-attr]
    assert alive(server_pid)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert not alive(server_pid, within=10.0)


def test_a_server_of_another_python_environment_is_not_used(server, spec, tmp_path):
    """A Ray started from another virtual environment: its trials train with their own packages."""
    prefix = Path(server.address).with_name("python")
    assert prefix.read_text() == sys.prefix
    prefix.write_text("/elsewhere/venv")
    try:
        assert run_forked(server.address, _request(spec, tmp_path), lambda r, c: None) is False
    finally:
        prefix.write_text(sys.prefix)


@pytest.mark.parametrize(("setting", "joined"), [("", False), ("", True), ("0", False)])
def test_a_local_sweep_trains_in_forked_children_unless_turned_off(
    write_yaml, tiny, tmp_path, ray_address, monkeypatch, setting, joined
):
    """``joined``: the sweep names the (one-node, local) Ray with ``--address``."""
    from clsweep.sweep.driver import execute, prepare

    if setting:
        monkeypatch.setenv("CLSWEEP_FORKSERVER", setting)
    spec = load_sweep(write_yaml(tiny + "seeds: [0, 1]\nresources: {max_concurrent: 2}\n"))
    address = ray_address if joined else None
    outcome = execute(prepare(spec, storage=tmp_path, address=address), display=False)
    assert outcome.complete and outcome.failed == 0
    log = tmp_path / "tiny" / "forkserver.log"
    pids = []
    for row in outcome.rows:
        lines = (tmp_path / "tiny" / row["trial_id"] / "result.json").read_text().splitlines()
        pids += [(r["pid"], r["trial_pid"]) for r in map(json.loads, lines)]
    if setting:
        assert not log.exists() and all(worker == trainer for worker, trainer in pids)
    else:
        forked = {int(line.split()[-1]) for line in log.read_text().splitlines() if line.startswith("forked")}
        assert all(worker != trainer and trainer in forked for worker, trainer in pids)
        assert len(forked) == 2
