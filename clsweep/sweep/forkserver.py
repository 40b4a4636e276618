"""A preloaded fork server: trials on the driver's machine start training at once instead of
spending 5 to 8 s of CPU importing torch and Lightning in every new Ray worker.

Every trial actor Tune starts is a new Python process, and Tune places it in a placement group,
so Ray never hands it one of its idle prestarted workers. A new process has to import torch, the
parts of torch the optimisers pull in on their first step (``torch._dynamo``), and Lightning
(which imports torchmetrics, and torchmetrics matplotlib and scipy): about 6 s on two cores, more
than a quickstart-sized trial computes, and paid again by every actor, so two trials started
together on two cores also compete for the cores while importing.

So when the trials run on the driver's machine (a local Ray), the driver starts one server
process before Ray. It imports those modules once, while Ray and the MLflow store start, then
waits on a Unix socket. A trial actor connects, sends its request (the sweep, the trial's
config, where to resume from, its environment, its stdout and stderr) and the server forks a
child that trains the trial with everything already imported. The child sends each finished
task's result back; the actor reports it to Tune with its checkpoint and answers, and only then
does the child go on, so Tune's scheduler decides exactly as if the actor trained the tasks itself.

Lifetimes: the server exits when the driver does (or is stopped by it); a child exits when its
server or its actor exits (it watches the actor's pid), and the actor kills its child on every
way out (a finished trial, a scheduler stop, an error). An error in the child comes back as its
traceback; a child that dies comes back as an error too. If the server cannot be reached, or its
child does not answer within a minute of the fork, the actor trains in its own process as it
would without one.

Only on Linux, and only for CPU trials: the server must never touch CUDA (a process that has
initialised CUDA cannot fork a usable child, and a GPU trial learns its device from Ray only
when it starts). ``CLSWEEP_FORKSERVER=0`` turns it off.

Importing this module imports neither torch nor Ray.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

__all__ = ["PRELOAD", "ForkServer", "TrialProcessError", "enabled", "run_forked", "setting"]

PRELOAD = ("torch", "torch._dynamo", "lightning", "clsweep.experiment", "clsweep.sweep.trial")
"""Imported by the server before it forks anything (torch._dynamo: the optimisers import it on
their first step)."""
ENV = "CLSWEEP_FORKSERVER"
_HEADER = struct.Struct("!Q")
_CONNECT_TIMEOUT_S = 2.0
_BIND_TIMEOUT_S = 10.0
_READY_TIMEOUT_S = 300.0  # a server still importing answers late, never wrongly
_HELLO_TIMEOUT_S = 60.0
_FORKING = b"F"
_PREFIX_FILE = "python"  # beside the socket: the Python environment (sys.prefix) the server runs in


class TrialProcessError(RuntimeError):
    """The trial failed in its forked process; the message holds that process's traceback."""


_SETTINGS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def setting() -> bool:
    """``CLSWEEP_FORKSERVER`` (default on); raises SpecError for a value that is not a yes or a no."""
    value = os.environ.get(ENV, "1").strip().lower() or "1"
    if value not in _SETTINGS:
        from clsweep.spec.errors import Problem, SpecError

        raise SpecError(
            [Problem((ENV,), f"environment variable set to {os.environ[ENV]!r}; expected 1 (on) or 0 (off)")]
        )
    return _SETTINGS[value]


def enabled(gpus: float) -> bool:
    """Whether a local sweep uses the fork server: Linux, CPU trials, not turned off."""
    return sys.platform.startswith("linux") and not gpus and setting()


# ---- messages: a length, then a pickle (both ends are this module, on one machine, one user) ----
def _send(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket) -> Any:
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    return pickle.loads(_recv_exact(sock, size))


def _die_with_parent(sig: int) -> None:
    """Linux: get ``sig`` when the parent process exits."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG


# ---- driver side ------------------------------------------------------------------------------
class ForkServer:
    """The server process, started by the driver (:meth:`start`) and stopped by it (:meth:`stop`)."""

    def __init__(self, process: subprocess.Popen[bytes], address: str, folder: str, log: IO[bytes]) -> None:
        self.process, self.address, self._folder, self._log = process, address, folder, log

    @classmethod
    def start(cls, modules: Iterable[str], log_path: Path) -> ForkServer:
        """Start a server that preloads :data:`PRELOAD` and ``modules``; its output goes to ``log_path``."""
        folder = tempfile.mkdtemp(prefix="clsweep-fork-")  # short: Unix socket paths hold ~100 bytes
        address = os.path.join(folder, "socket")
        Path(folder, _PREFIX_FILE).write_text(sys.prefix)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - open as long as the server runs
        wanted = list(dict.fromkeys([*PRELOAD, *modules]))
        command = [
            sys.executable,
            "-m",
            "clsweep.sweep.forkserver",
            address,
            str(os.getpid()),
            ",".join(wanted),
        ]
        # its own session: a Ctrl-C at the terminal is the driver's to handle (Tune stops the trials)
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            close_fds=True,
            start_new_session=True,
        )
        server = cls(process, address, folder, log)
        deadline = time.monotonic() + _BIND_TIMEOUT_S  # it listens before importing: a fraction of a second
        while not os.path.exists(address) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return server

    def stop(self) -> None:
        """Stop the server (children of finished trials are gone already; any other one dies with it)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        shutil.rmtree(self._folder, ignore_errors=True)


