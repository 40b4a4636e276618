"""Injected faults on a real local Ray with a real sqlite store: a killed driver, a killed trial
worker. Each ends with nothing lost: no finished trial re-runs, one MLflow run per trial, the same
numbers as an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType
from ray.tune import Callback

from clsweep.recovery import ADOPT_FILE, RESULT_FILE, STATE_FILE
from clsweep.spec.sweep import load_sweep
from clsweep.storage import SweepPaths, read_json
from clsweep.sweep.driver import execute, prepare

SLOW = """
name: {name}
experiment:
  benchmark: {{name: permuted, source: digits, num_tasks: 3, seed: 0}}
  backbone: {{name: mlp, hidden_dims: [64]}}
  algorithm: {{name: finetuning}}
  train: {{epochs: 6, lr: 0.05}}
{extra}
"""


LR_GRID = """
search:
  experiment.train.lr: {{grid: [0.05, 0.04, 0.03, 0.02]}}
searcher: {{name: grid}}
resources: {{max_concurrent: {concurrent}}}
"""


def start_driver(path: Path, storage: Path, ray_address: str) -> subprocess.Popen[bytes]:
    """``clsweep run PATH`` as a driver process on the test cluster, with Tune's experiment
    snapshots lagging (TUNE_GLOBAL_CHECKPOINT_S): the race a killed driver meets."""
    lagging_snapshots = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "600"}
    command = [
        sys.executable,
        "-m",
        "clsweep",
        "run",
        str(path),
        "--storage",
        str(storage),
        "--address",
        ray_address,
        "--no-report",
    ]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=lagging_snapshots
    )


def kill_driver_when(
    path: Path, storage: Path, ray_address: str, ready: Callable[[list[str]], bool]
) -> dict[str, Any]:
    """Run ``clsweep run PATH`` as a driver process and SIGKILL it once the states of the trials in
    its status file satisfy ``ready``; returns that status. Tune snapshots its experiment state only
    when forced (num_to_keep checkpoints of a trial): the snapshot then always lags the status file,
    which is the race a killed driver meets."""
    paths = SweepPaths.at(storage, load_sweep(path).name)
    driver = start_driver(path, storage, ray_address)
    deadline = time.monotonic() + 150
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = read_json(paths.status) or {}
        if ready([t["state"] for t in status.get("trials", [])]):
            break
        time.sleep(0.1)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    return status


def child_runs(tracking_uri: str, experiment: str, runs_of: Any) -> list[Any]:
    return [r for r in runs_of(tracking_uri, experiment) if r.data.tags.get("clsweep.role") == "trial"]


def test_killed_driver_resumes_without_rerunning_or_duplicating(
    write_yaml, tmp_path, ray_address, cli, runs_of
):
    path = write_yaml(SLOW.format(name="crash", extra=LR_GRID.format(concurrent=2)))
    paths = SweepPaths.at(tmp_path, "crash")
    status = kill_driver_when(
        path, tmp_path, ray_address, lambda states: "finished" in states and "running" in states
    )
    finished = {t["trial_id"] for t in status["trials"] if t["state"] == "finished"}
    assert finished, status
    results_before = {tid: (paths.sweep_dir / tid / "result.json").read_text() for tid in finished}
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    runs_before = {r.data.tags["clsweep.trial_id"]: r.info.run_id for r in child_runs(uri, "crash", runs_of)}

    code, out, err = cli(
        "run", str(path), "--storage", str(tmp_path), "--address", ray_address, "--no-report"
    )
    assert code == 0, (out, err, read_json(paths.status))
    after = read_json(paths.status)
    assert [t["state"] for t in after["trials"]] == ["finished"] * 4
    for tid in finished:  # finished trials trained nothing again
        lines = [json.loads(x) for x in (paths.sweep_dir / tid / "result.json").read_text().splitlines()]
        assert lines[: len(results_before[tid].splitlines())] == list(
            map(json.loads, results_before[tid].splitlines())
        )
        trained = [r for r in lines if not r.get("replayed")]
        assert [r["tasks_done"] for r in trained] == [1, 2, 3]  # each task trained once, by the first driver
        # (Tune's lagging snapshot may restore a finished trial as unfinished, from an older checkpoint:
        # it then reports the results stored with its newer checkpoints again, marked replayed, each
        # the same as when it was trained; the JSON logger may flush line 3 after the status)
        by_task = {r["tasks_done"]: r for r in trained}
        keys = ("tasks_done", "avg_acc_test", "acc_matrix_test")
        for extra in (r for r in lines if r.get("replayed")):
            assert {k: extra[k] for k in keys} == {k: by_task[extra["tasks_done"]][k] for k in keys}
    runs = child_runs(uri, "crash", runs_of)
    trial_ids = [r.data.tags["clsweep.trial_id"] for r in runs]
    assert sorted(trial_ids) == sorted(t["trial_id"] for t in after["trials"])  # exactly one run per trial
    assert all(r.info.status == "FINISHED" and r.data.tags["clsweep.status"] == "finished" for r in runs)
    ids = {r.data.tags["clsweep.trial_id"]: r.info.run_id for r in runs}
    assert all(ids[tid] == run_id for tid, run_id in runs_before.items() if tid in ids)  # same run ids
    assert read_json(paths.record)["complete"] is True


def test_trials_tune_lost_with_a_killed_driver_are_adopted_not_trained_again(
    write_yaml, tmp_path, ray_address, cli, runs_of
):
    """One-task trials never force a Tune snapshot, so a driver killed later leaves finished trials
    that Tune's state does not hold. The grid proposes their configs again under new ids: those
    take the lost trials' checkpoints and MLflow runs instead of training again.

    Whether a trial is lost depends on when the kill lands against Tune's own bookkeeping; when a
    try loses none (rare: seen once in several CI runs), the scenario runs again in fresh storage,
    at most three times. Every try checks that nothing trained twice and every run is whole."""
    path = write_yaml(
        SLOW.format(name="lost", extra=LR_GRID.format(concurrent=1)).replace("num_tasks: 3", "num_tasks: 1")
    )
    adopting: list[Path] = []
    for attempt in range(3):
        storage = tmp_path / f"try{attempt}"
        adopting = _lose_trials_and_resume(path, storage, ray_address, cli, runs_of)
        if adopting:
            break
    assert adopting, "the race this test is about did not happen in 3 tries: no trial was lost"


def _lose_trials_and_resume(
    path: Path, storage: Path, ray_address: str, cli: Any, runs_of: Any
) -> list[Path]:
    """Kill the driver after two trials finished, run the sweep again, check it; the trial folders
    that adopted a lost trial."""
    paths = SweepPaths.at(storage, "lost")
    kill_driver_when(path, storage, ray_address, lambda states: states.count("finished") >= 2)

    code, _, err = cli("run", str(path), "--storage", str(storage), "--address", ray_address, "--no-report")
    assert code == 0, err
    after = read_json(paths.status)
    assert [t["state"] for t in after["trials"]] == ["finished"] * 4
    trained: dict[float, int] = {}
    for folder in (d for d in paths.sweep_dir.iterdir() if (d / "params.json").exists()):
        lr = json.loads((folder / "params.json").read_text())["experiment.train.lr"]
        # a trained task leaves a checkpoint (a replayed one does not), even one the killed driver
        # never logged to result.json
        trained[lr] = trained.get(lr, 0) + len(list(folder.glob(f"checkpoint_*/{RESULT_FILE}")))
    assert trained == {0.05: 1, 0.04: 1, 0.03: 1, 0.02: 1}  # every configuration trained exactly once
    adopting = [d for d in paths.sweep_dir.iterdir() if (d / ADOPT_FILE).exists()]
    uri = f"sqlite:///{storage}/mlflow.db"
    runs = child_runs(uri, "lost", runs_of)
    assert sorted(r.data.tags["clsweep.trial_id"] for r in runs) == sorted(
        t["trial_id"] for t in after["trials"]
    )
    assert sorted(float(r.data.params["train.lr"]) for r in runs) == [0.02, 0.03, 0.04, 0.05]
    assert all(r.info.status == "FINISHED" and r.data.tags["clsweep.status"] == "finished" for r in runs)
    adopted = [r for r in runs if "clsweep.adopted_from" in r.data.tags]
    assert len(adopted) == len(adopting)
    for run in adopted:  # the lost trial's run, with its metric logged once
        assert [m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, "tasks_done")] == [1]
    return adopting


def snapshot_latest(sweep_dir: Path) -> dict[str, str]:
    """Trial id -> the folder name of the latest checkpoint Tune's newest snapshot names."""
    import pickle

    found: dict[str, str] = {}
    for state in sorted(sweep_dir.glob("experiment_state-*.json")):
        try:
            trials = json.loads(state.read_text())["trial_data"]
        except (OSError, ValueError):
            return found  # being written
        for trial_json, metadata_json in trials:
            manager = json.loads(metadata_json)["checkpoint_manager"]
            latest = pickle.loads(bytes.fromhex(manager["value"])).latest_checkpoint_result
            if latest is not None:
                found[json.loads(trial_json)["trial_id"]] = Path(latest.checkpoint.path).name
    return found


