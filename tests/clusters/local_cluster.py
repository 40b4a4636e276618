"""A multi-node Ray cluster and an MLflow tracking server on this machine, as separate processes.

Used by the cluster tests and by ``benchmarks/bench_cluster.py``. Each Ray node is one
``ray start --block`` process in its own process group (token authentication optional), on its own loopback address (head
127.0.0.1, worker n 127.0.0.(n+1)) so that trials on different nodes report different node IPs,
with its own ports; the cluster keeps its files in a private temp dir. Everything is stopped by
process group and by PID (never ``ray stop``, which stops every Ray process on the machine,
other people's included).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

BIN = Path(sys.executable).parent
READY = "Ray runtime started"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def job_server_available() -> bool:
    """The Ray job server (dashboard) needs ray[default]; ray[tune] alone lacks its dependencies."""
    return all(
        importlib.util.find_spec(m) is not None
        for m in ("aiohttp_cors", "grpc", "opencensus", "prometheus_client")
    )


def client_env(extra: Mapping[str, str] | None = None, *, token: str | None = None) -> dict[str, str]:
    """Environment for the nodes and for processes that talk to the cluster (drivers, ``ray job
    submit``): token authentication with ``token`` (never ~/.ray/auth_token), else none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env.update(
        {
            "RAY_AUTH_MODE": "token" if token else "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PATH": f"{BIN}:{env.get('PATH', '')}",
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        }
    )
    if token:
        env["RAY_AUTH_TOKEN"] = token
    env.update(extra or {})
    return env


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    pgid = proc.pid  # start_new_session=True: the process leads its own group
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not _group_alive(pgid):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        end = time.monotonic() + wait
        while time.monotonic() < end and _group_alive(pgid):
            proc.poll()  # reap the group leader, or it stays a zombie and the group looks alive
            time.sleep(0.2)
    proc.wait(timeout=5)


