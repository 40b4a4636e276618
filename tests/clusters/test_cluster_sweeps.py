"""Sweeps on a real two-node Ray cluster (two `ray start` processes on this machine) with an
MLflow tracking server: joined with `clsweep run --address`, and submitted with `ray job submit`."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.ray]

_spec = importlib.util.spec_from_file_location(
    "clsweep_tests_local_cluster", Path(__file__).with_name("local_cluster.py")
)
assert _spec is not None and _spec.loader is not None
local_cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local_cluster)

CLSWEEP = str(Path(sys.executable).with_name("clsweep"))
RAY = str(Path(sys.executable).with_name("ray"))
WORKER_IP = "127.0.0.2"
AGENT_BUSY = "No available agent to submit job"  # ray/dashboard/modules/job/job_head.py


def run(
    cluster: Any, cmd: list[str], timeout: float = 300, *, token: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` as a client of ``cluster`` (with its auth token unless ``token`` is False)."""
    env = cluster.env() if token else local_cluster.client_env()
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    for _ in range(3):
        # the job server answers AGENT_BUSY while the head's job agent is not registered yet (it
        # waits 10 s for it; a loaded machine can take longer): Ray's advice is to submit again
        if done.returncode == 0 or AGENT_BUSY not in done.stderr:
            break
        time.sleep(5)
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    return done


def trial_runs(uri: str, experiment: str) -> tuple[Any, list[Any], Any]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} at {uri}"
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("clsweep.role") == "sweep"]
    assert len(parents) == 1
    return client, [r for r in runs if r.data.tags.get("clsweep.role") == "trial"], parents[0]


def assert_ran_on_both_nodes(trials: list[Any]) -> None:
    nodes = {r.data.tags["clsweep.node"] for r in trials}
    assert len(nodes) == 2, nodes
    assert any(f"({WORKER_IP})" in n for n in nodes), nodes  # the SLURM-like worker node ran a trial


def test_run_with_address_uses_both_nodes_and_logs_to_the_tracking_server(
    cluster: Any, mlflow_server: Any, make_sweep: Any, tmp_path: Path
) -> None:
    space = make_sweep("addr")
    storage = tmp_path / "runs"
    done = run(
        cluster,
        [
            CLSWEEP,
            "run",
            str(space),
            "--address",
            cluster.address,
            "--tracking-uri",
            mlflow_server.uri,
            "--storage",
            str(storage),
            "--no-report",
        ],
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (storage / "mlflow.db").exists()  # nothing went to a local store

    client, trials, parent = trial_runs(mlflow_server.uri, "addr")
    assert parent.info.status == "FINISHED"
    assert len(trials) == 2
    assert {r.info.status for r in trials} == {"FINISHED"}
    assert_ran_on_both_nodes(trials)
    for r in trials:
        history = client.get_metric_history(r.info.run_id, "avg_acc_val")
        assert sorted({m.step for m in history}) == [1, 2]
        assert 0.0 <= history[-1].value <= 1.0
        # artifacts went through the server (proxied) into its artifact store, and read back
        assert r.info.artifact_uri.startswith("mlflow-artifacts:/")
        names = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"config.yaml", "acc_matrix_val.csv", "acc_matrix_test.csv"} <= names
        config = yaml.safe_load(
            Path(client.download_artifacts(r.info.run_id, "config.yaml", str(tmp_path))).read_text()
        )
        assert config["algorithm"]["name"] == "finetuning"
        assert float(r.data.params["train.lr"]) == pytest.approx(config["train"]["lr"])
        rows = list(
            csv.reader(
                io.StringIO(
                    Path(
                        client.download_artifacts(r.info.run_id, "acc_matrix_val.csv", str(tmp_path))
                    ).read_text()
                )
            )
        )
        assert rows[0] == ["after_task", "task_1", "task_2"] and len(rows) == 3
        stored = list(mlflow_server.artifacts.rglob(f"{r.info.run_id}/artifacts/config.yaml"))
        assert len(stored) == 1