def test_a_checkpoint_the_snapshot_names_but_tune_deleted_does_not_fail_the_resume(
    write_yaml, tmp_path, ray_address, cli
):
    """Forced snapshots are held back (clsweep.sweep.tune_state), so the snapshot a killed driver
    leaves can name a checkpoint that num_to_keep=2 deleted after two more tasks. Tune would fail
    that trial at its restore; it resumes from the newest checkpoint still stored instead."""
    path = write_yaml(
        SLOW.format(name="gone", extra=LR_GRID.format(concurrent=1))
        .replace("[0.05, 0.04, 0.03, 0.02]", "[0.05]")
        .replace("num_tasks: 3", "num_tasks: 4")
        .replace("epochs: 6", "epochs: 25")
    )
    paths = SweepPaths.at(tmp_path, "gone")
    driver = start_driver(path, tmp_path, ray_address)
    deadline, named = time.monotonic() + 150, {}
    while time.monotonic() < deadline and "checkpoint_000001" not in named.values():
        time.sleep(0.05)
        named = snapshot_latest(paths.sweep_dir)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    [(trial_id, latest)] = named.items()
    assert latest == "checkpoint_000001", named  # a running trial whose snapshot names task 2's
    folder = paths.sweep_dir / trial_id
    assert not (folder / "checkpoint_000003").exists(), "the trial ended before the driver was killed"
    shutil.rmtree(folder / latest)  # as num_to_keep does once two newer checkpoints exist

    code, out, err = cli(
        "run", str(path), "--storage", str(tmp_path), "--address", ray_address, "--no-report"
    )
    assert code == 0, (out, err)
    assert [t["state"] for t in read_json(paths.status)["trials"]] == ["finished"]
    lines = [json.loads(x) for x in (folder / "result.json").read_text().splitlines()]
    assert lines[-1]["tasks_done"] == 4 and len(json.loads(lines[-1]["acc_matrix_test"])) == 4


