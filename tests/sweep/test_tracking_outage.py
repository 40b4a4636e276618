"""Tracking outages on a real ``mlflow server`` on loopback, stopped in the middle of a sweep:
restarted while the sweep runs, MLflow ends with what an uninterrupted sweep writes; never back
before the end, the sweep exits 1 saying how many records wait, and ``clsweep sync`` sends them
once the server is up again."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from ray.tune import Callback

from clsweep.spec.sweep import load_sweep
from clsweep.sweep.commands import _finish_sweep
from clsweep.sweep.driver import execute, prepare
from clsweep.tracking.journal import pending_in
from tests.mlflow_server import MlflowServer

SWEEP = """
name: {name}
experiment:
  seed: 0
  benchmark: {{name: permuted, source: digits, num_tasks: 2, seed: 0}}
  backbone: {{name: mlp, hidden_dims: [32]}}
  algorithm: {{name: finetuning}}
  train: {{epochs: 1, batch_size: 64, lr: 0.05}}
search:
  experiment.train.lr: {{choice: [0.02, 0.1]}}
searcher: {{name: grid}}
resources: {{max_concurrent: 1}}
tracking: {{uri: {uri}, outage_timeout: {timeout}}}
"""
_SERVERS: dict[str, MlflowServer] = {}  # Tune pickles its callbacks; a server process does not pickle
TIMING = {"experiment_seconds", "trial_cpu_seconds"}
VOLATILE_TAGS = {"clsweep.trial_id", "mlflow.runName", "clsweep.node", "mlflow.parentRunId", "mlflow.user"}


class Outage(Callback):
    """Stops the tracking server at the first trial result; ``back_after``: seconds after which it
    is started again (in the background: the sweep goes on meanwhile), None: never."""

    def __init__(self, key: str, back_after: float | None) -> None:
        self.key, self.back_after, self.done = key, back_after, False

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if self.done:
            return
        self.done = True
        server = _SERVERS[self.key]
        server.stop()
        if self.back_after is not None:
            threading.Timer(self.back_after, server.start, kwargs={"wait": False}).start()


@pytest.fixture(scope="module")
def running_server(tmp_path_factory: pytest.TempPathFactory):
    """One server for the module (starting one takes ~12 s); each test uses its own experiment."""
    root = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(root / "store", root / "mlflow-server.log")
    (root / "store").mkdir()
    server.start()
    _SERVERS[server.url] = server
    try:
        yield server
    finally:
        server.stop()
        _SERVERS.pop(server.url, None)


@pytest.fixture
def server(running_server: MlflowServer):
    """The module's server, answering when the test starts (an earlier test may have left it down)."""
    if running_server.process is not None and not running_server.answers():
        running_server.wait_up()  # started again in the background by an Outage timer
    if running_server.process is None:
        running_server.start()
    return running_server


def contents(uri: str, experiment: str) -> dict[str, Any]:
    """What MLflow holds of a sweep, keyed by each trial's config: run status, params, tags (less
    those naming trials, runs and hosts), every metric at every step (values except the timings),
    dataset inputs and artifacts."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    out: dict[str, Any] = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        metrics = {}
        for key in run.data.metrics:
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            metrics[key] = [s for s, _ in history] if key in TIMING else history
        label = run.data.tags.get("clsweep.config", "parent")
        assert label not in out, f"two runs for {label}"
        out[label] = {
            "status": run.info.status,
            "params": run.data.params,
            "tags": {k: v for k, v in run.data.tags.items() if k not in VOLATILE_TAGS},
            "metrics": metrics,
            "inputs": len(run.inputs.dataset_inputs),
            "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id)),
        }
    return out


def _run(write_yaml, storage: Path, name: str, uri: str, timeout: float, callbacks=()) -> Any:
    spec = load_sweep(write_yaml(SWEEP.format(name=name, uri=uri, timeout=timeout), f"{name}.yaml"))
    return execute(prepare(spec, storage=storage), callbacks=list(callbacks), display=False)


def test_a_server_restarted_mid_sweep_ends_with_what_an_uninterrupted_sweep_writes(
    write_yaml, tmp_path, server, ray_address, capsys
):
    calm_uri = f"sqlite:///{tmp_path / 'calm.db'}"  # the same sweep, written without an outage
    calm = _run(write_yaml, tmp_path / "calm", "calm", calm_uri, 60)
    assert calm.complete and calm.unsent == 0 and calm.lost_records == 0
    started = time.monotonic()
    outage = _run(
        write_yaml, tmp_path / "outage", "outage", server.url, 120, [Outage(server.url, back_after=0)]
    )
    err = capsys.readouterr().err
    assert "does not answer" in err and "answers again" in err
    assert outage.complete and outage.unsent == 0 and outage.lost_records == 0, err
    assert pending_in(tmp_path / "outage" / "outage") == 0
    assert time.monotonic() - started < 240
    calm_runs, outage_runs = contents(calm_uri, "calm"), contents(server.url, "outage")
    assert len(outage_runs) == 3  # the parent and one run per trial
    calm_runs["parent"]["tags"].pop("mlflow.note.content")  # the description names the sweep
    outage_runs["parent"]["tags"].pop("mlflow.note.content")
    for runs in (calm_runs, outage_runs):
        for key in ("clsweep.sweep", "clsweep.fingerprint"):
            for run in runs.values():
                run["tags"].pop(key, None)
        runs["parent"]["tags"].pop("clsweep.versions")
    assert outage_runs == calm_runs


def test_a_server_that_never_returns_leaves_records_for_clsweep_sync(
    write_yaml, tmp_path, server, ray_address, cli, capsys
):
    plan_started = time.monotonic()
    outcome = _run(write_yaml, tmp_path, "lonely", server.url, 2, [Outage(server.url, back_after=None)])
    assert outcome.complete and outcome.unsent > 0
    code, index = _finish_sweep(outcome, False, plan_started)
    err = capsys.readouterr().err
    assert code == 1 and index is None
    assert f"unsent:    {outcome.unsent} tracking record(s)" in err and "clsweep sync lonely" in err
    sweep_dir = tmp_path / "lonely"
    assert pending_in(sweep_dir) == outcome.unsent

    code, out, err = cli("sync", "lonely", "--storage", str(tmp_path))  # still down
    assert code == 1 and f"unsent:    {outcome.unsent} record(s) still wait" in err

    server.start()
    code, out, err = cli("sync", "lonely", "--storage", str(tmp_path))
    assert code == 0, err
    assert f"sent {outcome.unsent} record(s)" in out and pending_in(sweep_dir) == 0
    runs = contents(server.url, "lonely")
    assert len(runs) == 3 and {r["status"] for r in runs.values()} == {"FINISHED"}
    trials = [r for label, r in runs.items() if label != "parent"]
    assert all([s for s, _ in r["metrics"]["avg_acc_val"]] == [1, 2] for r in trials)
    assert all("acc_matrix_test.csv" in r["artifacts"] and r["inputs"] == 1 for r in trials)
    assert runs["parent"]["tags"]["clsweep.finished"] == "2"

    code, out, _ = cli("sync", "lonely", "--storage", str(tmp_path))
    assert code == 0 and "nothing to send" in out
    code, _, err = cli("report", "lonely", "--storage", str(tmp_path), "--out", str(tmp_path / "report"))
    assert code == 0, err
