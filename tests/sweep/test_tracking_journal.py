"""The tracking journal (clsweep.tracking.journal) and its sender (clsweep.tracking.replay) on a
real sqlite MLflow store: durable appends, a torn last line, what a resumed driver knows, and a
replay that stores every record once however often it is sent."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from clsweep.spec.sweep import load_sweep
from clsweep.sweep.tracking_callback import MLflowCallback
from clsweep.tracking.journal import SENT_FILE, Journal, live, pending_in
from clsweep.tracking.replay import apply, send_pending
from clsweep.tracking.store import TRIAL_ID, SweepTracker
from tests.sweep.test_reliability import new_sweep


def test_appends_survive_a_killed_writer_and_a_reload_knows_what_was_sent(tmp_path):
    journal = Journal(tmp_path)
    journal.append("start", trial="a", name="sw-a", params={}, tags={}, dataset={})
    journal.append("metrics", trial="a", metrics={"x": 1.0}, step=1, at=5)
    assert journal.pending == 2 and journal.knows("a") and journal.steps("a") == {1}
    journal.mark_sent(journal.next_pending(), run="run-a")
    journal.close()
    with (tmp_path / "tracking_journal.jsonl").open("ab") as f:
        f.write(b'{"seq":3,"op":"metr')  # the driver died in the middle of a line

    again = Journal(tmp_path)  # what a resumed driver loads
    assert (again.sent_seq, again.runs, again.pending) == (1, {"a": "run-a"}, 1)
    assert again.next_pending()["op"] == "metrics" and again.steps("a") == {1}
    assert again.append("end", trial="a", state="finished") == 3  # the torn line was cut off
    assert [r["seq"] for r in again.records()] == [1, 2, 3] and pending_in(tmp_path) == 2
    again.append("adopt", trial="b", lost="a", name="sw-b", params={}, tags={}, dataset={})
    assert again.knows("b") and again.steps("b") == {1}  # the lost trial's steps are the adopter's
    assert not again.knows("c") and pending_in(tmp_path / "elsewhere") == 0


def _trial_events(sweep_dir: Path, payload: dict[str, Any]) -> None:
    """What Tune's events journal for one trial of two tasks (start, two results, complete)."""
    callback = MLflowCallback(sweep_dir, payload)
    trial = SimpleNamespace(
        trial_id="t1",
        config={"seed": 0},
        status="RUNNING",
        last_result={"acc_matrix_val": "[[0.5, null], [0.4, 0.7]]"},
    )
    for step in (1, 2):
        if step == 1:
            callback.on_trial_start(0, [trial], trial)
        result = {"tasks_done": step, "tasks_total": 2, "avg_acc_val": 0.5 + step / 10, "hostname": "h"}
        callback.on_trial_result(0, [trial], trial, result)
    trial.last_result.update(tasks_done=2, tasks_total=2)
    callback.on_trial_complete(0, [trial], trial)
    callback.on_experiment_end([trial])
    assert callback.failures == 0


def snapshot(tracker: SweepTracker) -> dict[str, Any]:
    """Everything MLflow holds of the sweep's runs (metric histories with their times)."""
    client = tracker.client
    out: dict[str, Any] = {}
    for run in [client.get_run(str(tracker.parent_id)), *tracker.children()]:
        keys = run.data.metrics
        out[run.data.tags.get(TRIAL_ID, "parent")] = {
            "status": run.info.status,
            "params": run.data.params,
            "tags": run.data.tags,
            "metrics": {
                k: sorted(
                    (m.step, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, k)
                )
                for k in keys
            },
            "inputs": len(run.inputs.dataset_inputs),
            "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id)),
        }
    return out


def test_a_record_sent_twice_is_stored_once(write_yaml, tiny, tmp_path):
    """A sender killed after MLflow stored records and before the sent log said so sends them again:
    MLflow ends with exactly what one send gives (runs, params, tags, metrics, inputs, artifacts)."""
    payload = load_sweep(write_yaml(tiny)).payload()
    tracker = SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", "exp", "tiny", artifact_root=tmp_path / "art")
    tracker.open(None, tags={})
    sweep_dir = tmp_path / "sweep"
    _trial_events(sweep_dir, payload)
    journal = live(sweep_dir)
    assert journal.pending > 0 and send_pending(journal, tracker) == 0 and journal.pending == 0
    once = snapshot(tracker)
    assert once["t1"]["status"] == "FINISHED" and [s for s, _, _ in once["t1"]["metrics"]["avg_acc_val"]] == [
        1,
        2,
    ]
    assert once["t1"]["inputs"] == 1 and "acc_matrix_val.csv" in once["t1"]["artifacts"]

    journal.close()
    (sweep_dir / SENT_FILE).unlink()  # as if no send had been recorded
    again = Journal(sweep_dir)
    assert again.pending == len(list(again.records())) and send_pending(again, tracker) == 0
    assert snapshot(tracker) == once
    assert again.rejected == 0