def processes_mentioning(text: str, pgids: frozenset[int] | set[int] = frozenset()) -> list[int]:
    """PIDs whose command line contains ``text`` or whose process group is one of ``pgids``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            pgid = os.getpgid(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
        if text in cmd or pgid in pgids:
            found.append(int(entry.name))
    return [p for p in found if p != os.getpid()]


class LocalCluster:
    """``nodes`` Ray nodes with ``cpus`` CPUs each; ``job_server`` starts the dashboard (for
    ``ray job submit``) on the head; ``node_env[i]`` adds environment variables to node i."""

    def __init__(
        self,
        *,
        nodes: int = 2,
        cpus: int = 1,
        job_server: bool = False,
        token: bool = False,
        node_env: Mapping[int, Mapping[str, str]] | None = None,
        autoscaled: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="clr-", dir="/tmp"))  # short: Unix socket paths <= 107 bytes
        self.nodes, self.cpus = nodes, cpus
        self.autoscaled = dict(autoscaled or {})
        """Node types (name -> resources) a real Ray autoscaler on the head may add, one of each at
        most: Ray's ``fake_multinode`` node provider, which starts each added node as processes
        on this machine (in the cluster's temp dir, so :meth:`stop` stops them too)."""
        self.job_server = job_server
        self.node_env = dict(node_env or {})
        self.token = secrets.token_hex(32) if token else None
        self.port = free_port()
        self.dashboard_port = free_port() if job_server else None
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str | None:
        return f"http://127.0.0.1:{self.dashboard_port}" if self.dashboard_port else None

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment of a process that talks to this cluster (same auth mode and token)."""
        return client_env(extra, token=self.token)

    def node_ip(self, index: int) -> str:
        return f"127.0.0.{index + 1}"

    def _node_args(self, index: int) -> list[str]:
        args = [
            "--block",
            "--disable-usage-stats",
            "--num-cpus",
            str(self.cpus),
            "--num-gpus",
            "0",
            "--object-store-memory",
            "80000000",
            "--node-ip-address",
            self.node_ip(index),
            "--dashboard-agent-listen-port",
            str(free_port()),
            "--dashboard-agent-grpc-port",
            str(free_port()),
            "--runtime-env-agent-port",
            str(free_port()),
            "--metrics-export-port",
            str(free_port()),
        ]
        if index == 0 and self.autoscaled:
            args += ["--autoscaling-config", str(self._autoscaling_config())]
        if index == 0:
            args = [
                "--head",
                "--port",
                str(self.port),
                "--temp-dir",
                str(self.root / "ray"),
                "--ray-client-server-port",
                str(free_port()),
                *args,
            ]
            if self.dashboard_port:
                args += [
                    "--include-dashboard",
                    "true",
                    "--dashboard-host",
                    "127.0.0.1",
                    "--dashboard-port",
                    str(self.dashboard_port),
                ]
            else:
                args += ["--include-dashboard", "false"]
        else:
            args = ["--address", self.address, *args]
        return args

    def _autoscaling_config(self) -> Path:
        """The cluster config of Ray's fake_multinode provider (the keys its launcher requires)."""
        types: dict[str, object] = {
            "ray.head.default": {"resources": {"CPU": self.cpus}, "node_config": {}, "max_workers": 0}
        }
        for name, resources in self.autoscaled.items():
            types[name] = {
                "resources": dict(resources),
                "node_config": {},
                "min_workers": 0,
                "max_workers": 1,
            }
        config = {
            "cluster_name": "fake_multinode",
            "max_workers": len(self.autoscaled),
            "provider": {
                "type": "fake_multinode",
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
                "gcs_address": self.address,  # else the added nodes look for a head on port 6379
            },
            "available_node_types": types,
            "head_node_type": "ray.head.default",
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": 5,
            "auth": {"ssh_user": "clsweep"},
            "docker": {},
            **{
                key: []
                for key in (
                    "initialization_commands",
                    "setup_commands",
                    "head_setup_commands",
                    "worker_setup_commands",
                    "head_start_ray_commands",
                    "worker_start_ray_commands",
                    "cluster_synced_files",
                    "rsync_exclude",
                    "rsync_filter",
                )
            },
            "file_mounts": {},
            "file_mounts_sync_continuously": False,
        }
        path = self.root / "autoscaling.json"
        path.write_text(json.dumps(config))
        return path

    def log(self, index: int) -> Path:
        return self.root / f"node{index}.log"

    def _start_node(self, index: int, timeout: float) -> None:
        env = self.env(self.node_env.get(index))
        if index == 0 and self.autoscaled:  # what the fake provider needs; a quick autoscaler loop
            env.update({"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
        with open(self.log(index), "wb") as out:
            proc = subprocess.Popen(
                [str(BIN / "ray"), "start", *self._node_args(index)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append(proc)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if READY in self.log(index).read_text(errors="replace"):
                return
            if proc.poll() is not None:
                break
            time.sleep(0.3)
        tail = self.log(index).read_text(errors="replace")[-3000:]
        raise RuntimeError(f"Ray node {index} did not start (log {self.log(index)}):\n{tail}")

    def start(self, timeout: float = 180.0) -> LocalCluster:
        try:
            for index in range(self.nodes):
                self._start_node(index, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> list[int]:
        """Stop every node (workers first); returns PIDs still alive afterwards (should be none)."""
        pgids = {p.pid for p in self.procs}
        for proc in reversed(self.procs):
            _stop_group(proc, grace=15.0)
        left = processes_mentioning(str(self.root), pgids)
        for pid in left:  # a process that left its node's group but still uses the cluster's files
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5 if left else 0)
        left = processes_mentioning(str(self.root), pgids)
        if not left:
            shutil.rmtree(self.root, ignore_errors=True)
        return left

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MlflowServer:
    """``mlflow server`` on loopback with a sqlite backend and a proxied artifact store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def spawn(self) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        # The job runner (huey consumers for GenAI jobs) is not needed: 7 fewer processes.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.root / "server.log", "wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(BIN / "mlflow"),
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                    "--backend-store-uri",
                    f"sqlite:///{self.root / 'mlflow.db'}",
                    "--artifacts-destination",
                    str(self.artifacts),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 120.0) -> MlflowServer:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc is not None
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        log = (self.root / "server.log").read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"mlflow server did not start:\n{log}")

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc, grace=10.0)
