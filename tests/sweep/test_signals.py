"""Ctrl-C and SIGTERM sent to a real ``clsweep run`` driver once a trial has reported: the driver
stops within the bound, exits 130 / 143, marks the runs KILLED, leaves no process behind, and
``clsweep resume`` finishes the sweep with one MLflow run per trial and no metric step twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from clsweep.storage import LOCK_FILE, SweepPaths, read_json
from clsweep.sweep.signals import GRACE_S

SWEEP = """
name: {name}
experiment:
  benchmark: {{name: permuted, source: digits, num_tasks: 3, seed: 0}}
  backbone: {{name: mlp, hidden_dims: [64]}}
  algorithm: {{name: finetuning}}
  train: {{epochs: 10, lr: 0.05}}
search:
  experiment.train.lr: {{grid: [0.05, 0.03]}}
searcher: {{name: grid}}
resources: {{max_concurrent: 1}}
"""


def descendants(pid: int) -> set[int]:
    """The processes below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def start_driver(path: Path, storage: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "clsweep", "run", str(path), "--storage", str(storage), "--no-report"]
    return subprocess.Popen([*command, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_a_report(paths: SweepPaths, driver: subprocess.Popen[bytes], within: float = 180) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and driver.poll() is None:
        if any(paths.sweep_dir.glob("*/checkpoint_000000")):  # task 1 reported, with its checkpoint
            return
        time.sleep(0.05)
    pytest.fail(f"no trial reported (driver exit {driver.poll()})")


@pytest.mark.parametrize(("sig", "embedded"), [(signal.SIGINT, False), (signal.SIGTERM, True)])
def test_signal_stops_the_sweep_cleanly_and_resume_finishes_it(
    write_yaml, tmp_path, ray_address, cli, alive, sig, embedded
):
    """SIGINT on a cluster driver (--address), SIGTERM on one with its own Ray and fork server."""
    name = f"stop-{sig.name.lower()}"
    path = write_yaml(SWEEP.format(name=name))
    paths = SweepPaths.at(tmp_path, name)
    driver = start_driver(path, tmp_path, *([] if embedded else ["--address", ray_address]))
    wait_for_a_report(paths, driver)
    started = descendants(driver.pid)
    sent = time.monotonic()
    os.kill(driver.pid, sig)
    _, err = driver.communicate(timeout=GRACE_S + 10)
    took = time.monotonic() - sent
    assert driver.returncode == 128 + sig, err.decode()
    assert took < GRACE_S, took
    assert not [p for p in started if alive(p, within=5.0)]  # Ray, the fork server, trial processes
    assert not (paths.sweep_dir / LOCK_FILE).exists()

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("clsweep.role") == "sweep"]
    [child] = [r for r in runs if r.data.tags.get("clsweep.role") == "trial"]  # the second never started
    assert parent.info.status == "KILLED"
    assert child.info.status == "KILLED" and child.data.tags["clsweep.status"] == "interrupted"
    assert read_json(paths.record)["complete"] is False
    assert [t["state"] for t in read_json(paths.status)["trials"]][0] == "running"
    checkpoints = sorted((paths.sweep_dir / child.data.tags["clsweep.trial_id"]).glob("checkpoint_*"))
    assert checkpoints  # the task checkpoints it had made are kept

    code, _, err_text = cli(
        "resume", name, "--storage", str(tmp_path), "--address", ray_address, "--no-report"
    )
    assert code == 0, err_text
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    children = [r for r in runs if r.data.tags.get("clsweep.role") == "trial"]
    assert len(children) == 2 and child.info.run_id in {r.info.run_id for r in children}  # one run per trial
    assert all(r.info.status == "FINISHED" and r.data.tags["clsweep.status"] == "finished" for r in children)
    for run in children:
        assert [m.step for m in client.get_metric_history(run.info.run_id, "tasks_done")] == [1, 2, 3]
    [parent] = [r for r in runs if r.data.tags.get("clsweep.role") == "sweep"]
    assert parent.info.status == "FINISHED"
    assert read_json(paths.record)["complete"] is True
