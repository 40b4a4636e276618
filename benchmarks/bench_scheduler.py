"""What pruning saves, measured: the same random configurations under no scheduler, ASHA and the
median stopping rule, side by side in one run.

For each searcher seed, three sweeps of a shipped HAT sweep file (default: the quickstart, HAT on
permuted digits) run with ``searcher: random`` and the same seed, so all three are proposed the
same configurations in the same order; only the scheduler differs. Printed per sweep, relative
to the one without a scheduler:
- tasks trained and CPU seconds (the trials' own process time, summed);
- whether the top-1 configuration (best mean objective over the finished trials) is the same;
- the regret: the final objective, under full training (the scheduler-free sweep), of the
  configuration this sweep chose, minus the best final objective over all configurations.
Then per scheduler: mean compute ratio and in how many seeds the top-1 was the same.
Target (issue 13): ASHA at most 0.5x the compute with the same top-1 in at least 2 of 3 seeds.

Run:  .venv/bin/python benchmarks/bench_scheduler.py [--samples 16] [--seeds 0,1,2]
      [--space search_spaces/quickstart.yaml] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import clsweep

SCHEDULERS = {
    "none": "{name: none}",
    # grace 1, factor 3: rungs after tasks 1 and 3 (the quickstart's grace 2, factor 2 saved 0.67x)
    "asha": "{name: asha, grace_period: 1, reduction_factor: 3}",
    "median": "{name: median, grace_period: 1, min_samples_required: 3}",
}


def _key(row: Any, names: list[str]) -> str:
    return json.dumps({n: row[n] for n in names}, sort_keys=True, default=str)


def one_sweep(
    space: str, scheduler: str, seed: int, samples: int, extra: list[str], storage: Path
) -> dict[str, Any]:
    name = f"sched-{scheduler}-{seed}"
    overrides = [
        "searcher.name=random",
        f"searcher.samples={samples}",
        f"searcher.seed={seed}",
        f"scheduler={SCHEDULERS[scheduler]}",
        *extra,
    ]
    result = clsweep.run(space, overrides=overrides, name=name, storage=storage, report=False)
    frame = clsweep.load(name, storage=storage)
    plan = frame.attrs["sweep"].plan
    names = [p.name for p in plan.searched_params]
    metric = plan.objectives[0].metric
    finished = frame[frame.status == "finished"]
    values = {_key(r, names): float(r[metric]) for _, r in finished.iterrows()}
    top = max(values, key=lambda k: values[k]) if values else None
    return {
        "scheduler": scheduler,
        "seed": seed,
        "exit": result.exit_code,
        "tasks": int(frame.tasks_done.sum()),
        "cpu_s": float(frame.get("trial_cpu_seconds", frame.tasks_done * 0).sum()),
        "values": values,
        "top": top,
        "counts": dict(frame.status.value_counts()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--space", default=str(Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml")
    )
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--asha", default=SCHEDULERS["asha"], help=f"ASHA's settings (default {SCHEDULERS['asha']})"
    )
    parser.add_argument(
        "--median", default=SCHEDULERS["median"], help=f"the median rule's (default {SCHEDULERS['median']})"
    )
    parser.add_argument("--storage", default=None, help="where the sweeps go (default: a temporary folder)")
    args = parser.parse_args()
    storage = Path(args.storage) if args.storage else Path(tempfile.mkdtemp(prefix="bench-scheduler-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    SCHEDULERS.update(asha=args.asha, median=args.median)
    print(f"schedulers: asha {args.asha}, median {args.median}")
    rows = []
    try:
        for seed in seeds:
            runs = {s: one_sweep(args.space, s, seed, args.samples, args.set, storage) for s in SCHEDULERS}
            full = runs["none"]["values"]
            best_all = max(full.values()) if full else float("nan")
            for scheduler, run in runs.items():
                chosen = run["top"]
                rows.append(
                    {
                        "scheduler": scheduler,
                        "seed": seed,
                        "tasks_ratio": run["tasks"] / max(1, runs["none"]["tasks"]),
                        "cpu_ratio": run["cpu_s"] / max(1e-9, runs["none"]["cpu_s"]),
                        "same_top1": chosen is not None and chosen == runs["none"]["top"],
                        "regret": best_all - full[chosen] if chosen in full else float("nan"),
                        "counts": run["counts"],
                        "exit": run["exit"],
                    }
                )
    finally:
        if not args.storage:
            shutil.rmtree(storage, ignore_errors=True)
    print(f"{'scheduler':<9} {'seed':>4} {'tasks':>7} {'CPU s':>7} {'top-1':>6} {'regret':>8}  trials")
    for r in rows:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r["counts"].items()))
        print(
            f"{r['scheduler']:<9} {r['seed']:>4} {r['tasks_ratio']:>6.2f}x {r['cpu_ratio']:>6.2f}x "
            f"{'same' if r['same_top1'] else 'other':>6} {r['regret']:>8.4f}  {counts} (exit {r['exit']})"
        )
    print()
    for scheduler in SCHEDULERS:
        mine = [r for r in rows if r["scheduler"] == scheduler]
        same = sum(r["same_top1"] for r in mine)
        print(
            f"{scheduler:<9} compute {statistics.mean(r['cpu_ratio'] for r in mine):.2f}x "
            f"(tasks {statistics.mean(r['tasks_ratio'] for r in mine):.2f}x), same top-1 in {same} of {len(mine)} "
            f"seeds, mean regret {statistics.mean(r['regret'] for r in mine):.4f}"
        )


if __name__ == "__main__":
    main()
