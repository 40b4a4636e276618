"""The driver-side MLflow writer, the sweep folder record, the status summary, and the trial
function outside Ray (real task loop, injected reporter)."""

from __future__ import annotations

import pytest

from clsweep.recovery import ADOPT_FILE, RESULT_FILE, STATE_FILE
from clsweep.spec.errors import SpecError
from clsweep.spec.sweep import load_sweep
from clsweep.storage import SweepPaths, check_owner, write_json
from clsweep.sweep.summary import summarize
from clsweep.tracking.store import SweepTracker, check_tracking_uri


def test_tracker_reuses_parent_and_trial_runs_and_drops_orphans(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "exp", "sw", artifact_root=tmp_path / "art")
    parent = tracker.open(None, tags={"clsweep.protocol": "validation"})
    a = tracker.start_trial("t1", "sw-t1", params={"train.lr": 0.1}, tags={"clsweep.seed": "0"})
    tracker.start_trial("t2", "sw-t2", params={}, tags={})
    tracker.log_metrics(a, {"avg_acc_val": 0.5}, step=1)
    tracker.log_metrics(a, {"avg_acc_val": 0.4}, step=2)
    tracker.log_text(a, "1,0\n", "acc_matrix_val.csv")
    from mlflow.tracking._tracking_service import utils

    assert a in utils._artifact_repos_cache  # MLflow caches a repository per run (1024 runs)
    tracker.end_trial(a, "pruned")
    assert a not in utils._artifact_repos_cache  # an ended run's: dropped (driver memory, issue 14)

    again = SweepTracker(uri, "exp", "sw", artifact_root=tmp_path / "art")  # a restarted driver
    assert again.open(parent, tags={}) == parent
    assert again.find_trial("t1") == a and again.find_trial("t3") is None
    assert len(again.delete_orphans(["t1"])) == 1  # t2 was never saved by Tune: removed
    run = again.client.get_run(a)
    assert run.info.status == "KILLED" and run.data.tags["clsweep.status"] == "pruned"
    assert run.data.params == {"train.lr": "0.1"} and run.data.tags["mlflow.parentRunId"] == parent
    assert [(m.step, m.value) for m in again.client.get_metric_history(a, "avg_acc_val")] == [
        (1, 0.5),
        (2, 0.4),
    ]
    assert [c.info.run_id for c in again.children()] == [a]


@pytest.mark.parametrize(
    "uri, message",
    [
        ("http://127.0.0.1:9", "cannot reach"),
        ("file:///tmp/mlruns", "refuses file stores"),
        ("mlruns", "refuses file stores"),
        ("sqlite:///relative.db", "absolute path"),
    ],
)
def test_unusable_tracking_uris(uri, message):
    with pytest.raises(SpecError, match=message):
        check_tracking_uri(uri)


def test_sqlite_uri_in_a_new_folder_is_fine(tmp_path):
    check_tracking_uri(f"sqlite:///{tmp_path}/not/yet/mlflow.db")
    assert not (tmp_path / "not").exists()


def test_folder_ownership(tmp_path):
    paths = SweepPaths.at(tmp_path, "sw")
    assert check_owner(paths, "abc") is None  # missing
    paths.sweep_dir.mkdir()
    assert check_owner(paths, "abc") is None  # empty
    write_json(paths.record, {"fingerprint": "abc"})
    assert check_owner(paths, "abc") == {"fingerprint": "abc"}
    with pytest.raises(SpecError, match="another sweep"):
        check_owner(paths, "def")


def test_summary_means_over_seeds_and_ignores_pruned():
    rows = [
        {"state": "finished", "config": {"lr": 0.1}, "seed": 0, "objective": [0.8]},
        {"state": "finished", "config": {"lr": 0.1}, "seed": 1, "objective": [0.6]},
        {"state": "finished", "config": {"lr": 0.2}, "seed": 0, "objective": [0.75]},
        {"state": "pruned", "config": {"lr": 0.3}, "seed": 0, "objective": [0.99]},
        {"state": "failed", "config": {"lr": 9.0}, "seed": 0, "objective": None},
        {"state": "running", "config": {"lr": 0.4}, "seed": 0, "objective": [0.5]},
    ]
    s = summarize(rows, ["max"], total=8)
    assert (s.counts["finished"], s.counts["pruned"], s.counts["failed"], s.counts["running"], s.done) == (
        3,
        1,
        1,
        1,
        5,
    )
    assert s.best[0].config == {"lr": 0.2} and s.best[0].values == (0.75,)  # 0.75 beats mean(0.8, 0.6)
    front = summarize(
        [
            {"state": "finished", "config": {"c": i}, "seed": 0, "objective": v}
            for i, v in enumerate([[0.9, 0.3], [0.8, 0.1], [0.7, 0.2]])
        ],
        ["max", "min"],
        total=3,
    )
    assert sorted(b.config["c"] for b in front.best) == [0, 1]  # (0.7, 0.2) is dominated by (0.8, 0.1)


def test_trial_function_reports_every_task_with_a_checkpoint(write_yaml, tiny):
    from clsweep.sweep.trial import TrialIO, train_trial

    spec = load_sweep(
        write_yaml(tiny.replace("num_tasks: 2", "num_tasks: 3") + "protocol: {name: first_k, k: 2}\n")
    )
    seen = []
    train_trial(
        {"seed": 3},
        plan=spec.payload(),
        io=TrialIO(lambda result, ckpt: seen.append((result, sorted(p.name for p in ckpt.iterdir())))),
    )
    assert [r["tasks_done"] for r, _ in seen] == [1, 2]  # first_k: 2 of 3 tasks
    assert all(r["tasks_total"] == 2 and 0.0 <= r["avg_acc_val"] <= 1.0 for r, _ in seen)
    assert all(
        files == sorted([RESULT_FILE, STATE_FILE]) for _, files in seen
    )  # nothing else (no progress.json)
    assert seen[-1][0]["acc_matrix_test"].startswith("[[")