def test_a_finished_trial_restored_from_an_older_checkpoint_trains_nothing(write_yaml, tiny, tmp_path):
    """Tune restored the trial with its task-1 checkpoint, but the trial folder holds its final one:
    the trial reports the stored final result again instead of training task 2 again. A checkpoint
    whose state file was cut short (a killed copy) is not used."""
    from clsweep.sweep.trial import TrialIO, train_trial

    spec = load_sweep(write_yaml(tiny))
    trial_dir = tmp_path / "sweep" / "t1"
    first: list[dict[str, Any]] = []

    def store(result: dict[str, Any], checkpoint: Any) -> None:  # what tune.report does with it
        first.append(result)
        shutil.copytree(checkpoint, trial_dir / f"checkpoint_{len(first) - 1:06d}")

    sweep_dir = str(tmp_path / "sweep")
    train_trial({"seed": 0}, plan=spec.payload(), sweep_dir=sweep_dir, io=TrialIO(store, trial_id="t1"))
    assert [r["tasks_done"] for r in first] == [1, 2]

    again: list[tuple[dict[str, Any], Any]] = []
    handed_back = TrialIO(lambda r, c: again.append((r, c)), trial_dir / "checkpoint_000000", "t1")
    train_trial({"seed": 0}, plan=spec.payload(), sweep_dir=sweep_dir, io=handed_back)
    assert again == [({**first[-1], "replayed": True}, None)]  # one report, no checkpoint: nothing trained

    state = trial_dir / "checkpoint_000001" / STATE_FILE
    state.write_bytes(state.read_bytes()[:100])
    resumed: list[dict[str, Any]] = []
    train_trial(
        {"seed": 0},
        plan=spec.payload(),
        sweep_dir=sweep_dir,
        io=TrialIO(lambda r, c: resumed.append(r), trial_id="t1"),
    )
    # Tune knew no checkpoint: the stored task-1 result is sent again, then task 2 trains from it
    assert [(r["tasks_done"], r.get("replayed")) for r in resumed] == [(1, True), (2, None)]
    assert resumed[1]["acc_matrix_test"] == first[-1]["acc_matrix_test"]


