"""Where ER's step time goes: ER through clsweep's loop beside timing ablations of its step.

ER's target is at most 1.5x Finetuning (``bench_loop.py --baselines er``). This script splits the
gap: each row below is ER with one part of its step replaced, timed side by side with Finetuning
(same data, MLP, budget; runs interleaved, the ratio the median of adjacent pairs' ratios as in
``bench_loop.py``). The replay and one-head ablations are timing tools only: they train something
other than ER (the numbers they reach mean nothing); all of them exist only inside this process.

- ``er``: the method as shipped: in TIL the heads of every task set up are stacked into one weight
  pair for the task's training (``clsweep.heads.stacked``).
- ``er, heads' own parameters``: the heads not stacked, so each step concatenates the present
  heads' weights, autograd splits the gradient back per head and the optimiser updates two
  tensors per task (what ER shipped before the stack; the same numbers when every task is present).
- ``er, replay batch drawn once per task``: the replay batch of each task's first step is reused
  for the whole task (the cost of the replay draw: a permutation and three gathers per step).
- ``er, one head``: every row scored by the current task's head (no per-task heads at all): the
  step's cost with no head bookkeeping, the floor of what ER's own work costs.
- ``finetuning 2x rows``: Finetuning whose every step trains on 128 rows, as many as ER's current
  and replay batch together (twice the epochs, so the same number of steps).

Run:  .venv/bin/python benchmarks/bench_er_step.py [--epochs 10] [--repeats 5] [--hidden 256,256]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import torch
from bench_loop import config, hidden_widths, pair_ratio
from torch import nn

from clsweep.algorithms.er import ER
from clsweep.algorithms.replay_buffer import ReservoirMemory
from clsweep.experiment import run_experiment
from clsweep.heads.stacked import StackedHeads
from clsweep.spec import parse_experiment

Patches = dict[tuple[type, str], Callable[..., Any]]
"""An ablation: the methods it replaces, by (class, name); ER's training step itself is never
replaced, so each row differs from ER by the one part it names."""


def _replay_once_per_task() -> Patches:
    """The replay memory answers every draw of a task with that task's first draw."""
    drawn: list[tuple[torch.Tensor, ...]] = []
    shipped_sample, shipped_start = ReservoirMemory.sample, ER.on_task_start

    def sample(self: ReservoirMemory, n: int) -> tuple[torch.Tensor, ...]:
        if not drawn:
            drawn.append(shipped_sample(self, n))
        return drawn[0]

    def on_task_start(self: ER, task_id: int) -> None:
        drawn.clear()
        shipped_start(self, task_id)

    return {(ReservoirMemory, "sample"): sample, (ER, "on_task_start"): on_task_start}


def _one_head() -> Patches:
    """Every row of a mixed batch scored by the newest task's head (ER's current task)."""

    def forward_rows(self: StackedHeads, feature: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        width = self.widths[-1]
        return nn.functional.linear(feature, self.weight[-width:], self.bias[-width:])

    return {(StackedHeads, "forward_rows"): forward_rows}


def _heads_own_parameters() -> Patches:
    """No stack: ER scores its batches with ``heads.forward_rows`` over the heads' own parameters."""
    return {(StackedHeads, "supports"): staticmethod(lambda heads: False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", default="256,256", help="hidden widths of the MLP")
    args = parser.parse_args()
    hidden = hidden_widths(parser, args.hidden)
    torch.set_num_threads(1)  # as bench_loop.py: the same-loop ratios it reports
    finetuning = parse_experiment(config("finetuning", args.epochs, hidden=hidden))
    er = parse_experiment(config("er", args.epochs, hidden=hidden))
    doubled = config("finetuning", 2 * args.epochs, hidden=hidden)
    doubled["train"]["batch_size"] = 128
    rows: list[tuple[str, Any, Patches]] = [
        ("er", er, {}),
        ("er, heads' own parameters", er, _heads_own_parameters()),
        ("er, replay batch drawn once per task", er, _replay_once_per_task()),
        ("er, one head", er, _one_head()),
        ("finetuning 2x rows", parse_experiment(doubled), {}),
    ]
    run_experiment(finetuning)  # warm-up
    for name, cfg, patches in rows:
        with contextlib.ExitStack() as stack:
            for (owner, attribute), replacement in patches.items():
                stack.enter_context(mock.patch.object(owner, attribute, replacement))
            run_experiment(cfg)  # warm-up
            ours, base = [], []
            for _ in range(args.repeats):
                for runs, run_cfg in ((base, finetuning), (ours, cfg)):
                    t0 = time.perf_counter()
                    run_experiment(run_cfg)
                    runs.append(time.perf_counter() - t0)
        a, b = statistics.median(ours), statistics.median(base)
        print(
            f"{name:<37} {a:5.2f}s  finetuning {b:5.2f}s  {pair_ratio(ours, base)}; "
            f"MLP 64-{'-'.join(map(str, hidden))}; {args.epochs} epochs x 5 tasks, {args.repeats} pairs)",
            flush=True,
        )


if __name__ == "__main__":
    main()
