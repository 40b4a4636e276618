"""Static checks of a sweep file: every configuration the searcher can produce must be a valid
experiment. Finite entries (choice, grid, variants) are enumerated, continuous ones are tried at
both ends; each configuration goes through :func:`parse_experiment`, the same code path a trial
uses. Problems point at the sweep-file field that causes them (a search entry, a variant, ...)."""

from __future__ import annotations

import re

from clsweep import registry
from clsweep.common import EXPERIMENT_COMPONENTS, METRICS
from clsweep.spec.errors import Problem
from clsweep.spec.experiment import (
    FixedSchedule,
    PlateauSchedule,
    TrainConfig,
)
from clsweep.spec.search_space import Param
from clsweep.spec.sweep_file import Objective, SweepFile

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOP_SEARCHABLE = ("paradigm", "evaluate_future")
MAX_SEEDS = 10_000


def check_name(shape: SweepFile, problems: list[Problem]) -> None:
    if not _NAME.match(shape.name):
        problems.append(
            Problem(("name",), f"{shape.name!r}: use letters, digits, '_', '-' or '.' (it names a folder)")
        )


def check_seeds(shape: SweepFile, problems: list[Problem]) -> tuple[int, ...]:
    """The seeds every configuration runs with: a count from ``experiment.seed`` on, or a list."""
    if isinstance(shape.seeds, int):
        if shape.seeds < 1:
            problems.append(Problem(("seeds",), "the number of seeds must be >= 1"))
        if shape.seeds > MAX_SEEDS:
            problems.append(
                Problem(("seeds",), f"{shape.seeds} seeds per configuration; at most {MAX_SEEDS}")
            )
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


def _import_plugins(shape: SweepFile) -> None:
    """The experiment's plugins (``imports:``) register their components before search paths are
    checked against the registry; one that cannot be imported is reported per configuration."""
    imports = shape.experiment.get("imports")
    for module in imports if isinstance(imports, list) else []:
        try:
            registry.import_plugins([str(module)])
        except Exception:  # noqa: BLE001, S112 - parse_experiment names the field and the error
            continue


def check_search(shape: SweepFile, problems: list[Problem]) -> tuple[Param, ...]:
    """Paths, conditions and searcher compatibility of the ``search`` entries."""
    _import_plugins(shape)
    components = EXPERIMENT_COMPONENTS
    params: list[Param] = []
    for key, entry in shape.search.items():
        loc = ("search", key)
        parts = key.split(".")
        head = parts[1] if len(parts) > 1 else ""
        if parts[0] != "experiment" or not head:
            problems.append(
                Problem(loc, "a search path starts with `experiment.` (e.g. experiment.train.lr)")
            )
        elif head == "seed":
            problems.append(
                Problem(loc, "the seed is not searched: use `seeds:` (repeats per configuration)")
            )
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
            elif parts[2] != "name" and not any(
                parts[2] in e.params.model_fields for e in registry.entries(head)
            ):
                problems.append(
                    Problem(loc, f"unknown {head} parameter {parts[2]!r}: no registered {head} has it")
                )
        else:
            problems.append(Problem(loc, f"unknown experiment key {head!r}"))
        params.append(Param.from_entry(key, entry))

    grid_searcher = shape.searcher.name == "grid"
    names = [p.name for p in params]
    for i, p in enumerate(params):
        if not grid_searcher and p.kind == "grid" and p.when:
            problems.append(
                Problem(
                    ("search", p.name, "when"),
                    "under searcher tpe/random a grid entry runs for every sampled configuration "
                    "and cannot be conditional (use choice)",
                )
            )
        for path, values in p.when:
            where: tuple[object, ...] = ("search", p.name, "when", path)
            if path.startswith("variants."):
                axis = path.split(".", 1)[1]
                if axis not in shape.variants:
                    problems.append(Problem(where, f"unknown variant axis {axis!r}"))
                elif unknown := [v for v in values if v not in shape.variants[axis]]:
                    problems.append(
                        Problem(
                            where, f"unknown variant label(s) {unknown}; known: {list(shape.variants[axis])}"
                        )
                    )
            elif not path.startswith("experiment."):
                problems.append(Problem(where, "a condition names `experiment.<path>` or `variants.<axis>`"))
            elif path in names:
                j = names.index(path)
                if j >= i:
                    problems.append(
                        Problem(
                            where,
                            f"conditions may only use entries listed before; move {p.name} below {path}",
                        )
                    )
                elif not params[j].finite:
                    problems.append(
                        Problem(where, f"a condition cannot depend on a continuous entry ({params[j].kind})")
                    )
                elif not grid_searcher and params[j].kind == "grid":
                    problems.append(
                        Problem(
                            where,
                            "under searcher tpe/random grid entries are repeated for every "
                            "configuration; a condition cannot depend on one (use choice)",
                        )
                    )
    sampled = bool(shape.variants) or any(p.kind != "grid" for p in params) or bool(shape.scheduler.mutate)
    if not grid_searcher and not sampled and shape.searcher.samples not in (None, 1):
        problems.append(
            Problem(
                ("searcher", "samples"),
                "nothing is sampled (no search entry other than grid ones, "
                "no variants): every sample would repeat the same trials",
            )
        )
    if grid_searcher:
        for p in params:
            if not p.finite:
                problems.append(
                    Problem(
                        ("search", p.name),
                        f"searcher grid needs finite values (grid or choice), got {p.kind}",
                    )
                )
        if shape.searcher.samples not in (None, 1):
            problems.append(
                Problem(
                    ("searcher", "samples"),
                    "the grid searcher runs every grid point once per seed; remove `samples`",
                )
            )
    return tuple(params)