class KillWorkerOnce(Callback):
    """SIGKILLs a process of the first trial once Tune has registered its task-1 checkpoint: its Ray
    worker (``pid``) or the process that trains it (``trial_pid``: a child of the fork server)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.killed: int | None = None
        self.trainer: int | None = None
        self.recovered = 0

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        if self.killed is None and trial.last_result["tasks_done"] == 1:
            self.trainer = int(trial.last_result["trial_pid"])
            self.killed = int(trial.last_result[self.key])
            os.kill(self.killed, signal.SIGKILL)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.recovered += 1


@pytest.mark.parametrize("key", ["pid", "trial_pid"])
def test_killed_worker_resumes_from_its_last_task(write_yaml, tmp_path, ray_address, key, alive):
    """Either process of a trial killed mid-trial (the OOM killer picks the one that trains): the
    trial restarts from its task-1 checkpoint and ends with the matrix of an uninterrupted run."""
    from clsweep.experiment import run_experiment

    spec = load_sweep(write_yaml(SLOW.format(name="worker", extra="retries: 1")))
    killer = KillWorkerOnce(key)
    outcome = execute(prepare(spec, storage=tmp_path), callbacks=[killer], display=False)
    assert killer.killed is not None and killer.recovered == 1
    assert outcome.complete and outcome.failed == 0
    [row] = outcome.rows
    trial_dir = tmp_path / "worker" / row["trial_id"]
    results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    # a forked trial: the training process is not the Ray worker, and a killed worker takes it along
    assert killer.trainer != int(results[0]["pid"])
    assert not alive(killer.trainer, within=5.0)
    assert [r["tasks_done"] for r in results if r["trial_pid"] != killer.trainer] == [
        2,
        3,
    ]  # resumed after task 1
    direct = run_experiment(spec.experiment_for({"seed": 0}))
    assert json.loads(results[-1]["acc_matrix_test"]) == direct.test_acc_matrix
    assert json.loads(results[-1]["acc_matrix_val"]) == direct.val_acc_matrix


def new_sweep(path: Path, storage: Path) -> tuple[Any, dict[str, Any]]:
    """The checked plan of the sweep file ``path`` and the record a new driver writes for it."""
    from clsweep.storage import new_record

    plan = prepare(load_sweep(path), storage=storage)
    record = new_record(
        plan.spec.data,
        plan.spec.fingerprint,
        source=None,
        tracking_uri=plan.tracking_uri,
        experiment=plan.experiment,
    )
    return plan, record


def test_driver_killed_before_tunes_first_snapshot(write_yaml, tmp_path, ray_address, cli, runs_of):
    """What a driver killed between creating its Tuner and Tune's first snapshot leaves behind: the
    record, the MLflow parent run with a run of a trial Tune never saved, and tuner.pkl alone."""
    from clsweep.storage import write_json
    from clsweep.sweep import driver
    from clsweep.tracking.store import SweepTracker

    path = write_yaml(SLOW.format(name="early", extra="").replace("epochs: 6", "epochs: 1"))
    plan, record = new_sweep(path, tmp_path)
    tracker = SweepTracker(
        plan.tracking_uri, plan.experiment, "early", artifact_root=plan.paths.artifact_root
    )
    record["parent_run_id"] = tracker.open(None, tags={})
    write_json(plan.paths.record, record)
    ghost = tracker.start_trial("ghost_00000", "early-ghost", params={}, tags={})
    driver._tuner(plan, (), False)  # writes tuner.pkl, no experiment state yet
    assert (plan.paths.sweep_dir / "tuner.pkl").exists()

    code, _, err = cli("run", str(path), "--storage", str(tmp_path), "--address", ray_address, "--no-report")
    assert code == 0, err
    runs = child_runs(plan.tracking_uri, "early", runs_of)
    assert len(runs) == 1 and runs[0].info.run_id != ghost and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["mlflow.parentRunId"] == record["parent_run_id"]  # the same parent run


class DeleteTheExperiment(Callback):
    """Deletes the sweep's MLflow experiment, and with it the parent run, when Tune sets the
    experiment up (after the parent run was opened, before any trial record): MLflow refuses each
    later record of the sweep."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self.tracking_uri, self.experiment = tracking_uri, experiment

    def setup(self, **info: Any) -> None:
        client = MlflowClient(self.tracking_uri)
        client.delete_experiment(client.get_experiment_by_name(self.experiment).experiment_id)


