"""Checks for a sweep that joins a Ray cluster, run before any trial starts.

Two steps, both raising :class:`~clsweep.spec.errors.SpecError` (bad input, exit status 2):

- :func:`check_launch` looks only at the command line and the sweep file (no Ray, no network,
  writes nothing): a dashboard URL given as the cluster address, object-store storage, a local
  sqlite store with a Ray Client (``ray://``) address, sqlite on a network filesystem.
- :func:`check_shared_storage` runs once the driver has joined the cluster: every alive node must
  see the sweep's storage folder at the same path (trials write their per-task checkpoints there
  and resume from them on whichever node Tune picks).

:func:`effective_address` says which cluster the driver will join: ``--address`` (or the sweep
file's ``cluster.address``), else ``RAY_ADDRESS``, which ``ray job submit`` sets for its entrypoint.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clsweep.spec.errors import Problem, SpecError

__all__ = ["NodeView", "check_launch", "check_shared_storage", "effective_address", "filesystem_type"]

# Filesystem types (as /proc/mounts names them) that live on other machines: sqlite's locking is
# unreliable on them, and MLflow's sqlite store must not sit there.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "lustre",
        "gpfs",
        "beegfs",
        "cephfs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.juicefs",
        "fuse.rclone",
        "9p",
        "afs",
        "wekafs",
        "fuse.ceph",
    }
)

_JOB_SUBMIT_HINT = (
    "to run the sweep's driver on the cluster, submit it as a job: "
    "`ray job submit --address http://HEAD:8265 -- clsweep run SPACE ...`"
)


def effective_address(address: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The Ray cluster the driver joins: ``address`` when given, else ``RAY_ADDRESS`` (set by
    ``ray job submit`` for its entrypoint, or by the user), else None (an embedded local Ray)."""
    env = os.environ if environ is None else environ
    if address:
        return address.strip()
    value = env.get("RAY_ADDRESS", "").strip()
    return value or None


def _local_sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///")
    return Path(path) if path.startswith("/") else None


def filesystem_type(path: str | Path, mounts: str | None = None) -> str | None:
    """The type of the filesystem holding ``path`` (its nearest existing ancestor), from the mount
    table (``/proc/mounts`` text; None when it cannot be read, e.g. not Linux)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    target = Path(os.path.abspath(path))
    best, best_type = -1, None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if target == Path(point) or Path(point) in target.parents:
            depth = len(Path(point).parts)
            if depth >= best:  # later lines mount over earlier ones at the same point
                best, best_type = depth, fields[2]
    return best_type


def check_launch(
    address: str | None,
    *,
    tracking_uri: str,
    storage: str | Path,
    mounts: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Refuse cluster set-ups that cannot work, before anything is started or written.

    ``address``: as given (``--address`` or ``cluster.address``; ``RAY_ADDRESS`` is read when it is
    None). ``mounts``: the mount table text (tests), default ``/proc/mounts``."""
    env = os.environ if environ is None else environ
    problems: list[Problem] = []
    given = bool(address)
    joined = effective_address(address, env)
    origin = "--address" if given else "RAY_ADDRESS"
    if "://" in str(storage):
        problems.append(
            Problem(
                ("--storage",),
                f"{storage!r}: the sweep folder must be a filesystem path; on a "
                "cluster, a folder that every node mounts at the same path (NFS, "
                "Lustre, ...). Object-store URIs are not supported",
            )
        )
    if joined and joined.startswith(("http://", "https://")):
        problems.append(
            Problem(
                (origin,),
                f"{joined!r} is a Ray dashboard / job-submission address. "
                "clsweep joins a cluster by its GCS address (auto or HEAD:6379) or a Ray "
                f"Client address (ray://HEAD:10001); {_JOB_SUBMIT_HINT}"
                + ("" if given else "; or unset RAY_ADDRESS for a local run"),
            )
        )
    sqlite = _local_sqlite_path(tracking_uri)
    if joined and sqlite is not None:
        if joined.startswith("ray://"):
            problems.append(
                Problem(
                    ("--tracking-uri",),
                    (
                        f"{tracking_uri} is a file on this machine, but with a Ray Client address ({joined}) the sweep's "
                        "driver loop, which writes to MLflow, runs on the cluster's head node. Start an MLflow tracking "
                        "server (clusters/README.md) and pass --tracking-uri http://HOST:5000, or "
                        + _JOB_SUBMIT_HINT.removeprefix("to run the sweep's driver on the cluster, ")
                    ),
                )
            )
        else:
            fstype = filesystem_type(sqlite.parent, mounts)
            if fstype in NETWORK_FILESYSTEMS:
                problems.append(
                    Problem(
                        ("--tracking-uri",),
                        (
                            f"{tracking_uri} lies on a network filesystem ({fstype}); sqlite's file locking is not "
                            "reliable there. Use an MLflow tracking server (--tracking-uri http://HOST:5000, see "
                            "clusters/README.md) or a sqlite file on the driver node's local disk "
                            "(--tracking-uri sqlite:////local/path/mlflow.db)"
                        ),
                    )
                )
    if problems:
        raise SpecError(problems)


@dataclass(frozen=True)
class NodeView:
    """What one cluster node sees of the storage folder."""

    node_id: str
    host: str
    ip: str
    sees_storage: bool | None
    """None: the node did not answer in time (busy, or starting up)."""


def _look(path: str) -> tuple[bool, str]:
    return os.path.exists(path), socket.gethostname()


def check_shared_storage(storage: str | Path, *, timeout: float = 120.0) -> list[NodeView]:
    """Check, on every alive node of the cluster this process has joined (``ray.init`` done), that
    the storage folder is the same folder the driver sees: the driver writes a marker file there
    and a zero-CPU task pinned to each node looks for it. Raises SpecError naming the nodes that
    do not see it; returns what each node saw. Nodes that join later (autoscaling) are not checked.
    The marker is removed, and so is the storage folder when this call created it and it is empty."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root = Path(storage).expanduser().resolve()
    created = [p for p in (root, *root.parents) if not p.exists()]
    root.mkdir(parents=True, exist_ok=True)
    marker = root / f".clsweep-shared-check-{uuid.uuid4().hex}"
    marker.write_text("clsweep: is this folder shared by every node?\n", encoding="utf-8")
    look = ray.remote(num_cpus=0, max_retries=0)(_look)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = {
            look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                str(marker)
            ): n
            for n in nodes
        }
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        views = []
        for ref, node in refs.items():
            seen, host = ray.get(ref) if ref in ready else (None, node.get("NodeManagerHostname", "?"))
            views.append(NodeView(node["NodeID"], host, node.get("NodeManagerAddress", "?"), seen))
        for ref in pending:
            ray.cancel(ref, force=True)
    finally:
        marker.unlink(missing_ok=True)
        for path in created:  # deepest first
            try:
                path.rmdir()
            except OSError:
                break
    blind = [v for v in views if v.sees_storage is False]
    if blind:
        names = ", ".join(f"{v.host} ({v.ip})" for v in blind)
        raise SpecError(
            [
                Problem(
                    ("--storage",),
                    (
                        f"{root} is not the same folder on every node: {names} cannot see what this driver writes there. "
                        "Trials write their task checkpoints to the storage folder and may resume on any node, so on a "
                        "multi-node cluster --storage must be a shared filesystem mounted at the same path on every "
                        "node (NFS, Lustre, ...)"
                    ),
                )
            ]
        )
    return views
