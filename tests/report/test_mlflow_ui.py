"""A real sweep's runs as the MLflow UI sees them: a real ``mlflow server`` on loopback serves the
sweep's sqlite store, and its REST API (the one the UI calls) must show the trials nested under
the sweep's parent run, with the same param and metric names in every trial, per-task metric
histories with step = tasks done, and the artifacts of each run."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.mlflow_server import mlflow_server


@pytest.fixture
def server(sweeps, tmp_path) -> Iterator[str]:
    """``mlflow server`` on the main sweep's store; stopped afterwards."""
    with mlflow_server(sweeps["main"].storage, tmp_path / "server.log") as url:
        yield url


def _get(url: str, path: str, **query: str) -> Any:
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(query)}", timeout=30) as response:
        return json.load(response)


def _post(url: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_runs_are_nested_and_comparable_in_the_mlflow_ui(server):
    exp = _get(server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="quickstart")["experiment"]
    runs = _post(
        server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 1000}
    )["runs"]
    [parent] = [r for r in runs if _tags(r).get("clsweep.role") == "sweep"]
    parent_id = parent["info"]["run_id"]
    assert "mlflow.parentRunId" not in _tags(parent) and parent["info"]["run_name"] == "quickstart"
    children = _post(
        server,
        "/api/2.0/mlflow/runs/search",
        {
            "experiment_ids": [exp["experiment_id"]],
            "filter": f"tags.mlflow.parentRunId = '{parent_id}'",
            "max_results": 1000,
        },
    )["runs"]
    assert len(children) == 6 and len(runs) == 7  # every trial is nested under the sweep, nothing else
    param_names, metric_names = set(), set()
    for child in children:
        tags = _tags(child)
        assert tags["mlflow.parentRunId"] == parent_id and tags["clsweep.role"] == "trial"
        assert child["info"]["run_name"] == f"quickstart-{tags['clsweep.trial_id']}"
        assert child["info"]["status"] == "FINISHED" and tags["clsweep.status"] == "finished"
        params = {p["key"]: p["value"] for p in child["data"]["params"]}
        for key, value in json.loads(tags["clsweep.config"]).items():  # searched values as dotted params
            assert params[key.removeprefix("experiment.")] == str(value)
        param_names.add(frozenset(params))
        metric_names.add(frozenset(m["key"] for m in child["data"]["metrics"]))
        run_id = child["info"]["run_id"]
        for key in ("avg_acc_val", "avg_acc_test", "bwt_test", "forgetting_test", "tasks_done"):
            history = _get(server, "/api/2.0/mlflow/metrics/get-history", run_id=run_id, metric_key=key)[
                "metrics"
            ]
            assert sorted(m["step"] for m in history) == [1, 2]  # step = tasks done, one point per task
            if key == "tasks_done":
                assert [m["value"] for m in sorted(history, key=lambda m: m["step"])] == [1.0, 2.0]
        listed = _get(server, "/api/2.0/mlflow/artifacts/list", run_id=run_id)
        assert {f["path"] for f in listed.get("files", [])} == {
            "config.yaml",
            "acc_matrix_val.csv",
            "acc_matrix_test.csv",
        }
    assert len(param_names) == 1 and len(metric_names) == 1  # the same names in every trial: comparable
    [metrics] = metric_names
    assert {"avg_acc_val", "capacity_mean"} <= metrics and any(k.startswith("capacity/") for k in metrics)
    listed = _get(server, "/api/2.0/mlflow/artifacts/list", run_id=parent_id)
    assert [f["path"] for f in listed["files"]] == ["plan.json", "sweep.yaml"]