def test_a_failing_journal_write_does_not_stop_the_sweep(write_yaml, tiny, tmp_path):
    from types import SimpleNamespace

    from clsweep.sweep.tracking_callback import MLflowCallback

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")  # the journal cannot be created inside a file
    callback = MLflowCallback(blocked / "sweep", load_sweep(write_yaml(tiny)).payload())
    trial = SimpleNamespace(trial_id="t1", config={"seed": 0}, last_result={}, status="RUNNING")
    callback.on_trial_start(0, [trial], trial)  # raises inside: reported, not propagated
    callback.on_trial_result(0, [trial], trial, {"tasks_done": 1, "avg_acc_val": 0.5})
    assert callback.failures == 1  # the result had no run to go to: skipped, not a second failure


def test_a_replayed_result_is_logged_only_when_its_step_is_missing(write_yaml, tiny, tmp_path):
    from types import SimpleNamespace

    from clsweep.sweep.tracking_callback import MLflowCallback
    from clsweep.tracking.journal import live
    from clsweep.tracking.replay import send_pending

    tracker = SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", "exp", "sw", artifact_root=tmp_path / "art")
    tracker.open(None, tags={})
    callback = MLflowCallback(tmp_path / "sweep", load_sweep(write_yaml(tiny)).payload())
    trial = SimpleNamespace(trial_id="t1", config={"seed": 0}, last_result={}, status="RUNNING")
    callback.on_trial_start(0, [trial], trial)
    callback.on_trial_result(0, [trial], trial, {"tasks_done": 1, "avg_acc_val": 0.5})
    callback.on_trial_result(0, [trial], trial, {"tasks_done": 1, "avg_acc_val": 0.5, "replayed": True})
    callback.on_trial_result(0, [trial], trial, {"tasks_done": 2, "avg_acc_val": 0.6, "replayed": True})
    journal = live(tmp_path / "sweep")
    assert send_pending(journal, tracker) == 0
    history = tracker.client.get_metric_history(journal.runs["t1"], "avg_acc_val")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.5), (2, 0.6)] and callback.failures == 0


def test_a_new_trial_adopts_a_lost_one_with_its_config(write_yaml, tiny, tmp_path):
    """What a restored sweep does with a trial Tune lost (created after its last snapshot, then the
    driver died): the trial Tune creates for the same config takes over the lost trial's MLflow run
    and its checkpoints, which it replays instead of training; a trial of another config adopts nothing."""
    import json
    import shutil
    from types import SimpleNamespace

    from clsweep.sweep.adoption import AdoptionCallback
    from clsweep.sweep.tracking_callback import MLflowCallback
    from clsweep.sweep.trial import TrialIO, train_trial
    from clsweep.tracking.journal import live
    from clsweep.tracking.replay import send_pending

    spec = load_sweep(write_yaml(tiny))
    sweep_dir = tmp_path / "sweep"
    (sweep_dir / "lost").mkdir(parents=True)
    (sweep_dir / "lost" / "params.json").write_text(json.dumps({"seed": 0}))  # Tune's copy of the config
    trained: list[dict] = []

    def store(result, checkpoint):  # what tune.report does with it
        trained.append(result)
        shutil.copytree(checkpoint, sweep_dir / "lost" / f"checkpoint_{len(trained) - 1:06d}")

    train_trial(
        {"seed": 0}, plan=spec.payload(), sweep_dir=str(sweep_dir), io=TrialIO(store, trial_id="lost")
    )
    tracker = SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", "exp", "tiny", artifact_root=tmp_path / "art")
    tracker.open(None, tags={})
    lost_run = tracker.start_trial("lost", "tiny-lost", params={}, tags={})  # by the killed driver

    adoption = AdoptionCallback(sweep_dir)
    tracking = MLflowCallback(sweep_dir, spec.payload(), adoption)
    journal = live(sweep_dir)
    new, other = (
        SimpleNamespace(trial_id=t, config={"seed": s}, last_result={}, status="RUNNING")
        for t, s in (("new", 0), ("other", 1))
    )
    for trial in (new, other):
        for callback in (adoption, tracking):  # Tune's order
            callback.on_trial_start(0, [new, other], trial)
    assert adoption.adopted == {"new": "lost"} and (sweep_dir / "new" / ADOPT_FILE).exists()
    assert send_pending(journal, tracker) == 0
    assert journal.runs["new"] == lost_run and journal.runs["other"] != lost_run
    tags = tracker.client.get_run(lost_run).data.tags
    assert (tags["clsweep.trial_id"], tags["clsweep.adopted_from"]) == ("new", "lost")

    replayed: list[tuple[dict, object]] = []
    train_trial(
        {"seed": 0},
        plan=spec.payload(),
        sweep_dir=str(sweep_dir),
        io=TrialIO(lambda r, c: replayed.append((r, c)), trial_id="new"),
    )
    assert replayed == [
        ({**r, "replayed": True}, None) for r in trained
    ]  # the lost trial's results, nothing trained
    for result, _ in replayed:
        tracking.on_trial_result(0, [new, other], new, result)
    assert send_pending(journal, tracker) == 0
    assert [m.step for m in tracker.client.get_metric_history(lost_run, "tasks_done")] == [1, 2]
    assert (
        tracker.delete_orphans(["new", "other"]) == [] and tracking.failures == 0
    )  # the run is the adopter's
