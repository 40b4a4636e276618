"""A sweep on a cluster with a real Ray autoscaler: the head's monitor with Ray's
``fake_multinode`` node provider, which starts the nodes it adds as processes on this machine.
The head has 1 CPU; the autoscaler may add one node of 2 CPUs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

CLSWEEP = str(Path(sys.executable).with_name("clsweep"))


def _clsweep(cluster: Any, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLSWEEP, *args],
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_trials_wait_for_the_node_an_autoscaler_adds_and_give_up_after_pending_timeout(
    tmp_path: Path, make_sweep: Any, cluster_tools: Any
) -> None:
    space = str(make_sweep("scaled", samples=1))
    cluster = cluster_tools.LocalCluster(nodes=1, cpus=1, autoscaled={"ray.worker.cpu2": {"CPU": 2}}).start()
    try:
        # no node of the cluster has 4 CPUs and the autoscaler adds none: the trial waits, then the
        # sweep stops after resources.pending_timeout (resumable, exit 1), not a hang, not exit 2
        common = ["--address", cluster.address, "--no-report"]
        done = _clsweep(
            cluster,
            "run",
            space,
            "--storage",
            str(tmp_path / "big"),
            *common,
            "--set",
            "resources.cpus=4",
            "--set",
            "resources.pending_timeout=5",
        )
        assert done.returncode == 1, done.stderr[-3000:]
        assert "trials wait for the autoscaler to add one, for at most 5 s" in done.stderr
        assert "no trial could start for 5 s (resources.pending_timeout)" in done.stderr
        assert "Traceback" not in done.stderr

        # 2 CPUs: no node has them yet, the autoscaler adds one and the trial runs on it
        done = _clsweep(
            cluster, "run", space, "--storage", str(tmp_path / "fits"), *common, "--set", "resources.cpus=2"
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "trials wait for the autoscaler" in done.stderr
        status = json.loads((tmp_path / "fits" / "scaled" / "clsweep_status.json").read_text())
        assert [t["state"] for t in status["trials"]] == ["finished"]
        results = [
            json.loads(x)
            for x in next((tmp_path / "fits" / "scaled").glob("*/result.json")).read_text().splitlines()
        ]
        assert {r["node_ip"] for r in results} != {cluster.node_ip(0)}  # not on the head: on the added node
    finally:
        left = cluster.stop()  # the added node's processes too (they use the cluster's temp dir)
    assert left == [], f"processes of the autoscaled cluster still running: {left}"