def test_a_start_cut_short_is_completed_not_duplicated(write_yaml, tiny, tmp_path):
    """The run was created, then the sender died before the params: the record, sent again, finds
    the run by its trial tag and logs the params into it."""
    payload = load_sweep(write_yaml(tiny)).payload()
    tracker = SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", "exp", "tiny", artifact_root=tmp_path / "art")
    tracker.open(None, tags={})
    _trial_events(tmp_path / "sweep", payload)
    start = next(iter(live(tmp_path / "sweep").records()))
    assert start["op"] == "start"
    made = tracker.client.create_run(
        tracker.experiment_id, tags={TRIAL_ID: "t1", "mlflow.parentRunId": str(tracker.parent_id)}
    )
    runs: dict[str, str] = {}
    assert apply(start, tracker, runs) == made.info.run_id and runs == {"t1": made.info.run_id}
    [child] = tracker.children()
    assert child.data.params["train.lr"] == str(start["params"]["train.lr"])
    assert len(child.inputs.dataset_inputs) == 1


def test_a_record_mlflow_refuses_is_counted_and_the_next_ones_go_on(write_yaml, tiny, tmp_path):
    tracker = SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", "exp", "tiny", artifact_root=tmp_path / "art")
    tracker.open(None, tags={})
    journal = Journal(tmp_path / "sweep")
    journal.append("metrics", trial="never-started", metrics={"x": 1.0}, step=1, at=1)
    journal.append("tags", tags={"clsweep.note": "after"})  # the parent run's
    assert send_pending(journal, tracker) == 0
    assert journal.rejected == 1 and journal.pending == 0
    [line, _] = [json.loads(x) for x in (tmp_path / "sweep" / SENT_FILE).read_text().splitlines()]
    assert line["op"] == "metrics" and "no MLflow run" in line["rejected"]
    assert tracker.client.get_run(str(tracker.parent_id)).data.tags["clsweep.note"] == "after"
    assert Journal(tmp_path / "sweep").rejected == 1  # kept across drivers


def test_a_resumed_driver_sends_what_the_killed_one_left_before_reopening_the_parent(
    write_yaml, tiny, tmp_path
):
    """The killed driver's last records (a trial, then "the sweep was stopped": runs KILLED) were
    never sent; the resumed driver sends them first, then sets the parent run running again."""
    from clsweep.sweep.tracking_session import open_tracking

    plan, record = new_sweep(write_yaml(tiny), tmp_path)
    first = open_tracking(plan, record)
    _trial_events(plan.paths.sweep_dir, plan.spec.payload())
    first.journal.append("kill_running")
    first.journal.close()  # the driver dies with every record unsent
    assert pending_in(plan.paths.sweep_dir) > 0

    second = open_tracking(plan, record)
    assert second.journal.pending == 0 and second.journal.rejected == 0
    [child] = second.tracker.children()
    assert child.info.status == "FINISHED" and child.data.tags[TRIAL_ID] == "t1"
    assert second.tracker.client.get_run(record["parent_run_id"]).info.status == "RUNNING"


def test_sync_of_an_unknown_sweep_or_of_one_whose_driver_runs_is_refused(cli, tmp_path, write_yaml, tiny):
    import os
    import socket
    import time

    from clsweep.storage import write_json
    from clsweep.sweep.lock import lock_path

    code, _, err = cli("sync", "nope", "--storage", str(tmp_path))
    assert code == 2 and "no sweep 'nope'" in err and "Traceback" not in err
    plan, record = new_sweep(write_yaml(tiny), tmp_path)
    record["parent_run_id"] = "p"
    write_json(plan.paths.record, record)
    Journal(plan.paths.sweep_dir).append("tags", tags={"a": "b"})
    now = time.time()
    driver = {
        "host": socket.gethostname(),
        "pid": os.getppid(),
        "started": now,
        "heartbeat": now,
        "token": "x",
    }
    lock_path(plan.paths).write_text(json.dumps(driver))  # a live driver (another process) holds the sweep
    code, _, err = cli("sync", "tiny", "--storage", str(tmp_path))
    assert code == 2 and "driver" in err and pending_in(plan.paths.sweep_dir) == 1
    lock_path(plan.paths).unlink()
    code, _, err = cli("sync", "tiny", "--storage", str(tmp_path))  # MLflow has no such experiment
    assert code == 2 and "no experiment 'tiny'" in err and "Traceback" not in err
