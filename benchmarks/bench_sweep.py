"""What the sweeper costs, measured side by side in one run.

1. The quickstart-sized trial (HAT, 5 permuted-digit tasks, search_spaces/quickstart.yaml's
   experiment) run directly through ``run_experiment`` in this process (1 thread, as a 1-CPU trial
   gets), twice before the sweeps and once after each 4-trial sweep.
2. The same experiment as sweeps, each run as ``clsweep run`` runs one: it starts its own local
   Ray (2 CPUs), writes MLflow (sqlite), checkpoints every task, reuses actors and stops Ray at the
   end. In order: 1 trial on a new MLflow store; then, ``--repeat`` times, 4 trials (4 seeds) one at
   a time, 4 trials two at a time and 1 trial again (on the store the first one created, as a
   user's next sweeps).

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
from clsweep.spec.sweep import SweepPlan, parse_sweep

QUICKSTART = Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml"


def sweep_spec(name: str, seeds: int, concurrent: int, epochs: int, tasks: int) -> SweepPlan:
    """The quickstart's experiment with its search removed, ``seeds`` trials, ``concurrent`` at a time."""
    data = dict(load_yaml(QUICKSTART))
    for key in ("search", "scheduler", "searcher"):
        data.pop(key, None)
    data["experiment"]["train"]["epochs"] = epochs
    data["experiment"]["benchmark"]["num_tasks"] = tasks
    data.update(name=name, seeds=seeds, resources={"cpus": 1, "max_concurrent": concurrent})
    return parse_sweep(data)


def timed_sweep(spec: SweepPlan, storage: Path) -> dict[str, Any]:
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
    return {
        "wall": wall,
        "phase": times.last_end - (times.first_start or times.last_end),
        "trials": list(times.seconds.values()),
        "cpu": list(times.cpu.values()),
    }


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=20, help="epochs per task (the quickstart's: 20)")
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2, help="repetitions of the 4-trial sweeps (default 2)")
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
    seqs, pars, agains = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench_sweep-") as tmp:
        root = Path(tmp)
        one = timed_sweep(sweep_spec("one", 1, 1, args.epochs, args.tasks), root)
        print(f"sweep, 1 trial, new store:     {one['wall']:6.1f} s   (the trial: {one['trials'][0]:.1f} s)")
        for rep in range(
            args.repeat
        ):  # interleaved: a burst of load on the shared cores hits one of each, not all
            seqs.append(timed_sweep(sweep_spec(f"seq{rep}", 4, 1, args.epochs, args.tasks), root))
            print(
                f"sweep, 4 trials, 1 at a time:  {seqs[-1]['wall']:6.1f} s   (trials {_list(seqs[-1]['trials'])} s; "
                f"CPU {_list(seqs[-1]['cpu'])} s)"
            )
            direct_run(", again")
            pars.append(timed_sweep(sweep_spec(f"par{rep}", 4, 2, args.epochs, args.tasks), root))
            print(
                f"sweep, 4 trials, 2 at a time:  {pars[-1]['wall']:6.1f} s   (trials {_list(pars[-1]['trials'])} s)"
            )
            agains.append(timed_sweep(sweep_spec(f"again{rep}", 1, 1, args.epochs, args.tasks), root))
            print(f"sweep, 1 trial, store exists:  {agains[-1]['wall']:6.1f} s")
            direct_run(", again")
    direct, cpu_direct = statistics.median(directs), statistics.median(direct_cpus)

    reused = [t for seq in seqs for t in seq["trials"][1:]]  # trials 2-4 of each ran on a reused actor
    per_trial = statistics.median(reused)
    cpu_trial = statistics.median([c for seq in seqs for c in seq["cpu"][1:]])
    startup = statistics.median(a["wall"] for a in agains) - per_trial
    startup_new = one["wall"] - per_trial
    print()
    print(
        f"per-trial cost in a sweep:     {per_trial:6.1f} s   overhead ratio {per_trial / direct:.2f}x over the "
        f"direct median {direct:.1f} s (target < 1.15x; medians of {len(reused)} and {len(directs)} runs)"
    )
    print(
        f"  fastest against fastest:     {min(reused):6.1f} s vs {min(directs):.1f} s direct = "
        f"{min(reused) / min(directs):.2f}x"
    )
    print(
        f"  in CPU time:                 {cpu_trial:6.1f} s vs {cpu_direct:.1f} s direct = {cpu_trial / cpu_direct:.2f}x "
        "(medians)"
    )
    print(
        f"fixed start-up:                {startup:6.1f} s   store exists; {startup_new:.1f} s creating the MLflow "
        "store (target < 15 s)"
    )

    def ratios(key: Any) -> str:
        each = [key(seq) / key(par) for seq, par in zip(seqs, pars, strict=True)]
        return f"{statistics.median(each):6.2f}x  (each repetition: {', '.join(f'{r:.2f}' for r in each)})"

    print("speed-up of 2 concurrent over 1 (target >= 1.6x), median over repetitions:")
    print(f"  beyond the fixed start-up:   {ratios(lambda sweep: sweep['wall'] - startup)}")
    print(
        f"  trial phase:                 {ratios(lambda sweep: sweep['phase'])}  first trial start to last trial end"
    )
    print(f"  whole sweep:                 {ratios(lambda sweep: sweep['wall'])}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
