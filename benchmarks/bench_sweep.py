"""What the sweeper costs, measured side by side in one run.

1. The quickstart-sized trial (HAT, 5 permuted-digit tasks, search_spaces/quickstart.yaml's
   experiment) run directly through ``run_experiment`` in this process (1 thread, as a 1-CPU trial
   gets), twice before, between and after the sweeps.
2. The same experiment as sweeps, each run as ``clsweep run`` runs one: it starts its own local
   Ray (2 CPUs), writes MLflow (sqlite), checkpoints every task, reuses actors and stops Ray at the
   end. In order: 1 trial on a new MLflow store; 4 trials (4 seeds) one at a time; 4 trials two at a
   time; 1 trial again (these three on the store the first one created, as a user's next sweeps).

Printed:
- per-trial cost: Tune's time_total_s of the trials that ran on a reused actor (median), and the
  overhead ratio over the direct runs (target < 1.15): of the medians, and of the fastest of each
  (these shared cores slow whole runs down by up to 50% at times: the fastest is the least
  disturbed), and in CPU seconds of the process that trained;
- fixed start-up: a 1-trial sweep's wall time minus the per-trial cost (target < 15 s). It holds
  Ray's start and stop, the MLflow store, Tune's set-up, the trial actor's start and the fork
  server's imports of torch and Lightning (clsweep/sweep/forkserver.py; they overlap Ray's start);
- the speed-up of 2 concurrent trials over 1 (target >= 1.6): on the sweeps' time beyond the fixed
  start-up (the sweeper's model: wall time = start-up + trial rounds x per-trial cost), on the
  trial phase (first trial start to last trial end) and on the whole wall time.

    .venv/bin/python benchmarks/bench_sweep.py [--epochs 20] [--tasks 5]

The machine load (other processes) is printed before and after: shared cores distort every number.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from clsweep.spec.loading import load_yaml
from clsweep.spec.sweep import SweepSpec, parse_sweep

QUICKSTART = Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml"


def sweep_spec(name: str, seeds: int, concurrent: int, epochs: int, tasks: int) -> SweepSpec:
    """The quickstart's experiment with its search removed, ``seeds`` trials, ``concurrent`` at a time."""
    data = dict(load_yaml(QUICKSTART))
    for key in ("search", "scheduler", "searcher"):
        data.pop(key, None)
    data["experiment"]["train"]["epochs"] = epochs
    data["experiment"]["benchmark"]["num_tasks"] = tasks
    data.update(name=name, seeds=seeds, resources={"cpus": 1, "max_concurrent": concurrent})
    return parse_sweep(data)


