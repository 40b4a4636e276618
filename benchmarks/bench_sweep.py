"""What the sweeper costs, measured side by side in one run.

1. The quickstart-sized trial (HAT, 5 permuted-digit tasks, search_spaces/quickstart.yaml's
   experiment) run directly through ``run_experiment`` (1 thread, as a 1-CPU trial gets).
2. The same experiment as sweeps: 1 trial on a Ray the sweep starts itself (as ``clsweep run``
   does), then, on one Ray started here, 4 trials (4 seeds) one at a time and 4 trials two at a
   time. Every sweep writes MLflow (sqlite), checkpoints every task and reuses actors.

From these: per-trial cost = Tune's time_total_s of the trials that ran on a reused actor (median),
overhead ratio = per-trial cost / direct time (target < 1.15; also in CPU time, which other load on
shared cores does not distort), fixed start-up = T(1 trial) - per-trial cost (target < 15 s: Ray,
MLflow store, Tune, actor start, torch/Lightning imports, shutdown), and the speed-up of 2
concurrent trials over 1 (target >= 1.6 on 2 cores), for the whole sweep and for its trial phase
(first trial start to last trial end: no Ray, MLflow or Tune set-up).

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

from clsweep.spec.loading import load_yaml
from clsweep.spec.sweep import parse_sweep

QUICKSTART = Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml"


def sweep_spec(name: str, seeds: int, concurrent: int, epochs: int, tasks: int):  # type: ignore[no-untyped-def]
    data = dict(load_yaml(QUICKSTART))
    for key in ("search", "scheduler", "searcher"):
        data.pop(key, None)
    data["experiment"]["train"]["epochs"] = epochs
    data["experiment"]["benchmark"]["num_tasks"] = tasks
    data.update(name=name, seeds=seeds, resources={"cpus": 1, "max_concurrent": concurrent})
    return parse_sweep(data)


def timed_sweep(spec, storage: Path) -> tuple[float, float, list[float], list[float]]:  # type: ignore[no-untyped-def]
    """Wall time of the sweep, of its trial phase (first trial start to last trial end), and each
    trial's time_total_s and CPU seconds (in start order)."""
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
    phase = times.last_end - (times.first_start or times.last_end)
    return wall, phase, list(times.seconds.values()), list(times.cpu.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}  (cpus: {os.cpu_count()})")

    import torch

    from clsweep.experiment import run_experiment

    torch.set_num_threads(1)  # what a 1-CPU Ray trial gets (OMP_NUM_THREADS=1)
    one = sweep_spec("bench_direct", 1, 1, args.epochs, args.tasks)
    run_experiment(one.experiment_for({"seed": 99}), max_tasks=1)  # warm-up: imports, data

    cpus: list[float] = []

    def direct_run() -> float:
        start, cpu = time.perf_counter(), time.process_time()
        run_experiment(one.experiment_for({"seed": 0}))
        cpus.append(time.process_time() - cpu)
        return time.perf_counter() - start

    directs = [direct_run()]
    print(f"direct run_experiment:          {directs[0]:6.1f} s   ({cpus[-1]:.1f} s CPU)")

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    with tempfile.TemporaryDirectory(prefix="bench_sweep-") as tmp:
        # as `clsweep run` does it: the sweep starts its own Ray (and the MLflow store meanwhile)
        t1, _, first, _ = timed_sweep(sweep_spec("one", 1, 1, args.epochs, args.tasks), Path(tmp) / "a")
        print(f"sweep, 1 trial, Ray included:   {t1:6.1f} s   (the trial itself, imports included: {first[0]:.1f} s)")
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        print(f"ray.init (2 CPUs) for the rest: {time.perf_counter() - start:6.1f} s")
        t4_seq, phase_seq, seq, seq_cpu = timed_sweep(sweep_spec("seq", 4, 1, args.epochs, args.tasks), Path(tmp) / "b")
        print(f"sweep, 4 trials, 1 at a time:   {t4_seq:6.1f} s   (trials: {', '.join(f'{t:.1f}' for t in seq)} s; "
              f"CPU {', '.join(f'{t:.1f}' for t in seq_cpu)} s)")
        directs.append(direct_run())
        print(f"direct run_experiment, again:   {directs[-1]:6.1f} s   ({cpus[-1]:.1f} s CPU)")
        t4_par, phase_par, par, _ = timed_sweep(sweep_spec("par", 4, 2, args.epochs, args.tasks), Path(tmp) / "c")
        print(f"sweep, 4 trials, 2 at a time:   {t4_par:6.1f} s   (trials: {', '.join(f'{t:.1f}' for t in par)} s)")
    ray.shutdown()
    directs.append(direct_run())
    print(f"direct run_experiment, again:   {directs[-1]:6.1f} s   ({cpus[-1]:.1f} s CPU)")
    direct = statistics.median(directs)

    per_trial = statistics.median(seq[1:])  # trials 2-4 ran on the reused actor: no imports
    startup = t1 - per_trial
    print()
    print(f"per-trial cost in a sweep:      {per_trial:6.1f} s   overhead ratio {per_trial / direct:.2f}x "
          f"over the direct median {direct:.1f} s (target < 1.15x)")
    cpu_trial, cpu_direct = statistics.median(seq_cpu[1:]), statistics.median(cpus)
    print(f"  in CPU time (robust to other load): {cpu_trial:.1f} s vs {cpu_direct:.1f} s direct = "
          f"{cpu_trial / cpu_direct:.2f}x")
    print(f"fixed start-up:                 {startup:6.1f} s   (target < 15 s: Ray, MLflow store, Tune, actor, "
          "imports, shutdown)")
    print(f"speed-up of 2 concurrent over 1: {t4_seq / t4_par:.2f}x whole sweep, {phase_seq / phase_par:.2f}x trial "
          f"phase ({phase_seq:.1f} s vs {phase_par:.1f} s; first trial start to last trial end) (target >= 1.6x)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
