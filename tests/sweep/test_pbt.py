"""Population-based training over tasks (protocol current_task, scheduler pbt): what the sweep file
may mutate, the checkpoint an exploited trial resumes from, and a shrunk sweep of
search_spaces/hat_pbt_digits.yaml end to end (4 trials, 3 tasks, 1 epoch)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from clsweep.recovery import (
    CHECKPOINT_PATTERN,
    complete_checkpoints,
    foreign_checkpoint,
    resume_point,
    save_result,
)
from clsweep.spec.sweep import load_sweep

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "hat_pbt_digits.yaml"
SHRINK = [
    "searcher.samples=4",
    "experiment.benchmark.num_tasks=3",
    "experiment.train.epochs=1",
    "experiment.backbone.hidden_dims=[32]",
    "resources.max_concurrent=2",
]


def test_validate_names_the_scheduler(cli):
    code, out, err = cli("validate", str(SPACE))
    assert code == 0, err
    assert "scheduler pbt" in out
    assert "perturb experiment.train.lr, experiment.algorithm.sparsity_strength" in out


@pytest.mark.parametrize(
    "path, value",
    [
        ("experiment.backbone.hidden_dims", "{choice: [[32], [64]]}"),
        ("experiment.heads.name", "{choice: [til]}"),
        ("experiment.algorithm.name", "{choice: [hat, adahat]}"),
        ("experiment.algorithm.init_mode", "{choice: [N01, U01]}"),
        ("experiment.benchmark.num_tasks", "{int: [2, 3]}"),
        ("experiment.paradigm", "{choice: [til, cil]}"),
        ("experiment.seed", "{int: [0, 3]}"),
        ("experiment.train.nonsense", "{uniform: [0, 1]}"),
    ],
)
def test_knobs_that_cannot_change_mid_stream_are_refused(cli, path, value):
    code, _, err = cli("validate", str(SPACE), "--set", f"scheduler.mutate.{path}={value}")
    assert code == 2
    assert f"scheduler.mutate.{path}:" in err


@pytest.mark.parametrize(
    "sets, field",
    [
        (["searcher.name=tpe"], "searcher.name"),
        (["protocol.name=validation"], "scheduler.name"),
        (["scheduler.name=asha", "scheduler.mutate={}", "scheduler.quantile=0.25"], "protocol.name"),
        (["scheduler.mutate={}"], "scheduler.mutate"),
        (["searcher.samples=1"], "searcher.samples"),
        (["scheduler.grace_period=2"], "scheduler.grace_period"),
    ],
)
def test_inconsistent_pbt_sweeps_are_refused(cli, sets, field):
    code, _, err = cli("validate", str(SPACE), *[a for s in sets for a in ("--set", s)])
    assert code == 2
    assert f"{field}:" in err


def test_training_and_numeric_algorithm_knobs_may_change():
    spec = load_sweep(
        SPACE,
        [
            "scheduler.mutate.experiment.train.momentum={uniform: [0.0, 0.9]}",
            "scheduler.mutate.experiment.train.epochs={int: [1, 3]}",
            "scheduler.mutate.experiment.algorithm.s_max={log_uniform: [25, 800]}",
        ],
    )
    # the first population is drawn from the mutated knobs
    assert [p.name for p in spec.params] == list(spec.scheduler.mutate)
    assert spec.protocol_tag == "current_task"


def test_perturbed_values_stay_inside_their_distribution():
    from clsweep.sweep.pbt import Bounds, population
    from clsweep.sweep.space import DefineByRun

    spec = load_sweep(SPACE, [*SHRINK, "scheduler.mutate.experiment.train.epochs={int: [1, 3]}"])
    clip = Bounds(spec)
    out = clip(
        {
            "experiment.train.lr": 0.5,
            "experiment.algorithm.sparsity_strength": 0.001,
            "experiment.train.epochs": 3.6,
            "seed": 0,
        }
    )
    assert out["experiment.train.lr"] == 0.1 and out["experiment.algorithm.sparsity_strength"] == 0.1
    assert out["experiment.train.epochs"] == 3 and isinstance(out["experiment.train.epochs"], int)
    first = population(spec, DefineByRun(spec))
    assert len(first) == 4 and len({c["experiment.train.lr"] for c in first}) == 4
    assert first == population(spec, DefineByRun(spec))  # seeded by searcher.seed


def _checkpoint(folder: Path, tasks_done: int, rows: list[list[float | None]]) -> Path:
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "state.pt", "w") as archive:  # a whole archive, as torch.save writes
        archive.writestr("data", "x")
    save_result(folder, {"tasks_done": tasks_done, "acc_matrix_val": json.dumps(rows)})
    return folder


def test_a_donor_checkpoint_wins_over_the_trials_own(tmp_path):
    """An exploit hands trial b trial a's task-1 checkpoint; b's own task-1 and task-2 checkpoints
    (newer, from b's old config) must neither be resumed from nor replayed."""
    donor = _checkpoint(tmp_path / "a" / "checkpoint_000000", 1, [[0.9]])
    own = [_checkpoint(tmp_path / "b" / f"checkpoint_00000{i}", i + 1, [[0.1]] * (i + 1)) for i in range(2)]
    assert foreign_checkpoint(donor, tmp_path, "b")
    assert not foreign_checkpoint(own[0], tmp_path, "b")
    assert not foreign_checkpoint(None, tmp_path, "b")
    resume = resume_point(donor, [], 3)  # what train_trial passes for a foreign checkpoint
    assert resume.start_from == donor and resume.replay == [] and not resume.done
    assert resume_point(own[0], own, 3).start_from == own[1]  # a retry of b's own: its newest stored one


def _results(trial_dir: Path) -> dict[int, dict[str, Any]]:
    return {
        int(r["tasks_done"]): r for _, r in complete_checkpoints(sorted(trial_dir.glob(CHECKPOINT_PATTERN)))
    }


def test_pbt_sweep_copies_task_checkpoints(cli, ray_address, tmp_path, runs_of):
    code, _, err = cli(
        "run",
        str(SPACE),
        "--storage",
        str(tmp_path),
        "--address",
        ray_address,
        "--no-report",
        *[a for s in SHRINK for a in ("--set", s)],
    )
    assert code == 0, err
    sweep = tmp_path / "hat_pbt_digits"
    trials = sorted(d.name for d in sweep.iterdir() if (d / "params.json").exists())
    assert len(trials) == 4
    final = {t: _results(sweep / t)[3] for t in trials}
    exploited = 0
    for tid, result in final.items():
        lineage = json.loads(result["pbt_lineage"])
        assert [e["task"] for e in lineage] == [1, 2, 3] and lineage[-1]["trial"] == tid
        for entry in lineage:
            assert 0.01 <= entry["knobs"]["experiment.train.lr"] <= 0.1
        copied = [e["task"] for e in lineage if e["trial"] != tid]
        if not copied:
            continue
        exploited += 1
        k = max(copied)  # the task after which this trial took over a donor's checkpoint
        donor = _results(sweep / lineage[k - 1]["trial"])[k]
        for split in ("val", "test"):
            rows, donor_rows = (
                json.loads(result[f"acc_matrix_{split}"]),
                json.loads(donor[f"acc_matrix_{split}"]),
            )
            assert len(donor_rows) == k and rows[:k] == donor_rows
    assert exploited >= 1  # quantile 0.25 of 4 trials: one trial copies another at each of the 2 boundaries

    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    runs = [r for r in runs_of(uri, "hat_pbt_digits") if r.data.tags.get("clsweep.role") == "trial"]
    assert len(runs) == 4
    client = MlflowClient(uri)
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.metrics["tasks_done"] == 3
        tid = run.data.tags["clsweep.trial_id"]
        lineage = json.loads(final[tid]["pbt_lineage"])
        # the values this trial trained each task with (the lineage credits copied tasks to the donor)
        history = dict((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "pbt.train.lr"))
        assert sorted(history) == [1, 2, 3]
        for entry in lineage:
            if entry["trial"] == tid:
                assert history[entry["task"]] == entry["knobs"]["experiment.train.lr"]
        logged = [a.path for a in client.list_artifacts(run.info.run_id)]
        assert "pbt_lineage.json" in logged

    code, _, err = cli(
        "report", "hat_pbt_digits", "--storage", str(tmp_path), "--out", str(tmp_path / "report")
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    best = final[summary["best_trial"]["trial_id"]]
    readme = (tmp_path / "report" / "README.md").read_text()
    assert (tmp_path / "report" / "figures" / "pbt_lineage.png").exists()
    for entry in json.loads(best["pbt_lineage"]):  # the lineage table: task, trained by, knob values
        assert f"| {entry['task']} | {entry['trial']} |" in readme


PBT_TINY = """
searcher: {name: random, samples: 2}
scheduler: {name: pbt, mutate: {experiment.train.lr: {log_uniform: [0.01, 0.1]}}}
protocol: {name: current_task}
"""


def test_an_exploited_trial_trains_on_from_the_donors_checkpoint(write_yaml, tiny, tmp_path):
    """The trial function itself (no Ray): trial b, which already stored both tasks under its own
    config, is handed trial a's task-1 checkpoint with a new learning rate. It trains task 2 from
    a's state (a's row 1 of R), replays none of its own results and inherits a's lineage."""
    import shutil

    from clsweep.sweep.trial import TrialIO, train_trial

    spec = load_sweep(write_yaml(tiny + PBT_TINY))
    sweep_dir = tmp_path / "sweep"
    stored: dict[str, list[dict[str, Any]]] = {}

    def storing(tid: str) -> TrialIO:
        def store(result: dict[str, Any], checkpoint: Any) -> None:  # what tune.report does with it
            stored.setdefault(tid, []).append(result)
            shutil.copytree(checkpoint, sweep_dir / tid / f"checkpoint_{len(stored[tid]) - 1:06d}")

        return TrialIO(store, trial_id=tid)

    for tid, lr in (("a", 0.1), ("b", 0.01)):
        config = {"experiment.train.lr": lr, "seed": 0 if tid == "a" else 1}
        train_trial(config, plan=spec.payload(), sweep_dir=str(sweep_dir), io=storing(tid))
    assert [r["tasks_done"] for r in stored["b"]] == [1, 2]

    sent: list[dict[str, Any]] = []
    handed = TrialIO(lambda r, c: sent.append(r), sweep_dir / "a" / "checkpoint_000000", "b")
    exploit = {"experiment.train.lr": 0.08, "seed": 0}  # a's config, perturbed
    train_trial(exploit, plan=spec.payload(), sweep_dir=str(sweep_dir), io=handed)
    assert [(r["tasks_done"], r.get("replayed")) for r in sent] == [(2, None)]
    for split in ("val", "test"):
        assert (
            json.loads(sent[0][f"acc_matrix_{split}"])[0]
            == json.loads(stored["a"][0][f"acc_matrix_{split}"])[0]
        )
    lineage = json.loads(sent[0]["pbt_lineage"])
    assert [(e["trial"], e["knobs"]["experiment.train.lr"]) for e in lineage] == [("a", 0.1), ("b", 0.08)]
    assert sent[0]["pbt.train.lr"] == 0.08


def test_an_interrupted_pbt_sweep_resumes_to_the_end(cli, ray_address, tmp_path, runs_of):
    """SIGTERM the driver once some trial has done two tasks (PBT has copied at the first
    boundary); `clsweep resume` finishes the population: every trial ends after 3 tasks, its
    lineage covers them and each copied prefix of R is its donor's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    sets = [a for s in SHRINK for a in ("--set", s)]
    argv = ["run", str(SPACE), "--storage", str(tmp_path), "--address", ray_address, "--no-report", *sets]
    driver = subprocess.Popen(
        [sys.executable, "-m", "clsweep", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    sweep = tmp_path / "hat_pbt_digits"
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and not any(sweep.glob("*/checkpoint_000001")):
        time.sleep(0.1)
    os.kill(driver.pid, signal.SIGTERM)
    assert driver.wait(timeout=60) == 143
    assert not all(len(list(d.glob("checkpoint_*"))) >= 3 for d in sweep.glob("*_0000*")), "nothing was left"

    code, _, err = cli(
        "resume", "hat_pbt_digits", "--storage", str(tmp_path), "--address", ray_address, "--no-report"
    )
    assert code == 0, err
    trials = sorted(d.name for d in sweep.iterdir() if (d / "params.json").exists())
    assert len(trials) == 4
    for tid in trials:
        final = _results(sweep / tid)[3]
        lineage = json.loads(final["pbt_lineage"])
        assert [e["task"] for e in lineage] == [1, 2, 3] and lineage[-1]["trial"] == tid
        copied = [e["task"] for e in lineage if e["trial"] != tid]
        if copied:
            k = max(copied)
            donor = _results(sweep / lineage[k - 1]["trial"])[k]
            assert json.loads(final["acc_matrix_val"])[:k] == json.loads(donor["acc_matrix_val"])
    runs = [
        r
        for r in runs_of(f"sqlite:///{tmp_path}/mlflow.db", "hat_pbt_digits")
        if r.data.tags.get("clsweep.role") == "trial"
    ]
    assert sorted(r.data.tags["clsweep.trial_id"] for r in runs) == trials
    assert all(r.info.status == "FINISHED" and r.data.metrics["tasks_done"] == 3 for r in runs)


def test_a_replayed_result_is_no_pbt_boundary():
    """After a restore, a trial whose newest checkpoint Tune's snapshot missed is handed an older
    one, sends the stored result again (replayed) and trains on. Ray's synchronous PBT pauses it
    there to wait for the barrier; resumed, it is handed the same old checkpoint and replays the
    same result: a loop that never ends (seen in a CI run: 13,516 restarts in 8 minutes). A
    replayed result must let the trial train on, with the scheduler's state at the replayed task."""
    from ray.tune.experiment import Trial

    from clsweep.sweep.pbt import TaskPBT

    class Controller:  # what Tune's PBT reads of its controller here
        search_alg = None

        def __init__(self, trials: list[Trial]) -> None:
            self.trials = trials

        def get_trials(self) -> list[Trial]:
            return self.trials

        def get_live_trials(self) -> list[Trial]:
            return [t for t in self.trials if t.status != Trial.TERMINATED]

    pbt = TaskPBT(
        time_attr="tasks_done",
        metric="avg_acc_val",
        mode="max",
        perturbation_interval=1,
        hyperparam_mutations={"lr": [0.1, 0.2]},
        synch=True,
    )
    a, b = Trial("train", config={"lr": 0.1}, stub=True), Trial("train", config={"lr": 0.2}, stub=True)
    controller = Controller([a, b])
    for trial in (a, b):
        pbt.on_trial_add(controller, trial)
        pbt._trial_state[trial].last_train_time = 1  # what the restored scheduler holds
        trial.set_status(Trial.PAUSED)
    pbt._next_perturbation_sync = 2
    a.set_status(Trial.RUNNING)
    result = {"tasks_done": 2, "tasks_total": 3, "avg_acc_val": 0.5, "replayed": True}
    assert pbt.on_trial_result(controller, a, result) == TaskPBT.CONTINUE
    assert pbt._trial_state[a].last_train_time == 2 and pbt._trial_state[a].last_perturbation_time == 2
    # the same result, new rather than replayed, is a boundary: a waits there for b
    fresh = {k: v for k, v in result.items() if k != "replayed"}
    pbt._trial_state[a].last_train_time = pbt._trial_state[a].last_perturbation_time = 1
    assert pbt.on_trial_result(controller, a, fresh) == TaskPBT.PAUSE