def check_objectives(shape: SweepFile, problems: list[Problem]) -> tuple[Objective, ...]:
    """Objective metrics and modes, the protocol and the scheduler settings."""
    single = not isinstance(shape.objective, list)
    given = shape.objectives_given
    if not 1 <= len(given) <= 2:
        problems.append(
            Problem(("objective",), f"give one objective or two (a Pareto front), got {len(given)}")
        )
    protocol = shape.protocol
    out = []
    for i, obj in enumerate(given):
        loc: tuple[object, ...] = ("objective",) if single else ("objective", i)
        if obj.metric not in METRICS:
            problems.append(
                Problem(loc + ("metric",), f"unknown metric {obj.metric!r}; known: {', '.join(METRICS)}")
            )
            continue
        mode = obj.mode or METRICS[obj.metric]
        if mode is None:
            problems.append(
                Problem(loc + ("mode",), f"say whether {obj.metric} is better high or low: mode: max or min")
            )
            continue
        if obj.metric.endswith("_test") and protocol.name != "test":
            problems.append(
                Problem(
                    loc + ("metric",),
                    f"{obj.metric} reads the test split; hyperparameters may only be chosen on it with "
                    "`protocol: {name: test, leaky: true}` (use the _val metric)",
                )
            )
        out.append(Objective(metric=obj.metric, mode="max" if mode == "max" else "min"))
    if len({o.metric for o in out}) != len(out):
        problems.append(Problem(("objective",), "the two objectives are the same metric"))
    if protocol.name == "test" and not protocol.leaky:
        problems.append(
            Problem(
                ("protocol", "leaky"),
                "protocol test chooses hyperparameters on the test split; "
                "confirm with `leaky: true` (or use protocol validation)",
            )
        )
    if protocol.leaky and protocol.name != "test":
        problems.append(Problem(("protocol", "leaky"), "leaky applies to protocol test only"))
    if protocol.name == "first_k" and protocol.k is None:
        problems.append(
            Problem(("protocol", "k"), "protocol first_k needs k (the number of tasks trials run)")
        )
    if protocol.k is not None and protocol.name != "first_k":
        problems.append(Problem(("protocol", "k"), "k applies to protocol first_k only"))
    if shape.confirm is not None and len(given) > 1:
        problems.append(
            Problem(
                ("confirm",),
                "a confirmation stage ranks configurations on one objective; "
                "with two (a Pareto front) leave confirm out",
            )
        )
    if shape.confirm is not None and protocol.name == "first_task":
        problems.append(
            Problem(
                ("confirm",),
                "protocol first_task has its own later stage (the full stream "
                "once per seed); leave confirm out",
            )
        )
    if protocol.name == "first_task" and len(given) > 1:
        problems.append(
            Problem(("protocol", "name"), "protocol first_task chooses one configuration: give one objective")
        )
    sched = shape.scheduler
    if len(given) > 1 and sched.name != "none":
        problems.append(
            Problem(
                ("scheduler", "name"),
                "early stopping is not available with two objectives: a trial "
                "stopped early has no comparable Pareto values; use none",
            )
        )
    if sched.name != "asha" and "reduction_factor" in sched.model_fields_set:
        problems.append(Problem(("scheduler", "reduction_factor"), "applies to scheduler asha only"))
    if sched.name != "median" and "min_samples_required" in sched.model_fields_set:
        problems.append(Problem(("scheduler", "min_samples_required"), "applies to scheduler median only"))
    return tuple(out)
