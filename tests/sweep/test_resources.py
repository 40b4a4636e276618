"""A trial asking for more than the machine (or any cluster node) has is bad input: exit 2 within
seconds, the field named, nothing written, no Ray start-up noise."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from clsweep.sweep.resources import check_cluster, count_cpus, count_gpus


@pytest.mark.parametrize(
    ("override", "field"), [("resources.gpus=1", "resources.gpus"), ("resources.cpus=64", "resources.cpus")]
)
def test_more_than_the_machine_has_exits_2_before_anything(write_yaml, tiny, tmp_path, override, field):
    if field == "resources.gpus" and count_gpus():
        pytest.skip("this machine has a GPU")
    storage = tmp_path / "runs"
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clsweep",
            "run",
            str(write_yaml(tiny)),
            "--set",
            override,
            "--storage",
            str(storage),
            "--no-report",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - started < 10
    assert (
        field in done.stderr and f"this machine has {count_cpus():g}" in done.stderr or field.endswith("gpus")
    )
    assert "logging.cc" not in done.stderr and "***" not in done.stderr  # Ray never started
    assert not storage.exists() and not list(tmp_path.rglob("mlflow.db"))


def test_a_cluster_without_a_fitting_node_or_autoscaler_refuses(ray_address):
    """On the joined 2-CPU test cluster: 1 CPU fits, 64 never will (no autoscaler runs)."""
    from clsweep.spec.errors import SpecError

    assert check_cluster(1, 0) is True
    with pytest.raises(SpecError) as err:
        # the autoscaler detection reads the monitor's status in the GCS, which a shared test
        # cluster publishes late or not at all: say explicitly that none runs
        check_cluster(64, 0, autoscaling=False)
    assert err.value.problems[0].path == ("resources", "cpus")
    assert check_cluster(64, 0, autoscaling=True) is False  # an autoscaler may add a node: trials wait