def timed_sweep(spec: SweepSpec, storage: Path) -> dict[str, Any]:
    """Run ``spec`` as ``clsweep run`` does (its own local Ray, 2 CPUs). Returns the wall time, the
    trial phase (first trial start to last trial end) and each trial's time_total_s and CPU seconds."""
    from ray.tune import Callback

    from clsweep.sweep.driver import execute, prepare

    class TrialTimes(Callback):
        def __init__(self) -> None:
            self.seconds: dict[str, float] = {}
            self.cpu: dict[str, float] = {}
            self.first_start: float | None = None
            self.last_end = 0.0

        def on_trial_start(self, iteration, trials, trial, **info):  # type: ignore[no-untyped-def]
            self.first_start = self.first_start or time.perf_counter()

        def on_trial_complete(self, iteration, trials, trial, **info):  # type: ignore[no-untyped-def]
            self.last_end = time.perf_counter()

        def on_trial_result(self, iteration, trials, trial, result, **info):  # type: ignore[no-untyped-def]
            self.seconds[trial.trial_id] = float(result["time_total_s"])
            self.cpu[trial.trial_id] = float(result["trial_cpu_seconds"])

    times = TrialTimes()
    start = time.perf_counter()
    outcome = execute(prepare(spec, storage=storage), callbacks=[times], display=False, num_cpus=2)
    wall = time.perf_counter() - start
    assert outcome.complete and outcome.failed == 0, outcome.summary.counts
    return {"wall": wall, "phase": times.last_end - (times.first_start or times.last_end),
            "trials": list(times.seconds.values()), "cpu": list(times.cpu.values())}


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="epochs per task (the quickstart's: 20)")
    parser.add_argument("--tasks", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}  (cpus: {os.cpu_count()})")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import torch

    from clsweep.experiment import run_experiment

    torch.set_num_threads(1)  # what a 1-CPU Ray trial gets (OMP_NUM_THREADS=1)
    direct_spec = sweep_spec("bench_direct", 1, 1, args.epochs, args.tasks)
    run_experiment(direct_spec.experiment_for({"seed": 99}), max_tasks=1)  # warm-up: imports, data

    directs: list[float] = []
    direct_cpus: list[float] = []

    def direct_run(label: str) -> None:
        start, cpu = time.perf_counter(), time.process_time()
        run_experiment(direct_spec.experiment_for({"seed": 0}))
        directs.append(time.perf_counter() - start)
        direct_cpus.append(time.process_time() - cpu)
        print(f"direct run_experiment{label}: {directs[-1]:6.1f} s   ({direct_cpus[-1]:.1f} s CPU)")

    direct_run("        ")
    direct_run(", again")
    with tempfile.TemporaryDirectory(prefix="bench_sweep-") as tmp:
        root = Path(tmp)
        one = timed_sweep(sweep_spec("one", 1, 1, args.epochs, args.tasks), root)
        print(f"sweep, 1 trial, new store:     {one['wall']:6.1f} s   (the trial, its actor's imports included: "
              f"{one['trials'][0]:.1f} s)")
        seq = timed_sweep(sweep_spec("seq", 4, 1, args.epochs, args.tasks), root)
        print(f"sweep, 4 trials, 1 at a time:  {seq['wall']:6.1f} s   (trials {_list(seq['trials'])} s; "
              f"CPU {_list(seq['cpu'])} s)")
        direct_run(", again")
        direct_run(", again")
        par = timed_sweep(sweep_spec("par", 4, 2, args.epochs, args.tasks), root)
        print(f"sweep, 4 trials, 2 at a time:  {par['wall']:6.1f} s   (trials {_list(par['trials'])} s)")
        again = timed_sweep(sweep_spec("again", 1, 1, args.epochs, args.tasks), root)
        print(f"sweep, 1 trial, store exists:  {again['wall']:6.1f} s")
    direct_run(", again")
    direct_run(", again")
    direct, cpu_direct = statistics.median(directs), statistics.median(direct_cpus)

    per_trial = statistics.median(seq["trials"][1:])  # trials 2-4 ran on the reused actor: no imports
    cpu_trial = statistics.median(seq["cpu"][1:])
    startup_new, startup = one["wall"] - per_trial, again["wall"] - per_trial
    beyond_seq, beyond_par = seq["wall"] - startup, par["wall"] - startup
    print()
    print(f"per-trial cost in a sweep:     {per_trial:6.1f} s   overhead ratio {per_trial / direct:.2f}x over the "
          f"direct median {direct:.1f} s (target < 1.15x)")
    fastest = min(seq["trials"][1:])
    print(f"  fastest against fastest:     {fastest:6.1f} s vs {min(directs):.1f} s direct = {fastest / min(directs):.2f}x")
    print(f"  in CPU time:                 {cpu_trial:6.1f} s vs {cpu_direct:.1f} s direct = {cpu_trial / cpu_direct:.2f}x "
          "(medians)")
    print(f"fixed start-up:                {startup:6.1f} s   store exists; {startup_new:.1f} s creating the MLflow "
          "store (target < 15 s)")
    print("speed-up of 2 concurrent over 1 (target >= 1.6x):")
    print(f"  beyond the fixed start-up:   {beyond_seq / beyond_par:6.2f}x  ({beyond_seq:.1f} s vs {beyond_par:.1f} s)")
    print(f"  trial phase:                 {seq['phase'] / par['phase']:6.2f}x  ({seq['phase']:.1f} s vs "
          f"{par['phase']:.1f} s; first trial start to last trial end, actor imports included)")
    print(f"  whole sweep:                 {seq['wall'] / par['wall']:6.2f}x  ({seq['wall']:.1f} s vs {par['wall']:.1f} s)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
