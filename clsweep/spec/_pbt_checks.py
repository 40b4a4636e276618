"""Checks of the ``current_task`` protocol and the ``pbt`` scheduler (population-based training
with the task as its time unit).

PBT copies a top trial's task checkpoint into a bottom trial at a task boundary and perturbs the
knobs listed in ``scheduler.mutate``. Only knobs that can change between two tasks of one stream
may be listed: how the next task is trained (``experiment.train.*``, the schedule's knobs
included) and the algorithm's numeric knobs (regularisation strengths, ``s_max``, ...). What the
copied weights or the past tasks already fix cannot change halfway: the backbone and heads (shape,
name), the algorithm's name and its categorical knobs (HAT's ``init_mode`` and ``aggregation``
shaped the past tasks' embeddings and masks), the benchmark, the paradigm and the seed.

The population is ``searcher.samples`` random draws (``searcher: random``): PBT proposes the
later values itself, so a model-based sampler (TPE) would learn from trials whose weights and
knobs were replaced halfway; it is refused.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from clsweep import registry
from clsweep.spec.errors import Problem
from clsweep.spec.experiment import FixedSchedule, PlateauSchedule, TrainConfig
from clsweep.spec.search_space import Param
from clsweep.spec.sweep_file import SweepFile

__all__ = ["PBT_ONLY", "check_pbt", "fixed_reason"]

PBT_ONLY = ("quantile", "resample_probability", "mutate")
"""Scheduler fields that apply to pbt only (left out of the fingerprint of other sweeps)."""

_FIXED = {
    "seed": "the seed is fixed for a whole stream (use `seeds:`)",
    "backbone": "the backbone's shape and name are in the copied weights",
    "heads": "the heads are in the copied weights",
    "benchmark": "the benchmark is the task stream itself",
    "paradigm": "the paradigm decides how every task was trained and evaluated",
    "evaluate_future": "evaluation of unseen tasks is set for the whole stream",
    "device": "the device is Ray's choice",
    "imports": "plugins are loaded once per trial",
}


def _numeric(annotation: Any) -> bool:
    """int or float (optionally None), not bool or a literal."""
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    kinds = [a for a in args if a is not type(None)]
    return bool(kinds) and all(a in (int, float) for a in kinds)


def fixed_reason(path: str) -> str | None:
    """Why the knob at dotted ``path`` cannot change between tasks; None when it may."""
    parts = path.split(".")
    head = parts[1] if len(parts) > 1 and parts[0] == "experiment" else ""
    if not head:
        return "a mutated path starts with `experiment.` (e.g. experiment.train.lr)"
    if head in _FIXED:
        return f"{_FIXED[head]}: it cannot change mid-stream"
    if head == "train":
        if parts[2:3] == ["schedule"]:
            knobs = sorted({k for m in (FixedSchedule, PlateauSchedule) for k in m.model_fields} - {"name"})
            if len(parts) == 4 and parts[3] in knobs:
                return None
            return f"expected experiment.train.schedule.<{'|'.join(knobs)}> (the schedule kind stays)"
        if len(parts) == 3 and parts[2] in TrainConfig.model_fields:
            return None
        return f"unknown training parameter; known: {', '.join(TrainConfig.model_fields)}"
    if head == "algorithm":
        if len(parts) != 3:
            return "expected experiment.algorithm.<parameter>"
        if parts[2] == "name":
            return "the algorithm's name cannot change mid-stream: the copied state is that algorithm's"
        owners = [e for e in registry.entries("algorithm") if parts[2] in e.params.model_fields]
        if not owners:
            return f"unknown algorithm parameter {parts[2]!r}: no registered algorithm has it"
        if not all(_numeric(e.params.model_fields[parts[2]].annotation) for e in owners):
            return (
                f"{parts[2]!r} is not a numeric knob: it fixed how the past tasks were learned "
                "(e.g. HAT's init_mode) and cannot change mid-stream"
            )
        return None
    return f"unknown experiment key {head!r}"


def check_pbt(shape: SweepFile, params: tuple[Param, ...], problems: list[Problem]) -> tuple[Param, ...]:
    """Protocol and scheduler agree, the mutations are allowed; returns the mutated knobs not
    already in ``search`` as parameters (the population's first values are drawn from them)."""
    sched, protocol = shape.scheduler, shape.protocol
    pbt = sched.name == "pbt"
    if protocol.name == "current_task" and not pbt:
        problems.append(
            Problem(
                ("protocol", "name"),
                "protocol current_task is population-based training over "
                "tasks: use `scheduler: {name: pbt, mutate: {...}}`",
            )
        )
    if not pbt:
        for key in PBT_ONLY:
            if key in sched.model_fields_set:
                problems.append(Problem(("scheduler", key), "applies to scheduler pbt only"))
        return ()
    if protocol.name != "current_task":
        problems.append(
            Problem(
                ("scheduler", "name"),
                "scheduler pbt copies trials at task boundaries on the "
                "validation splits seen so far: use "
                "`protocol: {name: current_task}`",
            )
        )
    if "grace_period" in sched.model_fields_set:
        problems.append(Problem(("scheduler", "grace_period"), "applies to schedulers asha and median only"))
    if shape.searcher.name != "random":
        problems.append(
            Problem(
                ("searcher", "name"),
                f"searcher {shape.searcher.name} with scheduler pbt: PBT proposes new values itself "
                "(it perturbs or resamples the copied trial's knobs), and Optuna cannot be told "
                "that a trial's weights were copied; the population is drawn at random: "
                "use `searcher: {name: random, samples: N}`",
            )
        )
    if shape.searcher.samples is not None and shape.searcher.samples < 2:
        problems.append(Problem(("searcher", "samples"), "a population needs at least 2 trials"))
    if not sched.mutate:
        problems.append(Problem(("scheduler", "mutate"), "scheduler pbt needs at least one knob to mutate"))
    searched = {p.name for p in params}
    out: list[Param] = []
    for key, entry in sched.mutate.items():
        loc: tuple[object, ...] = ("scheduler", "mutate", key)
        reason = fixed_reason(key)
        if reason:
            problems.append(Problem(loc, reason))
            continue
        if entry.when:
            problems.append(Problem(loc + ("when",), "a mutated knob cannot be conditional"))
            continue
        if entry.kind == "grid":
            problems.append(Problem(loc, "a mutated knob is sampled, not gridded: use choice"))
            continue
        if key not in searched:
            out.append(Param.from_entry(key, entry))
    for p in params:
        if p.kind == "grid":
            problems.append(
                Problem(
                    ("search", p.name),
                    "under scheduler pbt every search entry is sampled "
                    "(the population is random draws): use choice",
                )
            )
    return tuple(out)
