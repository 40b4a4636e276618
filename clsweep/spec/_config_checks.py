"""Checks of every configuration a sweep's searcher can produce: finite entries (choice, grid,
variants) are enumerated, continuous ones tried at both ends, and each configuration goes
through :func:`parse_experiment`, the same code path a trial uses. Problems point at the
sweep-file field that causes them (a search entry, a variant, ...)."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Mapping
from itertools import product
from typing import Any

from clsweep import registry
from clsweep.common import EXPERIMENT_COMPONENTS, HAT_METRICS
from clsweep.spec.errors import Problem, SpecError
from clsweep.spec.experiment import DEFAULT_HEADS, ExperimentConfig, parse_experiment
from clsweep.spec.search_space import Param, get_path, set_path
from clsweep.spec.sweep_file import Objective, SweepFile, merge_variants

__all__ = ["FULL_LIMIT", "MAX_GRID_POINTS", "check_configurations", "condition_context", "expand"]

_AXIS = re.compile(r"^[A-Za-z0-9_]+$")
MAX_GRID_POINTS = 100_000
"""A grid searcher enumerates every point up front: more than this is not a sweep anyone runs."""
FULL_LIMIT = 2000
"""Up to this many combinations of finite values are checked one by one; above, each value is
checked on its own (with the structural entries enumerated)."""


def condition_context(config: Mapping[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted path -> value for ``when`` conditions (paradigm and heads default as in the config)."""

    class _Lookup(dict):  # type: ignore[type-arg]
        def get(self, path: str, default: Any = None) -> Any:  # type: ignore[override]
            if path.startswith("variants."):
                return config.get(path, default)
            parts = path.split(".")[1:]
            value = get_path(raw, parts)
            if value is None and parts == ["paradigm"]:
                return "til"
            if value is None and parts == ["heads", "name"]:
                return DEFAULT_HEADS.get(raw.get("paradigm", "til"), "til")
            return default if value is None else value

    return _Lookup()


