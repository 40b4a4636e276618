"""The driver's per-trial work stays flat as a sweep grows (issue 14): the running summary, the
progress callback's rows and status file, and what clsweep changes in Tune's per-trial state.
No Ray started: Tune's trials are stand-ins with the attributes the callbacks read."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from clsweep.common import pareto_front
from clsweep.spec.sweep import load_sweep
from clsweep.storage import read_json
from clsweep.sweep import progress
from clsweep.sweep.progress import ProgressCallback
from clsweep.sweep.summary import RunningSummary, summarize
from clsweep.sweep.tune_state import TrimCallback, bound_forced_snapshots

REPO = Path(__file__).resolve().parents[2]


def _reference(rows: list[dict[str, Any]], modes: list[str]) -> list[tuple[Any, ...]]:
    """The summary's best by its definition: per configuration the mean over its finished trials'
    seeds; one objective: the first best; two: every configuration no other dominates."""
    groups: dict[str, tuple[dict[str, Any], list[tuple[int, list[float]]]]] = {}
    for r in rows:
        v = r["objective"]
        if r["state"] == "finished" and v and all(x is not None and math.isfinite(x) for x in v):
            groups.setdefault(json.dumps(r["config"]), (r["config"], []))[1].append((r["seed"], v))
    cands = [
        (
            c,
            tuple(sum(v[i] for _, v in runs) / len(runs) for i in range(len(modes))),
            tuple(sorted(s for s, _ in runs)),
        )
        for c, runs in groups.values()
    ]
    if not cands or len(modes) > 1:
        return [cands[i] for i in pareto_front([c[1] for c in cands], modes)]
    return [(max if modes[0] == "max" else min)(cands, key=lambda c: c[1][0])]


def test_running_summary_matches_the_definition_row_by_row():
    rng = random.Random(0)
    for _ in range(400):
        modes = rng.choice([["max"], ["min"], ["max", "min"], ["min", "min", "max"]])
        rows = [
            {
                "state": rng.choice(["finished"] * 4 + ["pruned", "failed", "running"]),
                "config": {"c": rng.randint(0, 6)},  # repeated configurations: means over seeds
                "seed": rng.randint(0, 3),
                "objective": None
                if rng.random() < 0.1
                else [rng.choice([0.1, 0.2, 0.5, float("nan"), rng.random()]) for _ in modes],  # ties
            }
            for _ in range(rng.randint(0, 30))
        ]
        running = RunningSummary(modes, 40)
        for row in rows:
            running.add(row)
            if rng.random() < 0.3:
                running.summary()  # a look in between keeps nothing stale
        for summary in (running.summary(), summarize(rows, modes, 40)):
            assert [(b.config, b.values, b.seeds) for b in summary.best] == _reference(rows, modes)
            assert summary.counts["finished"] == sum(r["state"] == "finished" for r in rows)


def _trial(i: int, status: str = "PENDING") -> SimpleNamespace:
    return SimpleNamespace(
        trial_id=f"t{i:04d}",
        status=status,
        config={"seed": 0, "experiment.train.lr": 0.01 * i},
        last_result={},
    )


def _finish(trial: SimpleNamespace, value: float) -> None:
    trial.status = "TERMINATED"
    trial.last_result = {"tasks_done": 2, "tasks_total": 2, "avg_acc_val": value}


def test_a_step_makes_rows_for_the_open_trials_only_and_the_status_file_holds_every_trial(
    write_yaml, tiny, tmp_path, monkeypatch
):
    spec = load_sweep(
        write_yaml(
            tiny + "search:\n  experiment.train.lr: {uniform: [0.001, 0.1]}\nsearcher: {samples: 300}\n"
        )
    )
    made: list[str] = []
    row_of = progress.trial_row
    monkeypatch.setattr(
        progress, "trial_row", lambda t, *a, **k: made.append(t.trial_id) or row_of(t, *a, **k)
    )
    status = tmp_path / "clsweep_status.json"
    callback = ProgressCallback(spec.payload(), status, display=False, interval=0.0)
    callback.setup()
    trials: list[Any] = []
    for i in range(200):  # as Tune runs them: added pending, running, then ended
        trials.append(_trial(i))
        callback.on_step_end(0, trials)
        trials[-1].status = "RUNNING"
        _finish(trials[-1], 0.5 + i / 1000)
        callback.on_trial_complete(0, trials, trials[-1])
    trials += [_trial(200, "RUNNING"), _trial(201)]
    made.clear()
    callback.on_step_end(0, trials)
    assert sorted(made) == ["t0200", "t0201"]  # not the 200 ended ones

    callback._last_write = 0.0  # a write due now: what `clsweep status` reads during the sweep
    callback.on_step_end(0, trials)
    during = read_json(status)
    assert [r["trial_id"] for r in during["trials"]] == [t.trial_id for t in trials]
    assert [r["state"] for r in during["trials"]] == ["finished"] * 200 + ["running", "pending"]
    assert during["trials"][199]["objective"] == [0.5 + 199 / 1000] and during["ended"] is False
    assert callback._summary is not None and callback._summary.summary().best[0].values == (0.5 + 199 / 1000,)
    callback.on_experiment_end(trials)
    assert read_json(status)["trials"] == during["trials"] and read_json(status)["ended"] is True


def test_an_ended_trial_keeps_its_result_and_drops_tune_s_running_statistics():
    from ray.tune.experiment import Trial

    trial = Trial("noop", config={"seed": 0}, stub=True)
    trial.update_last_result({"tasks_done": 1, "avg_acc_val": 0.5, "training_iteration": 1})
    assert trial.run_metadata.metric_analysis and trial.run_metadata.metric_n_steps
    TrimCallback().on_trial_complete(0, [trial], trial)
    assert trial.run_metadata.metric_analysis == {} and trial.run_metadata.metric_n_steps == {}
    assert trial.last_result["avg_acc_val"] == 0.5
    trial.update_last_result(
        {"tasks_done": 2, "avg_acc_val": 0.6, "training_iteration": 2}
    )  # after a restore
    assert trial.run_metadata.metric_analysis["avg_acc_val"]["last"] == 0.6


def test_a_finished_trial_keeps_only_the_result_keys_read_after_its_end(tmp_path):
    from ray.train import Checkpoint
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult
    from ray.tune import CheckpointConfig
    from ray.tune.experiment import Trial

    from clsweep.sweep.tune_state import KEPT, kept_result_keys

    spec = load_sweep(REPO / "search_spaces" / "quickstart.yaml", [])
    keep = kept_result_keys(spec)
    assert keep == KEPT | {"avg_acc_val"}
    assert kept_result_keys(load_sweep(REPO / "search_spaces" / "hat_pbt_digits.yaml", [])) is None

    trial = Trial("noop", config={"seed": 0, "experiment.train.lr": 0.1}, stub=True)
    manager = _CheckpointManager(CheckpointConfig(num_to_keep=2))
    trial.run_metadata.checkpoint_manager = manager
    reported = []
    for task in (1, 2):
        (tmp_path / str(task)).mkdir()
        result = {
            "tasks_done": task,
            "tasks_total": 2,
            "avg_acc_val": 0.5 + task / 10,
            "training_iteration": task,
            "acc_matrix_val": "[[0.9]]" * 50,
            "loss_train": 0.3,
            "hostname": "h",
            "done": task == 2,
        }
        reported.append(result)
        manager.register_checkpoint(_TrainingResult(Checkpoint(str(tmp_path / str(task))), dict(result)))
        trial.update_last_result(result)
    held = trial.last_result  # what the other callbacks were handed
    before = len(trial.run_metadata.get_json_state())

    TrimCallback(keep).on_trial_complete(0, [trial], trial)

    def kept(result: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in result.items() if k in keep and k != "trial_id"}  # Tune adds trial_id

    assert kept(trial.last_result) == kept(reported[-1]) and set(kept(reported[-1])) == {
        "tasks_done",
        "tasks_total",
        "avg_acc_val",
        "training_iteration",
        "done",
    }
    assert progress.trial_row(trial, spec, "finished")["objective"] == [0.7]
    assert progress.stopped_state(trial.last_result) == "finished"
    assert [r.metrics for r in manager._checkpoint_results] == [kept(r) for r in reported]
    assert manager.latest_checkpoint_result.checkpoint.path == str(tmp_path / "2")  # checkpoints stay
    assert held["acc_matrix_val"] == reported[-1]["acc_matrix_val"]  # a new dict, not an edit
    assert len(trial.run_metadata.get_json_state()) < before / 2  # the snapshot's JSON was made again

    errored = Trial("noop", config={"seed": 1}, stub=True)
    errored.update_last_result(dict(reported[0]))
    TrimCallback(keep).on_trial_error(0, [errored], errored)  # a resume may restore a failed trial
    assert errored.last_result["acc_matrix_val"] == reported[0]["acc_matrix_val"]


def test_a_forced_tune_snapshot_waits_for_19_times_the_last_one_s_duration(tmp_path):
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    bound_forced_snapshots()
    bound_forced_snapshots()  # once per process, however often it is called
    storage = SimpleNamespace(
        experiment_driver_staging_path=str(tmp_path),
        experiment_fs_path=str(tmp_path),
        syncer=SimpleNamespace(wait=lambda: None, sync_up=lambda *a: True),
    )
    manager = _ExperimentCheckpointManager(
        storage=storage, checkpoint_period="auto", sync_every_n_trial_checkpoints=2
    )
    saved: list[float] = []

    def snapshot() -> None:
        saved.append(time.monotonic())

    manager.sync_up_experiment_state(snapshot)  # the first one, as Tune's first step makes
    manager._clsweep_took = 0.5  # as if that one had taken 0.5 s
    trial = object()
    manager.on_trial_checkpoint(trial)
    manager.on_trial_checkpoint(trial)  # num_to_keep checkpoints: Tune asks for a snapshot
    manager.sync_up_experiment_state(snapshot)
    assert len(saved) == 1 and manager._should_force_sync_up  # held back, still asked for
    manager._last_save_time -= 19 * 0.5
    manager.sync_up_experiment_state(snapshot)
    assert len(saved) == 2 and not manager._should_force_sync_up
    manager.sync_up_experiment_state(snapshot, force=True)  # Tune's own forced ones (the end) pass
    assert len(saved) == 3


def test_the_next_trial_is_fifo_s_choice_looked_for_among_the_live_trials():
    from ray.tune.schedulers import FIFOScheduler

    from clsweep.sweep.tune_state import LiveFirstFIFO

    rng = random.Random(1)
    for _ in range(200):
        trials = [_trial(i) for i in range(rng.randint(0, 12))]
        ours = LiveFirstFIFO()
        for t in trials:  # as Tune adds them, then they run and end
            ours.on_trial_add(None, t)
            t.status = rng.choice(["PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR"])
            if t.status == "TERMINATED":
                ours.on_trial_complete(None, t, {})
        live = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
        rng.shuffle(live)  # Tune's live trials are a set: in no order
        controller = SimpleNamespace(
            get_trials=lambda trials=trials: trials, get_live_trials=lambda live=live: live
        )
        assert ours.choose_trial_to_run(controller) is FIFOScheduler().choose_trial_to_run(controller)
