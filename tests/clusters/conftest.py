"""Fixtures of the cluster tests: a two-node Ray cluster with token authentication and an MLflow
tracking server on this machine (started once per module that uses them, stopped at its end),
and a tiny sweep file.

Every process is started with its own process group and stopped by it; the cluster uses a
private temp dir and free ports, so it never meets the in-process Ray of tests/sweep, and the
tests talk to it from subprocesses only (an in-process ``ray.init`` could join the wrong one)."""

from __future__ import annotations

import importlib.util
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def load_local_cluster() -> ModuleType:
    """tests/clusters/local_cluster.py (tests are not a package; loaded by path)."""
    spec = importlib.util.spec_from_file_location("clsweep_tests_local_cluster", HERE / "local_cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


local_cluster = load_local_cluster()

# The second node is started as `srun` would start it: Lightning must not take the trials on it
# for SLURM tasks (clsweep.sweep.trial drops SLURM_* before Lightning is imported).
SLURM_LIKE = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "clsweep",
    "SLURM_NTASKS": "4",
    "SLURM_PROCID": "1",
    "SLURM_NODEID": "1",
    "SLURM_LOCALID": "0",
    "SLURM_NNODES": "2",
}

TINY_SWEEP = """
name: {name}
experiment:
  seed: 0
  benchmark: {{name: permuted, source: digits, num_tasks: 2, seed: 0}}
  backbone: {{name: mlp, hidden_dims: [32]}}
  algorithm: {{name: finetuning}}
  train: {{epochs: 1, batch_size: 64, lr: 0.05}}
search:
  experiment.train.lr: {{log_uniform: [0.01, 0.1]}}
searcher: {{name: random, samples: {samples}, seed: 0}}
resources: {{cpus: 1, max_concurrent: 2}}
"""


def tiny_sweep(folder: Path, name: str, samples: int = 2) -> Path:
    """A sweep of ``samples`` one-CPU trials (2 digit tasks, 1 epoch), 2 at a time: on two
    one-CPU nodes, two trials running together must run on different nodes."""
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(TINY_SWEEP.format(name=name, samples=samples)).lstrip())
    return path


@pytest.fixture(scope="session")
def cluster_tools() -> ModuleType:
    """tests/clusters/local_cluster.py, for tests that start a cluster of their own."""
    return local_cluster


@pytest.fixture
def make_sweep(tmp_path: Path) -> Callable[..., Path]:
    return lambda name, samples=2: tiny_sweep(tmp_path, name, samples)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, object]]:
    """(cluster, mlflow server): started together (the server's ~15 s start-up overlaps the
    nodes'), stopped at the end of the module; fails the teardown if a process is left."""
    server = local_cluster.MlflowServer(tmp_path_factory.mktemp("mlflow-server")).spawn()
    cluster = local_cluster.LocalCluster(
        nodes=2, cpus=1, job_server=local_cluster.job_server_available(), token=True, node_env={1: SLURM_LIKE}
    )
    try:
        cluster.start()
        server.wait_ready()
        yield cluster, server
    finally:
        server.stop()
        left = cluster.stop()
    assert left == [], f"processes of the test cluster still running: {left}"


@pytest.fixture(scope="module")
def cluster(services: tuple[object, object]) -> object:
    return services[0]


@pytest.fixture(scope="module")
def mlflow_server(services: tuple[object, object]) -> object:
    return services[1]