def expand(
    shape: SweepFile, params: tuple[Param, ...], full: set[str]
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Every (config, experiment mapping) combination: variant labels x values of the entries in
    ``full`` (others at their first value), following ``when`` conditions in file order."""
    axes = list(shape.variants.items())

    def walk(
        i: int, config: dict[str, Any], raw: dict[str, Any]
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        if i == len(params):
            yield config, raw
            return
        p = params[i]
        if not p.active(condition_context(config, raw)):
            yield from walk(i + 1, config, raw)
            return
        values = p.bounds() if p.name in full else p.bounds()[:1]
        for value in values:
            nxt = copy.deepcopy(raw)
            set_path(nxt, p.name.split(".")[1:], value)
            yield from walk(i + 1, {**config, p.name: value}, nxt)

    for labels in product(*(list(options) for _, options in axes)):
        config = {f"variants.{axis}": label for (axis, _), label in zip(axes, labels, strict=True)}
        yield from walk(0, config, merge_variants(shape.experiment, shape.variants, config))


def _knob_problem(name: str, raw: Mapping[str, Any]) -> Problem | None:
    """A component parameter searched while the chosen component does not have it."""
    parts = name.split(".")
    if len(parts) != 3 or parts[1] not in EXPERIMENT_COMPONENTS or parts[2] == "name":
        return None
    kind, param = parts[1], parts[2]
    comp = get_path(raw, [kind, "name"])
    if kind == "heads" and comp is None:
        comp = DEFAULT_HEADS.get(raw.get("paradigm", "til"), "til")
    try:
        entry = registry.get(kind, str(comp))
    except registry.RegistryError:
        return None  # parse_experiment reports the unknown name
    if param in entry.params.model_fields:
        return None
    owners = [e for e in registry.entries(kind) if param in e.params.model_fields]
    names = ", ".join(e.name for e in owners)
    hat = owners and all(e.tags & {"hat_family", "hat_mask"} for e in owners)
    lead = f"a HAT knob on a non-HAT {kind}: " if hat else ""
    return Problem(
        ("search", name),
        f"{lead}{param!r} is not a parameter of {kind} {comp!r} (it belongs to {names}); "
        f"search it only for those: `when: {{experiment.{kind}.name: [{names}]}}`",
    )


def _map(problem: Problem, config: Mapping[str, Any], variants: Mapping[str, Any]) -> Problem:
    """Point a problem of a trial's experiment at the sweep-file field that causes it."""
    dotted = ".".join(str(p) for p in problem.path)
    if dotted in config:
        return Problem(("search", dotted), f"value {config[dotted]!r}: {problem.message}")
    tail = list(problem.path[1:])
    for key, label in reversed(list(config.items())):
        if key.startswith("variants."):
            axis = key.split(".", 1)[1]
            partial = variants[axis][label]
            depth = next(
                (
                    d
                    for d in range(len(tail), 0, -1)
                    if get_path(partial, [str(t) for t in tail[:d]]) is not None
                ),
                0,
            )
            if depth:
                return Problem(("variants", axis, label, *tail), problem.message)
    where = ", ".join(f"{k}={v}" for k, v in config.items() if k.startswith("variants."))
    return Problem(problem.path, problem.message + (f" (with {where})" if where else ""))


def check_configurations(
    shape: SweepFile,
    params: tuple[Param, ...],
    objectives: tuple[Objective, ...],
    seeds: tuple[int, ...],
    problems: list[Problem],
) -> tuple[int, tuple[dict[str, Any], ...]]:
    """Parse every configuration; returns (most tasks of a trial, grid points for searcher grid)."""
    bad_axes = [
        Problem(("variants", axis), "an axis name uses letters, digits and '_'")
        for axis in shape.variants
        if not _AXIS.match(axis)
    ]
    bad_axes += [
        Problem(("variants", axis), "no variants given") for axis, o in shape.variants.items() if not o
    ]
    if bad_axes:
        problems.extend(bad_axes)
        return 0, ()
    referenced = {path for p in params for path, _ in p.when}
    structural = {
        p.name
        for p in params
        if p.finite and (p.name in referenced or p.name.endswith(".name") or p.name == "experiment.paradigm")
    }
    upper = math.prod(len(o) for o in shape.variants.values()) * math.prod(
        len(p.values) for p in params if p.finite
    )
    if shape.searcher.name == "grid" and upper > MAX_GRID_POINTS:
        problems.append(
            Problem(
                ("search",),
                f"the grid has up to {upper} points; at most {MAX_GRID_POINTS} "
                "(sample with tpe or random instead)",
            )
        )
        return 0, ()
    full = {p.name for p in params if p.finite} if upper <= FULL_LIMIT else structural
    found: dict[tuple[Any, str], Problem] = {}
    active: set[str] = set()
    tasks: list[int] = []
    protocol = shape.protocol

    def check(config: dict[str, Any], raw: dict[str, Any]) -> ExperimentConfig | None:
        knobs = [k for k in (_knob_problem(n, raw) for n in config) if k]
        for k in knobs:
            found.setdefault((k.path, k.message), k)
        trial = copy.deepcopy(raw)
        trial["seed"] = seeds[0] if seeds else 0
        try:
            return parse_experiment(trial, prefix=("experiment",))
        except SpecError as err:
            for prob in err.problems:
                if knobs and prob.message == "unknown key":
                    continue
                mapped = _map(prob, config, shape.variants)
                found.setdefault((mapped.path, mapped.message), mapped)
        return None

    points = list(expand(shape, params, full))
    for config, raw in points:
        active.update(config)
        cfg = check(config, raw)
        for p in params:  # the other values of the entries not enumerated, and the upper bounds
            if p.name in config and (p.name not in full or not p.finite):
                for value in p.bounds():
                    if value != config[p.name]:
                        other = copy.deepcopy(raw)
                        set_path(other, p.name.split(".")[1:], value)
                        check({**config, p.name: value}, other)
        if cfg is None:
            continue
        if protocol.name == "first_k" and protocol.k and protocol.k > cfg.num_tasks:
            prob = Problem(
                ("protocol", "k"), f"k={protocol.k} but the benchmark has only {cfg.num_tasks} tasks"
            )
            found.setdefault((prob.path, prob.message), prob)
        first = protocol.name == "first_task"
        tasks.append(
            1
            if first
            else min(protocol.k, cfg.num_tasks)
            if protocol.name == "first_k" and protocol.k
            else cfg.num_tasks
        )
        if "hat_family" not in cfg.algorithm.entry.tags:
            for i, obj in enumerate(objectives):
                if obj.metric in HAT_METRICS:
                    loc: tuple[object, ...] = (
                        ("objective", "metric") if len(objectives) == 1 else ("objective", i, "metric")
                    )
                    prob = Problem(
                        loc, f"{obj.metric} exists for HAT-family algorithms only, not {cfg.algorithm.name!r}"
                    )
                    found.setdefault((prob.path, prob.message), prob)
    for p in params:
        if p.name not in active:
            prob = Problem(
                ("search", p.name, "when"), "this condition never holds, so the entry is never sampled"
            )
            found.setdefault((prob.path, prob.message), prob)
    problems.extend(found.values())
    max_tasks = max(tasks, default=0)
    if shape.scheduler.name not in ("none", "pbt") and tasks and shape.scheduler.grace_period > min(tasks):
        problems.append(
            Problem(
                ("scheduler", "grace_period"),
                f"{shape.scheduler.grace_period} tasks, but trials run only {min(tasks)}: nothing to stop",
            )
        )
    grid: tuple[dict[str, Any], ...] = ()
    if shape.searcher.name == "grid" and not problems:
        all_finite = {p.name for p in params}
        grid = tuple(c for c, _ in (points if full == all_finite else expand(shape, params, all_finite)))
    return max_tasks, grid
