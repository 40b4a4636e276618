"""The sweep in the real MLflow UI: ``mlflow server`` on loopback over the API sweep's store, opened
in headless Chromium. The experiment must open on the training runs table (not MLflow 3's GenAI
overview), with the parent run and its trials and each trial's benchmark as its dataset; the
experiment and run tags behind that are checked through the REST API the UI calls. The screenshot
is kept under the test's tmp_path and copied to $CLSWEEP_ARTIFACTS (default /tmp/clsweep-artifacts)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mlflow_server import mlflow_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs a headless browser: apt-get install chromium")


@pytest.fixture
def server(api_sweep, tmp_path) -> Iterator[str]:
    _, storage = api_sweep
    with mlflow_server(storage, tmp_path / "server.log") as url:
        yield url


def _api(url: str, path: str, body: dict[str, Any] | None = None, **query: str) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{url}{path}?{urllib.parse.urlencode(query)}",
        data=data,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1600,1000",
        "--virtual-time-budget=30000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_mlflow_ui_opens_on_the_training_runs(server, tmp_path):
    exp = _api(server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="apisweep")["experiment"]
    tags = {t["key"]: t["value"] for t in exp.get("tags", [])}
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(tags["mlflow.sharedViewState.clsweep"])
    assert view["selectedColumns"][:3] == [
        "attributes.`Dataset`",
        "metrics.`avg_acc_val`",
        "metrics.`avg_acc_test`",
    ]
    runs = _api(
        server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100}
    )["runs"]
    [parent] = [r for r in runs if r["info"]["run_name"] == "apisweep"]
    note = {t["key"]: t["value"] for t in parent["data"]["tags"]}["mlflow.note.content"]
    assert "3 trials, grid search over 3 configurations" in note and "experiment.train.lr" in note
    children = [r for r in runs if r is not parent]
    assert len(children) == 3
    for child in children:
        [dataset] = child["inputs"]["dataset_inputs"]
        assert dataset["dataset"]["name"] == "permuted/digits"
        assert json.loads(dataset["dataset"]["profile"]) == {"num_tasks": 3, "seed": 1, "paradigm": "til"}
        child_tags = {t["key"]: t["value"] for t in child["data"]["tags"]}
        assert child_tags.get("clsweep.device", "cpu") == "cpu"  # a trial that never reported has no tag

    from clsweep.tracking.mlflow_ui import runs_url

    page = runs_url(server, exp["experiment_id"])  # the link clsweep prints
    dom = _chromium(tmp_path / "profile", "--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    shot = tmp_path / "mlflow_runs.png"
    done = _chromium(tmp_path / "profile", f"--screenshot={shot}", page)
    keep = Path(os.environ.get("CLSWEEP_ARTIFACTS", "/tmp/clsweep-artifacts"))
    keep.mkdir(parents=True, exist_ok=True)
    (keep / "mlflow_runs.html").write_text(html)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    shutil.copy(shot, keep / shot.name)
    print(f"MLflow UI screenshot: {keep / shot.name}")
    text = " ".join(re.sub(r"<[^>]+>", " ", re.sub(r"<style.*?</style>", " ", html, flags=re.S)).split())
    assert "Runs - Experiment" in text and "viewing a shared view" in text  # the runs table, our view
    assert re.search(r"Pin run\s+#\w+\s+apisweep\s", text)  # the parent run's row
    assert "4 matching runs" in text  # the parent and its 3 trials (nested: collapsed under the parent)
    assert "Dataset" in text and "Metrics" in text  # the shared view's columns
    assert "Tokens per Trace" not in text and "Detect Issues" not in text  # not the GenAI overview
