"""Sweep throughput on a one-node and a two-node Ray cluster started on this machine.

The same 8-trial sweep (finetuning MLP 64-128 on permuted digits, 3 tasks, 50 epochs per task:
a few seconds of compute per trial; one CPU per trial, at most 2 trials at a time, random search) runs with `clsweep run --address` against:

- one node with 1 CPU (one trial at a time),
- two nodes with 1 CPU each (two trials at a time, one per node),
- with --also-2cpu-node: one node with 2 CPUs (two trials at a time on one node), which separates
  "more trial slots" from "more nodes".

Run:  .venv/bin/python benchmarks/bench_cluster.py [--trials 8] [--epochs 50] [--also-2cpu-node]
Prints, per cluster: trials per minute over the whole command (start-up included) and between the
first trial's start and the last one's end, how many trials ran at once, how busy the trial slots
were, the machine's load, and what limited the throughput. The clusters are started and stopped
by process group (tests/clusters/local_cluster.py); nothing is left running.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
SWEEP = """
name: bench_cluster
experiment:
  seed: 0
  benchmark: {{name: permuted, source: digits, num_tasks: 3, seed: 0}}
  backbone: {{name: mlp, hidden_dims: [128]}}
  algorithm: {{name: finetuning}}
  train: {{epochs: {epochs}, batch_size: 64, lr: 0.05}}
search:
  experiment.train.lr: {{log_uniform: [0.01, 0.1]}}
searcher: {{name: random, samples: {trials}, seed: 0}}
resources: {{cpus: 1, max_concurrent: 2}}
"""


def load_local_cluster() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "clsweep_local_cluster", REPO / "tests" / "clusters" / "local_cluster.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LoadSampler(threading.Thread):
    """The machine's 1-minute load average, sampled every second."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            self.samples.append(os.getloadavg()[0])

    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")


@dataclass
class Result:
    label: str
    slots: int
    start_s: float
    wall_s: float
    first_trial_s: float
    busy_s: float
    trial_s: list[float]
    max_running: int
    nodes: int
    load: float
    failed: int

    @property
    def per_min(self) -> float:
        return 60.0 * len(self.trial_s) / self.wall_s

    @property
    def per_min_steady(self) -> float:
        return 60.0 * len(self.trial_s) / self.busy_s

    @property
    def slot_use(self) -> float:
        return sum(self.trial_s) / (self.busy_s * self.slots)

    def limit(self, cores: int) -> str:
        reasons = []
        startup = self.first_trial_s / self.wall_s
        if startup > 0.25:
            reasons.append(
                f"start-up ({startup:.0%} of the command before the first trial: Ray join, actor and torch import)"
            )
        if self.slot_use > 0.75:
            reasons.append(f"trial slots ({self.slots} x 1 CPU busy {self.slot_use:.0%} of the time)")
        else:
            reasons.append(f"per-trial overhead between trials (slots busy only {self.slot_use:.0%})")
        if self.load > cores:
            reasons.append(
                f"CPU contention (load {self.load:.1f} on {cores} cores, other processes included)"
            )
        return "; ".join(reasons)


def run_sweep(
    lc: ModuleType, label: str, nodes: int, cpus: int, trials: int, epochs: int, work: Path
) -> Result:
    folder = work / label.replace(" ", "_")
    folder.mkdir()
    space = folder / "space.yaml"
    space.write_text(textwrap.dedent(SWEEP.format(trials=trials, epochs=epochs)).lstrip())
    t0 = time.monotonic()
    cluster = lc.LocalCluster(nodes=nodes, cpus=cpus).start()
    start_s = time.monotonic() - t0
    sampler = LoadSampler()
    try:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        sampler.start()
        began, began_ms = time.monotonic(), time.time() * 1000
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("clsweep")),
                "run",
                str(space),
                "--address",
                cluster.address,
                "--storage",
                str(folder / "runs"),
                "--tracking-uri",
                uri,
                "--no-report",
            ],
            env=cluster.env(),
            capture_output=True,
            text=True,
            timeout=1800,
        )
        wall = time.monotonic() - began
        sampler.stop_event.set()
        if done.returncode not in (0, 1):
            raise RuntimeError(f"{label}: clsweep run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    finally:
        left = cluster.stop()
        if left:
            print(f"warning: processes left by the {label} cluster: {left}", file=sys.stderr)

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("bench_cluster")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("clsweep.role") == "trial"]
    spans = [(r.info.start_time, r.info.end_time) for r in runs if r.info.end_time]
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return Result(
        label=label,
        slots=nodes * cpus,
        start_s=start_s,
        wall_s=wall,
        first_trial_s=(first - began_ms) / 1000,
        busy_s=(last - first) / 1000,
        trial_s=[(e - s) / 1000 for s, e in spans],
        max_running=peak,
        nodes=len({r.data.tags.get("clsweep.node") for r in runs}),
        load=sampler.mean(),
        failed=sum(r.info.status == "FAILED" for r in runs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=50, help="epochs per task (trial length)")
    parser.add_argument("--also-2cpu-node", action="store_true", help="also one node with 2 CPUs")
    args = parser.parse_args()
    lc = load_local_cluster()
    cores = os.cpu_count() or 1
    print(f"machine: {cores} cores, load before: {os.getloadavg()[0]:.1f} (1 min)")
    plans = [("one node x 1 CPU", 1, 1), ("two nodes x 1 CPU", 2, 1)]
    if args.also_2cpu_node:
        plans.append(("one node x 2 CPUs", 1, 2))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        for label, nodes, cpus in plans:
            results.append(run_sweep(lc, label, nodes, cpus, args.trials, args.epochs, Path(tmp)))
            r = results[-1]
            print(
                f"\n{r.label}: {len(r.trial_s)} trials ({r.failed} failed) on {r.nodes} node(s), "
                f"cluster start {r.start_s:.1f} s"
            )
            print(
                f"  command {r.wall_s:.1f} s -> {r.per_min:.1f} trials/min; first trial start -> last trial end "
                f"{r.busy_s:.1f} s -> {r.per_min_steady:.1f} trials/min"
            )
            print(
                f"  trial time median {sorted(r.trial_s)[len(r.trial_s) // 2]:.1f} s, at most {r.max_running} at once, "
                f"slots busy {r.slot_use:.0%}, first trial after {r.first_trial_s:.1f} s, mean load {r.load:.1f}"
            )
            print(f"  limited by: {r.limit(cores)}")
    base = results[0]
    for r in results[1:]:
        print(
            f"\n{r.label} vs {base.label}: {r.per_min / base.per_min:.2f}x trials/min (command), "
            f"{r.per_min_steady / base.per_min_steady:.2f}x (steady)"
        )


if __name__ == "__main__":
    main()