@pytest.mark.skipif(
    not local_cluster.job_server_available(),
    reason="the Ray job server needs ray[default] (aiohttp_cors, grpcio, opencensus, prometheus_client)",
)
def test_ray_job_submit_runs_the_sweep_driver_on_the_head(
    cluster: Any, make_sweep: Any, tmp_path: Path
) -> None:
    space = make_sweep("job")
    storage = tmp_path / "runs"
    job = f"clsweep-test-{uuid.uuid4().hex[:8]}"
    done = run(
        cluster,
        [
            RAY,
            "job",
            "submit",
            "--address",
            cluster.dashboard_url,
            "--submission-id",
            job,
            "--",
            "clsweep",
            "run",
            str(space),
            "--storage",
            str(storage),
            "--no-report",
        ],
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # no --address: the entrypoint joined the cluster through the RAY_ADDRESS the job server sets
    record = json.loads((storage / "job" / "clsweep_sweep.json").read_text())
    assert record["complete"] is True
    uri = f"sqlite:///{storage / 'mlflow.db'}"  # the default store, written by the driver on the head only
    assert record["tracking_uri"] == uri
    _, trials, parent = trial_runs(uri, "job")
    assert parent.info.status == "FINISHED"
    assert sorted(r.info.status for r in trials) == ["FINISHED", "FINISHED"]
    assert_ran_on_both_nodes(trials)


@pytest.mark.skipif(
    not local_cluster.job_server_available(), reason="needs the Ray job server (ray[default])"
)
def test_the_cluster_refuses_clients_without_its_token(cluster: Any) -> None:
    # so the sweeps above ran with token authentication on every node, as clusters/README.md says
    assert cluster.token
    done = run(
        cluster,
        [RAY, "job", "submit", "--address", cluster.dashboard_url, "--", "true"],
        timeout=120,
        token=False,
    )
    assert done.returncode != 0


PROBE = textwrap.dedent("""
    import json, sys
    import ray
    from clsweep.spec.errors import SpecError
    from clsweep.sweep.cluster import check_shared_storage
    ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
    try:
        views = check_shared_storage(sys.argv[2], timeout=120)
        print(json.dumps({"views": [[v.ip, v.sees_storage] for v in views]}))
    except SpecError as err:
        print(json.dumps({"error": str(err), "nodes": [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]}))
""")


def probe(cluster: Any, storage: Path, private_mount: Path | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-c", PROBE, cluster.address, str(storage)]
    if private_mount is not None:  # the driver alone sees a tmpfs over private_mount
        cmd = [
            "unshare",
            "--mount",
            "sh",
            "-c",
            'mount -t tmpfs clsweep-test "$0" && exec "$@"',
            str(private_mount),
            *cmd,
        ]
    done = run(cluster, cmd, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_storage_check_sees_a_shared_folder_from_every_node(cluster: Any, tmp_path: Path) -> None:
    storage = tmp_path / "shared" / "runs"
    seen = probe(cluster, storage)
    ips = [ip for ip, _ in seen["views"]]
    assert len(set(ips)) == 2 and WORKER_IP in ips
    assert all(ok is True for _, ok in seen["views"])
    assert not (tmp_path / "shared").exists()  # the check created the folder and removed it again
    assert list(tmp_path.iterdir()) == []


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(
    not _can_unshare(),
    reason="needs `unshare --mount` (root or user namespaces) to give the "
    "driver a folder the nodes cannot see",
)
def test_storage_check_refuses_a_folder_the_nodes_cannot_see(cluster: Any, tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    seen = probe(cluster, private / "runs", private_mount=private)
    assert "error" in seen, seen
    assert "not the same folder on every node" in seen["error"]
    assert len(seen["nodes"]) == 2 and all(f"({ip})" in seen["error"] for ip in seen["nodes"])  # both named
    assert list(private.iterdir()) == []  # nothing leaked out of the driver's tmpfs


@pytest.mark.skipif(
    not _can_unshare(),
    reason="needs `unshare --mount` (root or user namespaces) to give the "
    "driver a folder the nodes cannot see",
)
def test_clsweep_run_refuses_storage_the_nodes_cannot_see_before_any_trial(
    cluster: Any, mlflow_server: Any, make_sweep: Any, tmp_path: Path
) -> None:
    space = make_sweep("unshared")
    private = tmp_path / "private"
    private.mkdir()
    done = run(
        cluster,
        [
            "unshare",
            "--mount",
            "sh",
            "-c",
            'mount -t tmpfs clsweep-test "$0" && exec "$@"',
            str(private),
            CLSWEEP,
            "run",
            str(space),
            "--address",
            cluster.address,
            "--storage",
            str(private / "runs"),
            "--tracking-uri",
            mlflow_server.uri,
            "--no-report",
        ],
        timeout=200,
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "--storage" in done.stderr and "not the same folder on every node" in done.stderr
    from mlflow import MlflowClient

    assert MlflowClient(mlflow_server.uri).get_experiment_by_name("unshared") is None  # nothing written
