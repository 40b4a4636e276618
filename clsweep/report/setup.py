"""What a sweep was: objective, protocol, searcher, scheduler, budget and searched parameters.

Read from the sweep's plan, which the parent run stores as ``plan.json`` (the same
:class:`~clsweep.spec.sweep.SweepPlan` the sweep ran, rebuilt from its payload without
re-validating every configuration).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clsweep.common import METRICS, versions
from clsweep.spec.search_space import Param
from clsweep.spec.sweep import SweepPlan

__all__ = ["Setup", "read_setup", "recorded_versions", "seed_scope", "short_name"]

PROTOCOLS = {
    "validation": "hyperparameters chosen on the validation split of every task (carved from the training "
    "data); the test splits were never used to choose anything (a plateau schedule reads only the current "
    "task's validation split)",
    "first_k": "hyperparameters chosen on the validation splits of the first {k} tasks only (trials ran {k} "
    "tasks); the later tasks stayed unseen by the search",
    "first_task": "first-task protocol (Lee et al. 2024): hyperparameters chosen on the validation split of "
    "task 1 only (search trials ran 1 task); the chosen configuration then ran the whole stream once per seed "
    "(the final runs), whose numbers are the ones reported",
    "test": "LEAKY: the objective reads the test split, so the best configuration's test numbers are optimistic",
    "current_task": "hyperparameters tuned along the stream by population-based training: at each task "
    "boundary the weaker trials copied a stronger trial's checkpoint, judged on the validation splits of the "
    "tasks seen so far; later tasks and the test splits were never used to choose",
}


@dataclass
class Setup:
    plan: SweepPlan
    objectives: list[tuple[str, str]]
    protocol: str
    protocol_note: str
    leaky: bool
    searcher: dict[str, Any]
    scheduler: dict[str, Any]
    seeds: list[int]
    budget: int | None
    resources: dict[str, Any]
    params: list[Param]
    """The search entries, then the variant axes (kind ``variant``)."""
    variants: dict[str, list[str]]
    description: str = ""
    experiment: dict[str, Any] = field(default_factory=dict)

    def mode(self, metric: str) -> str | None:
        """The better direction of a metric: the objective's mode, else the known default."""
        for m, mode in self.objectives:
            if m == metric:
                return mode
        return METRICS.get(metric)


def short_name(name: str) -> str:
    """``experiment.algorithm.s_max`` -> ``algorithm.s_max``; ``variants.method`` -> ``method``."""
    return name.removeprefix("experiment.").removeprefix("variants.")


def seed_scope(experiment: Mapping[str, Any]) -> str:
    """What the trial seed varied, from the experiment mapping: always the initialisation and the batch
    shuffling; also the task sequence and the data splits when ``benchmark.seed`` is ``trial``."""
    bench = experiment.get("benchmark")
    bench_seed = bench.get("seed", 0) if isinstance(bench, Mapping) else 0
    if bench_seed == "trial":
        return (
            "initialisation, shuffling, task order/permutations and validation split "
            "(and the test hold-out of sources without an official one) (benchmark.seed: trial)"
        )
    return f"initialisation and shuffling (benchmark fixed: benchmark.seed {bench_seed})"


def read_setup(plan_payload: Mapping[str, Any]) -> Setup:
    """The setup of the sweep whose plan payload (``SweepPlan.payload()``) the parent run stores."""
    plan = SweepPlan.from_payload(plan_payload)
    protocol = plan.protocol
    axes = [p for p in plan.searched_params if p.kind == "variant"]
    return Setup(
        plan=plan,
        objectives=[(o.metric, str(o.mode)) for o in plan.objectives],
        protocol=protocol.name + (f":{protocol.k}" if protocol.name == "first_k" else ""),
        protocol_note=PROTOCOLS[protocol.name].format(k=protocol.k),
        leaky=protocol.name == "test",
        searcher=plan.searcher.model_dump(),
        scheduler=plan.scheduler.model_dump(),
        seeds=list(plan.seeds),
        budget=plan.num_trials,
        resources=plan.resources.model_dump(),
        params=[*plan.params, *axes],
        variants={axis: list(options) for axis, options in plan.variants.items()},
        description=plan.description,
        experiment=dict(plan.experiment),
    )


def recorded_versions(parent_tags: Mapping[str, str]) -> dict[str, Any]:
    """Library versions: those the sweep recorded (parent tag ``clsweep.versions``, JSON), and those
    of the environment writing the report."""
    recorded = None
    if parent_tags.get("clsweep.versions"):
        try:
            recorded = json.loads(parent_tags["clsweep.versions"])
        except json.JSONDecodeError:
            recorded = None
    return {"sweep": recorded, "report": {k: v for k, v in versions().items() if v is not None}}
