"""Shared fixtures of the sweeper tests: one local Ray for the whole session, a CLI runner, and
small sweep files (synthetic or digits data, 1 epoch, 2-3 tasks)."""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """A 2-CPU local Ray shared by every test of the session (starting one costs ~5 s)."""
    os.environ.setdefault(
        "RAY_AUTH_MODE", "disabled"
    )  # no ~/.ray/auth_token; the cluster dies with the session
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=200_000_000,
        logging_level="ERROR",
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run ``clsweep ARGS`` in this process; returns (exit status, stdout, stderr)."""
    from clsweep.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def write_yaml(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(text: str, name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


TINY = """
name: tiny
experiment:
  seed: 0
  benchmark: {name: permuted, source: digits, num_tasks: 2, seed: 0}
  backbone: {name: mlp, hidden_dims: [32]}
  algorithm: {name: finetuning}
  train: {epochs: 1, batch_size: 64, lr: 0.05}
"""


@pytest.fixture
def tiny() -> str:
    """A minimal valid sweep (no search): append sections to it."""
    return TINY


def mlflow_runs(tracking_uri: str, experiment: str) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else list(client.search_runs([exp.experiment_id], max_results=1000))


@pytest.fixture
def runs_of() -> Callable[[str, str], list[Any]]:
    return mlflow_runs


def process_alive(pid: int, within: float = 0.0) -> bool:
    """Whether process ``pid`` still runs after up to ``within`` seconds (a zombie counts as gone)."""
    deadline = time.monotonic() + within
    while True:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                gone = f.read().rsplit(")", 1)[1].split()[0] in {"Z", "X"}
        except FileNotFoundError:
            gone = True
        if gone:
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.05)


@pytest.fixture
def alive() -> Callable[..., bool]:
    return process_alive
