"""What a trial asks for (``resources.cpus`` / ``resources.gpus``) against what Ray can give it,
checked before anything starts (bad input, exit status 2).

- :func:`check_machine` (``driver.prepare``, embedded Ray): this machine's CPUs, counted as Ray
  counts them (the CPU count, lowered by a cgroup CPU quota), and its GPUs, from
  ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``. Imports neither Ray nor torch; writes
  nothing.
- :func:`check_cluster` (after joining a cluster, before anything is written): a trial's bundle
  must fit on one alive node. When none fits and no autoscaler runs, nothing ever will: exit 2.
  With an autoscaler, the trials wait for a node, and the sweep is stopped (resumable) when no
  trial could start for ``resources.pending_timeout`` seconds (clsweep.sweep.signals).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clsweep.spec.errors import Problem, SpecError

if TYPE_CHECKING:
    from clsweep.spec.sweep_file import ResourcesConfig

__all__ = ["Machine", "check_cluster", "check_joined", "check_machine", "count_cpus", "count_gpus"]


@dataclass(frozen=True)
class Machine:
    cpus: float
    gpus: int


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), if any."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return float(quota) / float(period) if quota.isdigit() and period.isdigit() else None
    except (OSError, ValueError):
        pass
    try:
        quota_us = float((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = float((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def count_cpus() -> float:
    """The CPUs an embedded Ray registers for this machine (as ray._private.utils.get_num_cpus)."""
    count = float(os.cpu_count() or 1)
    if os.environ.get("RAY_USE_MULTIPROCESSING_CPU_COUNT"):
        return count
    quota = _cgroup_quota()
    return min(count, max(1.0, math.ceil(quota))) if quota else count


def count_gpus(*, timeout: float = 5.0) -> int:
    """This machine's NVIDIA GPUs as a local Ray sees them: ``CUDA_VISIBLE_DEVICES`` when set
    (empty or -1: none), else the lines of ``nvidia-smi -L``; 0 without a driver."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        return 0 if not ids or ids[0].startswith("-") else len(ids)
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return 0
    try:
        listed = subprocess.run([tool, "-L"], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU "))


def check_machine(cpus: float, gpus: float, *, num_cpus: int | None = None) -> Machine:
    """Raise SpecError when one trial asks for more than this machine has (``num_cpus``: the CPUs
    the embedded Ray is given instead of all). Returns the machine's figures."""
    machine = Machine(float(num_cpus) if num_cpus else count_cpus(), count_gpus() if gpus else 0)
    problems = []
    if cpus > machine.cpus:
        problems.append(
            Problem(
                ("resources", "cpus"),
                (
                    f"a trial asks for {cpus:g} CPUs, but this machine has {machine.cpus:g} (the local Ray "
                    "gets them all); lower resources.cpus, or join a cluster with --address"
                ),
            )
        )
    if gpus > machine.gpus:
        where = "CUDA_VISIBLE_DEVICES, else nvidia-smi -L"
        problems.append(
            Problem(
                ("resources", "gpus"),
                (
                    f"a trial asks for {gpus:g} GPU(s), but this machine has {machine.gpus} (counted from {where}); "
                    "set resources.gpus: 0 to train on the CPU, or join a cluster with GPU nodes with --address"
                ),
            )
        )
    if problems:
        raise SpecError(problems)
    return machine


def _autoscaling() -> bool:
    """Whether an autoscaler that can add nodes looks after the cluster. Every Ray head runs a
    monitor that publishes a status in the GCS; without a node provider (``ray start``, a local
    Ray) it names each node's type after the node itself, a launcher or KubeRay by its node types."""
    import json

    from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

    try:
        raw = _internal_kv_get(DEBUG_AUTOSCALING_STATUS) if _internal_kv_initialized() else None
        mapping = json.loads(raw or b"{}").get("autoscaler_report", {}).get("node_type_mapping") or {}
    except Exception:  # noqa: BLE001 - a cluster that cannot say: assume no autoscaler
        return False
    return any(node_type != node for node, node_type in mapping.items())


def check_cluster(
    cpus: float, gpus: float, *, nodes: list[dict[str, Any]] | None = None, autoscaling: bool | None = None
) -> bool:
    """On the cluster this process has joined: True when some alive node can place a trial, False
    when none can yet but an autoscaler may add one. Raises SpecError when nothing ever can."""
    import ray

    alive = [n for n in (ray.nodes() if nodes is None else nodes) if n.get("Alive")]
    fits = [
        n
        for n in alive
        if n.get("Resources", {}).get("CPU", 0.0) >= cpus and n.get("Resources", {}).get("GPU", 0.0) >= gpus
    ]
    if fits:
        return True
    if _autoscaling() if autoscaling is None else autoscaling:
        return False
    largest = ", ".join(
        f"{n.get('NodeManagerHostname', '?')}: {n.get('Resources', {}).get('CPU', 0):g} CPUs, "
        f"{n.get('Resources', {}).get('GPU', 0):g} GPUs"
        for n in alive[:8]
    )
    field = (
        "gpus" if gpus and not any(n.get("Resources", {}).get("GPU", 0.0) >= gpus for n in alive) else "cpus"
    )
    raise SpecError(
        [
            Problem(
                ("resources", field),
                (
                    f"a trial asks for {cpus:g} CPUs and {gpus:g} GPU(s) on one node, but no node of the cluster has "
                    f"that ({len(alive)} alive: {largest}) and no autoscaler runs that could add one"
                ),
            )
        ]
    )


def check_joined(resources: ResourcesConfig) -> None:
    """:func:`check_cluster` for the sweep's trials; when they must wait for an autoscaler's node,
    say so and arm the stop after ``resources.pending_timeout`` (clsweep.sweep.signals)."""
    from clsweep.sweep import signals

    if not check_cluster(resources.cpus, resources.gpus):
        print(
            f"note: no node of the cluster can place a trial ({resources.cpus:g} CPUs, {resources.gpus:g} GPUs) "
            f"yet; trials wait for the autoscaler to add one, for at most {resources.pending_timeout:g} s "
            "(resources.pending_timeout)",
            file=sys.stderr,
        )
        signals.STATE.pending_timeout = resources.pending_timeout
