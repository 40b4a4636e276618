"""Driver set-up decisions that need no Ray: where the sweep logs to, which Ray it starts or joins,
when the shared-storage check runs, and what the parent MLflow run records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clsweep.spec.sweep import load_sweep
from clsweep.storage import SweepPaths
from clsweep.sweep import driver


def test_tracking_uri_precedence(write_yaml, tiny, tmp_path, monkeypatch):
    paths = SweepPaths.at(tmp_path, "tiny")
    plain = load_sweep(write_yaml(tiny))
    pinned = load_sweep(write_yaml(tiny + "tracking: {uri: 'sqlite:////spec/mlflow.db'}\n", "pinned.yaml"))
    record = {"tracking_uri": "sqlite:////record/mlflow.db"}
    env = {"MLFLOW_TRACKING_URI": "http://mlflow.example:5000"}

    assert driver.tracking_store(None, plain, None, paths, {}) == f"sqlite:///{tmp_path}/mlflow.db"
    assert driver.tracking_store(None, plain, None, paths, env) == "http://mlflow.example:5000"
    assert driver.tracking_store(None, plain, record, paths, env) == "sqlite:////record/mlflow.db"
    assert driver.tracking_store(None, pinned, record, paths, env) == "sqlite:////spec/mlflow.db"
    assert (
        driver.tracking_store("sqlite:////flag/mlflow.db", pinned, record, paths, env)
        == "sqlite:////flag/mlflow.db"
    )

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/elsewhere/mlflow.db")
    assert driver.prepare(plain, storage=tmp_path).tracking_uri == f"sqlite:///{tmp_path}/elsewhere/mlflow.db"


class FakeRay:
    """Stands in for the ``ray`` module: records ray.init's address, reports ``nodes`` alive nodes."""

    def __init__(self, nodes: int) -> None:
        self.nodes_alive = nodes
        self.address: Any = "not called"
        self.up = False

    def is_initialized(self) -> bool:
        return self.up

    def init(self, address: Any = None, **kwargs: Any) -> None:
        self.address, self.up = address, True

    def nodes(self) -> list[dict[str, Any]]:
        return [{"Alive": True}] * self.nodes_alive

    def shutdown(self) -> None:
        self.up = False


@pytest.mark.parametrize(
    ("address", "nodes", "ray_address", "checked"),
    [
        (None, 1, "local", False),  # embedded: never joins a cluster left running by `ray start`
        ("10.0.0.1:6379", 1, "10.0.0.1:6379", False),
        ("10.0.0.1:6379", 3, "10.0.0.1:6379", True),
        ("ray://head:10001", 1, "ray://head:10001", True),  # Ray Client: the driver is not on the cluster
    ],
)
def test_ray_start_and_storage_check(
    write_yaml, tiny, tmp_path, monkeypatch, address, nodes, ray_address, checked
):
    import sys

    from clsweep.sweep import cluster

    fake = FakeRay(nodes)
    monkeypatch.setitem(sys.modules, "ray", fake)
    seen: list[Any] = []
    monkeypatch.setattr(cluster, "check_shared_storage", lambda storage, **kw: seen.append(storage))
    plan = driver.Plan(
        load_sweep(write_yaml(tiny)),
        SweepPaths.at(tmp_path, "tiny"),
        None,
        "sqlite:////x.db",
        "tiny",
        address,
    )
    assert driver._start_ray(plan, 1) is True
    assert fake.address == ray_address
    assert seen == ([plan.paths.storage] if checked else [])


def test_parent_run_records_the_versions(write_yaml, tiny, tmp_path, runs_of):
    from importlib.metadata import version

    from clsweep.sweep.tracking_session import open_tracking

    plan = driver.prepare(load_sweep(write_yaml(tiny)), storage=tmp_path)
    record: dict[str, Any] = {}
    open_tracking(plan, record)
    [parent] = runs_of(plan.tracking_uri, plan.experiment)
    versions = json.loads(parent.data.tags["clsweep.versions"])
    assert set(versions) == {
        "python",
        "clsweep",
        "ray",
        "optuna",
        "mlflow",
        "torch",
        "lightning",
        "pandas",
        "matplotlib",
    }
    assert versions["mlflow"] == version("mlflow") and versions["python"].count(".") == 2


def test_the_driver_caps_glibc_heap_arenas_unless_the_user_chose(monkeypatch):
    """bench_scale.py: the driver's memory grew 0.13 MB per trial with glibc's default arenas and
    0.06 with two; a MALLOC_ARENA_MAX the user exported is theirs."""
    import sys

    from clsweep.sweep.ray_setup import cap_malloc_arenas

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert cap_malloc_arenas() is sys.platform.startswith("linux")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert cap_malloc_arenas() is False
