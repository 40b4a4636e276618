"""Static checks of a sweep file: every configuration the searcher can produce must be a valid
experiment. Finite entries (choice, grid, variants) are enumerated, continuous ones are tried at
both ends; each configuration goes through :func:`parse_experiment`, the same code path a trial
uses. Problems point at the sweep-file field that causes them (a search entry, a variant, ...)."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Mapping
from itertools import product
from typing import Any

from clsweep import registry
from clsweep.common import EXPERIMENT_COMPONENTS, HAT_METRICS, METRICS
from clsweep.spec.errors import Problem, SpecError
from clsweep.spec.experiment import (
    DEFAULT_HEADS,
    ExperimentConfig,
    FixedSchedule,
    PlateauSchedule,
    TrainConfig,
    parse_experiment,
)
from clsweep.spec.search_space import Param, get_path, set_path
from clsweep.spec.sweep_file import Objective, SweepFile, merge_variants

_AXIS = re.compile(r"^[A-Za-z0-9_]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOP_SEARCHABLE = ("paradigm", "evaluate_future")
MAX_GRID_POINTS = 100_000
"""A grid searcher enumerates every point up front: more than this is not a sweep anyone runs."""
MAX_SEEDS = 10_000
FULL_LIMIT = 2000
"""Up to this many combinations of finite values are checked one by one; above, each value is
checked on its own (with the structural entries enumerated)."""


def check_name(shape: SweepFile, problems: list[Problem]) -> None:
    if not _NAME.match(shape.name):
        problems.append(Problem(("name",), f"{shape.name!r}: use letters, digits, '_', '-' or '.' (it names a folder)"))


def check_seeds(shape: SweepFile, problems: list[Problem]) -> tuple[int, ...]:
    """The seeds every configuration runs with: a count from ``experiment.seed`` on, or a list."""
    if isinstance(shape.seeds, int):
        if shape.seeds < 1:
            problems.append(Problem(("seeds",), "the number of seeds must be >= 1"))
        if shape.seeds > MAX_SEEDS:
            problems.append(Problem(("seeds",), f"{shape.seeds} seeds per configuration; at most {MAX_SEEDS}"))
            return (0,)
        base = shape.experiment.get("seed", 0)
        return tuple(int(base) + i for i in range(max(1, shape.seeds))) if isinstance(base, int) else (0,)
    seeds = tuple(shape.seeds)
    if len(seeds) > MAX_SEEDS:
        problems.append(Problem(("seeds",), f"{len(seeds)} seeds per configuration; at most {MAX_SEEDS}"))
    if not seeds:
        problems.append(Problem(("seeds",), "the list of seeds is empty"))
    elif len(set(seeds)) != len(seeds):
        problems.append(Problem(("seeds",), "seeds are repeated"))
    return seeds


def check_search(shape: SweepFile, problems: list[Problem]) -> tuple[Param, ...]:
    """Paths, conditions and searcher compatibility of the ``search`` entries."""
    components = EXPERIMENT_COMPONENTS
    params: list[Param] = []
    for key, entry in shape.search.items():
        loc = ("search", key)
        parts = key.split(".")
        head = parts[1] if len(parts) > 1 else ""
        if parts[0] != "experiment" or not head:
            problems.append(Problem(loc, "a search path starts with `experiment.` (e.g. experiment.train.lr)"))
        elif head == "seed":
            problems.append(Problem(loc, "the seed is not searched: use `seeds:` (repeats per configuration)"))
        elif head in ("device", "imports"):
            problems.append(Problem(loc, f"`{head}` cannot be searched"))
        elif head in _TOP_SEARCHABLE:
            if len(parts) != 2:
                problems.append(Problem(loc, f"experiment.{head} has no sub-keys"))
        elif head == "train":
            if parts[2:3] == ["schedule"]:
                knobs = sorted({k for m in (FixedSchedule, PlateauSchedule) for k in m.model_fields})
                if len(parts) != 4 or parts[3] not in knobs:
                    problems.append(Problem(loc, f"expected experiment.train.schedule.<{'|'.join(knobs)}>"))
            elif len(parts) != 3 or parts[2] not in TrainConfig.model_fields:
                known = ", ".join(TrainConfig.model_fields)
                problems.append(Problem(loc, f"unknown training parameter; known: {known}"))
        elif head in components:
            if len(parts) != 3:
                problems.append(Problem(loc, f"expected experiment.{head}.<parameter>"))
            elif parts[2] != "name" and not any(parts[2] in e.params.model_fields for e in registry.entries(head)):
                problems.append(Problem(loc, f"unknown {head} parameter {parts[2]!r}: no registered {head} has it"))
        else:
            problems.append(Problem(loc, f"unknown experiment key {head!r}"))
        params.append(Param.from_entry(key, entry))

    grid_searcher = shape.searcher.name == "grid"
    names = [p.name for p in params]
    for i, p in enumerate(params):
        if not grid_searcher and p.kind == "grid" and p.when:
            problems.append(Problem(("search", p.name, "when"),
                                    "under searcher tpe/random a grid entry runs for every sampled configuration "
                                    "and cannot be conditional (use choice)"))
        for path, values in p.when:
            where: tuple[object, ...] = ("search", p.name, "when", path)
            if path.startswith("variants."):
                axis = path.split(".", 1)[1]
                if axis not in shape.variants:
                    problems.append(Problem(where, f"unknown variant axis {axis!r}"))
                elif unknown := [v for v in values if v not in shape.variants[axis]]:
                    problems.append(Problem(where, f"unknown variant label(s) {unknown}; known: {list(shape.variants[axis])}"))
            elif not path.startswith("experiment."):
                problems.append(Problem(where, "a condition names `experiment.<path>` or `variants.<axis>`"))
            elif path in names:
                j = names.index(path)
                if j >= i:
                    problems.append(Problem(where, f"conditions may only use entries listed before; move {p.name} below {path}"))
                elif not params[j].finite:
                    problems.append(Problem(where, f"a condition cannot depend on a continuous entry ({params[j].kind})"))
                elif not grid_searcher and params[j].kind == "grid":
                    problems.append(Problem(where, "under searcher tpe/random grid entries are repeated for every "
                                                 "configuration; a condition cannot depend on one (use choice)"))
    sampled = bool(shape.variants) or any(p.kind != "grid" for p in params) or bool(shape.scheduler.mutate)
    if not grid_searcher and not sampled and shape.searcher.samples not in (None, 1):
        problems.append(Problem(("searcher", "samples"), "nothing is sampled (no search entry other than grid ones, "
                                                         "no variants): every sample would repeat the same trials"))
    if grid_searcher:
        for p in params:
            if not p.finite:
                problems.append(Problem(("search", p.name), f"searcher grid needs finite values (grid or choice), got {p.kind}"))
        if shape.searcher.samples not in (None, 1):
            problems.append(Problem(("searcher", "samples"),
                                    "the grid searcher runs every grid point once per seed; remove `samples`"))
    return tuple(params)


def check_objectives(shape: SweepFile, problems: list[Problem]) -> tuple[Objective, ...]:
    """Objective metrics and modes, the protocol and the scheduler settings."""
    single = not isinstance(shape.objective, list)
    given = shape.objectives_given
    if not 1 <= len(given) <= 2:
        problems.append(Problem(("objective",), f"give one objective or two (a Pareto front), got {len(given)}"))
    protocol = shape.protocol
    out = []
    for i, obj in enumerate(given):
        loc: tuple[object, ...] = ("objective",) if single else ("objective", i)
        if obj.metric not in METRICS:
            problems.append(Problem(loc + ("metric",), f"unknown metric {obj.metric!r}; known: {', '.join(METRICS)}"))
            continue
        mode = obj.mode or METRICS[obj.metric]
        if mode is None:
            problems.append(Problem(loc + ("mode",), f"say whether {obj.metric} is better high or low: mode: max or min"))
            continue
        if obj.metric.endswith("_test") and protocol.name != "test":
            problems.append(Problem(loc + ("metric",),
                                    f"{obj.metric} reads the test split; hyperparameters may only be chosen on it with "
                                    "`protocol: {name: test, leaky: true}` (use the _val metric)"))
        out.append(Objective(metric=obj.metric, mode="max" if mode == "max" else "min"))
    if len({o.metric for o in out}) != len(out):
        problems.append(Problem(("objective",), "the two objectives are the same metric"))
    if protocol.name == "test" and not protocol.leaky:
        problems.append(Problem(("protocol", "leaky"), "protocol test chooses hyperparameters on the test split; "
                                                       "confirm with `leaky: true` (or use protocol validation)"))
    if protocol.leaky and protocol.name != "test":
        problems.append(Problem(("protocol", "leaky"), "leaky applies to protocol test only"))
    if protocol.name == "first_k" and protocol.k is None:
        problems.append(Problem(("protocol", "k"), "protocol first_k needs k (the number of tasks trials run)"))
    if protocol.k is not None and protocol.name != "first_k":
        problems.append(Problem(("protocol", "k"), "k applies to protocol first_k only"))
    if shape.confirm is not None and len(given) > 1:
        problems.append(Problem(("confirm",), "a confirmation stage ranks configurations on one objective; "
                                              "with two (a Pareto front) leave confirm out"))
    if shape.confirm is not None and protocol.name == "first_task":
        problems.append(Problem(("confirm",), "protocol first_task has its own later stage (the full stream "
                                              "once per seed); leave confirm out"))
    if protocol.name == "first_task" and len(given) > 1:
        problems.append(Problem(("protocol", "name"), "protocol first_task chooses one configuration: give "
                                                      "one objective"))
    sched = shape.scheduler
    if len(given) > 1 and sched.name != "none":
        problems.append(Problem(("scheduler", "name"), "early stopping is not available with two objectives: a trial "
                                                       "stopped early has no comparable Pareto values; use none"))
    if sched.name != "asha" and "reduction_factor" in sched.model_fields_set:
        problems.append(Problem(("scheduler", "reduction_factor"), "applies to scheduler asha only"))
    if sched.name != "median" and "min_samples_required" in sched.model_fields_set:
        problems.append(Problem(("scheduler", "min_samples_required"), "applies to scheduler median only"))
    return tuple(out)


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

    def walk(i: int, config: dict[str, Any], raw: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
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
    return Problem(("search", name), f"{lead}{param!r} is not a parameter of {kind} {comp!r} (it belongs to {names}); "
                                     f"search it only for those: `when: {{experiment.{kind}.name: [{names}]}}`")


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
            depth = next((d for d in range(len(tail), 0, -1) if get_path(partial, [str(t) for t in tail[:d]]) is not None), 0)
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
    bad_axes = [Problem(("variants", axis), "an axis name uses letters, digits and '_'")
                 for axis in shape.variants if not _AXIS.match(axis)]
    bad_axes += [Problem(("variants", axis), "no variants given") for axis, o in shape.variants.items() if not o]
    if bad_axes:
        problems.extend(bad_axes)
        return 0, ()
    referenced = {path for p in params for path, _ in p.when}
    structural = {p.name for p in params if p.finite and (p.name in referenced or p.name.endswith(".name")
                                                          or p.name == "experiment.paradigm")}
    upper = math.prod(len(o) for o in shape.variants.values()) * math.prod(len(p.values) for p in params if p.finite)
    if shape.searcher.name == "grid" and upper > MAX_GRID_POINTS:
        problems.append(Problem(("search",), f"the grid has up to {upper} points; at most {MAX_GRID_POINTS} "
                                             "(sample with tpe or random instead)"))
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
            prob = Problem(("protocol", "k"), f"k={protocol.k} but the benchmark has only {cfg.num_tasks} tasks")
            found.setdefault((prob.path, prob.message), prob)
        first = protocol.name == "first_task"
        tasks.append(1 if first else min(protocol.k, cfg.num_tasks) if protocol.name == "first_k" and protocol.k
                     else cfg.num_tasks)
        if "hat_family" not in cfg.algorithm.entry.tags:
            for i, obj in enumerate(objectives):
                if obj.metric in HAT_METRICS:
                    loc: tuple[object, ...] = ("objective", "metric") if len(objectives) == 1 else ("objective", i, "metric")
                    prob = Problem(loc, f"{obj.metric} exists for HAT-family algorithms only, not {cfg.algorithm.name!r}")
                    found.setdefault((prob.path, prob.message), prob)
    for p in params:
        if p.name not in active:
            prob = Problem(("search", p.name, "when"), "this condition never holds, so the entry is never sampled")
            found.setdefault((prob.path, prob.message), prob)
    problems.extend(found.values())
    max_tasks = max(tasks, default=0)
    if shape.scheduler.name not in ("none", "pbt") and tasks and shape.scheduler.grace_period > min(tasks):
        problems.append(Problem(("scheduler", "grace_period"),
                                f"{shape.scheduler.grace_period} tasks, but trials run only {min(tasks)}: nothing to stop"))
    grid: tuple[dict[str, Any], ...] = ()
    if shape.searcher.name == "grid" and not problems:
        all_finite = {p.name for p in params}
        grid = tuple(c for c, _ in (points if full == all_finite else expand(shape, params, all_finite)))
    return max_tasks, grid