def test_lost_tracking_records_are_counted_and_fail_the_exit_status(
    write_yaml, tiny, tmp_path, ray_address, capsys
):
    """The tracking store refuses every record of the sweep: the trial still trains to the end, each
    refused record is counted on the outcome (and kept with MLflow's reason in the sent log),
    printed, and the exit status is 1."""
    from clsweep.sweep.commands import _finish
    from clsweep.tracking.journal import SENT_FILE, Journal

    plan = prepare(load_sweep(write_yaml(tiny)), storage=tmp_path)
    outcome = execute(
        plan, callbacks=[DeleteTheExperiment(plan.tracking_uri, plan.experiment)], display=False
    )
    assert outcome.complete and outcome.failed == 0 and [r["state"] for r in outcome.rows] == ["finished"]
    client = MlflowClient(plan.tracking_uri)
    deleted = client.get_experiment_by_name(plan.experiment)
    runs = client.search_runs(
        [deleted.experiment_id], "tags.`clsweep.role` = 'trial'", run_view_type=ViewType.ALL
    )
    assert runs == []  # its first record was refused, and so every record of its run
    journal = Journal(plan.paths.sweep_dir)
    records = list(journal.records())
    assert {r["op"] for r in records} >= {"start", "metrics", "end", "close"}
    refused = [r for r in records if r["op"] != "orphans"]  # no orphan to delete: nothing lost
    assert outcome.lost_records == len(refused) == journal.rejected and outcome.unsent == 0
    sent = (plan.paths.sweep_dir / SENT_FILE).read_text()
    assert sent.count('"rejected"') == len(refused)
    capsys.readouterr()
    assert _finish(outcome, True, time.monotonic()) == 1
    assert f"lost:      {len(refused)} tracking record(s)" in capsys.readouterr().err