# ---- actor side -------------------------------------------------------------------------------
def run_forked(
    address: str, request: dict[str, Any], on_result: Callable[[dict[str, Any], str | None], None]
) -> bool:
    """Have the server at ``address`` fork a child that runs ``request`` (see :func:`_child`);
    ``on_result(result, checkpoint_dir)`` is called in this process for each finished task before
    the child goes on. False when no server answers, or when the server runs in another Python
    environment than this actor (a Ray started from another virtual environment: its trials must
    train with the packages Ray gives them); the caller then trains in-process. Raises
    :class:`TrialProcessError` when the child fails or dies."""
    try:
        if Path(os.path.dirname(address), _PREFIX_FILE).read_text() != sys.prefix:
            return False
    except OSError:
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(_CONNECT_TIMEOUT_S)
        sock.connect(address)
        sock.settimeout(_READY_TIMEOUT_S)
        socket.send_fds(sock, [b"fds"], [sys.stdout.fileno(), sys.stderr.fileno()])
        _send(sock, {**request, "parent": os.getpid(), "cwd": os.getcwd(), "env": dict(os.environ)})
        if _recv_exact(sock, 1) != _FORKING:  # the server has imported everything and forks now
            raise EOFError("not a clsweep fork server")
        sock.settimeout(_HELLO_TIMEOUT_S)  # a child that does not answer at once is stuck: train here instead
        hello = _recv(sock)
    except (OSError, EOFError, ValueError):
        sock.close()
        return False
    child = int(hello["pid"])
    try:
        sock.settimeout(None)
        while True:
            try:
                message = _recv(sock)
            except (OSError, EOFError):
                raise TrialProcessError(
                    f"the trial's process (pid {child}) died before finishing its tasks"
                ) from None
            kind = message[0]
            if kind == "result":
                on_result(message[1], message[2])
                _send(sock, "go")
            elif kind == "error":
                raise TrialProcessError(f"the trial failed in its process (pid {child}):\n{message[1]}")
            else:
                return True
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGKILL)  # no-op for a child that has exited (its server reaps it)


# ---- server and child -------------------------------------------------------------------------
def serve(address: str, parent: int, modules: list[str]) -> None:
    """The server: listen first (trial actors may connect while it imports), import, then fork one
    child per connection until the parent (the driver) exits or stops it."""
    _die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:
        return
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # nothing to clean up; skip finalising torch
    started = time.perf_counter()
    from clsweep.sweep.tasks import quiet_environment

    quiet_environment()  # before Lightning is imported, as in a trial's actor
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the trial imports it again and reports the error
            traceback.print_exc()
    try:
        _warm_up()
    except Exception:  # noqa: BLE001 - a cold child is only slower
        traceback.print_exc()
    print(
        f"clsweep fork server {os.getpid()}: preloaded {', '.join(modules)} and warmed up in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    while os.getppid() == parent:
        if not select.select([listener], [], [], 1.0)[0]:
            continue
        conn, _ = listener.accept()
        with contextlib.suppress(OSError):
            conn.sendall(_FORKING)  # before the fork: it reaches the actor ahead of anything the child sends
        pid = os.fork()
        if pid == 0:
            listener.close()
            _child(conn)  # never returns
        conn.close()
        print(f"forked trial process {pid}", flush=True)


WARM_UP = {
    "seed": 0,
    "paradigm": "til",
    "benchmark": {"name": "permuted", "source": "synthetic", "num_tasks": 1},
    "backbone": {"name": "mlp", "hidden_dims": [16]},
    "algorithm": {"name": "finetuning"},
    "train": {"epochs": 1, "batch_size": 64},
}
"""A task loop of a tenth of a second, run once by the server: what torch and Lightning set up on
first use (optimiser wrappers, Fabric's connectors, autograd) is then set up in every child."""


def _warm_up() -> None:
    import torch

    from clsweep.experiment import run_experiment
    from clsweep.spec import parse_experiment

    torch.set_num_threads(1)  # no OpenMP thread pool in a process that forks
    run_experiment(parse_experiment(WARM_UP))


def _watch(pid: int) -> None:
    """Exit this process as soon as process ``pid`` (the trial's actor) is gone."""
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(137)
        except PermissionError:
            pass
        time.sleep(0.2)


def _child(conn: socket.socket) -> None:
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _die_with_parent(signal.SIGKILL)
        tag, fds, _, _ = socket.recv_fds(conn, 3, 2)  # exactly b"fds": the request follows on the stream
        if len(tag) < 3:
            _recv_exact(conn, 3 - len(tag))
        for target, fd in zip((1, 2), fds, strict=False):
            os.dup2(fd, target)
            os.close(fd)
        request = _recv(conn)
        threading.Thread(target=_watch, args=(int(request["parent"]),), daemon=True).start()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _send(conn, {"pid": os.getpid()})
        code = _train(conn, request)
    except BaseException:  # noqa: BLE001 - whatever happens, this process must end here
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)  # the server's atexit handlers and finalisers are not this process's


def _train(conn: socket.socket, request: dict[str, Any]) -> int:
    import torch

    from clsweep.sweep.tasks import run_tasks

    torch.set_num_threads(max(1, int(request["env"].get("OMP_NUM_THREADS") or os.cpu_count() or 1)))

    def send(result: dict[str, Any], checkpoint_dir: Any) -> None:
        _send(conn, ("result", result, None if checkpoint_dir is None else str(checkpoint_dir)))
        if _recv(conn) != "go":
            raise EOFError("the trial's actor stopped answering")

    try:
        run_tasks(
            request["plan"],
            request["config"],
            send,
            Path(request["scratch"]),
            Path(request["resume_from"]) if request["resume_from"] else None,
            cpu_start=time.process_time(),
        )
    except Exception:  # noqa: BLE001 - sent to the actor, which raises it in Tune
        _send(conn, ("error", traceback.format_exc()))
        return 1
    _send(conn, ("done",))
    return 0


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), [m for m in sys.argv[3].split(",") if m])
