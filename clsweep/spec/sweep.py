"""The sweep file (``space.yaml``): one YAML document, validated completely before anything starts.

Example (every key but ``name`` and ``experiment`` is optional; the values shown are the defaults
unless marked)::

    name: hat_smax                        # folder name under the storage root, MLflow parent run
    experiment:                           # a complete experiment (see clsweep.spec.experiment)
      benchmark: {name: permuted, source: digits, num_tasks: 5}
      backbone: {name: hat_mask_mlp}
      algorithm: {name: hat}
    variants: {}                          # benchmark mode, see below
    search:                               # dotted path -> distribution (clsweep.spec.search_space)
      experiment.algorithm.s_max: {log_uniform: [25, 800]}          # (example)
    searcher: {name: tpe, samples: 10, seed: 0}     # tpe | random | grid
    scheduler: {name: none}               # none | asha | median; time axis = tasks completed
    objective: {metric: avg_acc_val, mode: max}     # or a list of two: Pareto front, no early stopping
    protocol: {name: validation}          # validation | first_k (k: N) | test (leaky: true)
    seeds: 1                              # a count (experiment.seed, +1, ...) or a list of seeds
    resources: {cpus: 1, gpus: 0, max_concurrent: null}
    retries: 1                            # re-runs of a failed trial from its last task checkpoint
    tracking: {uri: null, experiment: null}          # null: sqlite in the storage root; the sweep name
    cluster: {address: null, runtime_env: {}}

Benchmark mode: ``variants`` maps an axis name to labelled *partial experiments* laid over
``experiment``; a component given with another ``name`` replaces the base one whole::

    variants:
      method:
        finetuning: {algorithm: {name: finetuning}, backbone: {name: mlp}}
        hat: {algorithm: {name: hat}, backbone: {name: hat_mask_mlp}}

Under ``searcher: grid`` every axis is a grid dimension; under tpe/random an axis is a categorical
choice the sampler learns. Seeds repeat every configuration: each sampled configuration runs once
per seed (and, under tpe/random, once per value of every ``grid`` entry), so a sweep runs
``samples x seeds x grid`` trials (tpe/random) or ``grid points x seeds`` trials (grid).

A trial runs on the GPU (or GPU fraction) Ray assigns it through ``resources.gpus``, else on the
CPU: ``experiment.device`` is not used by sweeps. search_spaces/README.md has the full reference.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clsweep.spec.errors import Problem, SpecError
from clsweep.spec.experiment import ExperimentConfig, _pydantic_problems, parse_experiment
from clsweep.spec.loading import LineDict, apply_overrides, line_of, load_mapping, parse_override
from clsweep.spec.search_space import Param, SearchEntry, deep_merge, set_path

__all__ = ["METRICS", "Objective", "SweepSpec", "apply_sweep_overrides", "load_sweep", "parse_sweep"]

# Metrics every trial reports after each task (clsweep.experiment), with the better direction.
# HAT-family algorithms add capacity_mean and overlap_mean: no default direction, say `mode`.
METRICS: dict[str, str | None] = {
    "avg_acc_val": "max", "avg_acc_test": "max", "bwt_val": "max", "bwt_test": "max",
    "forgetting_val": "min", "forgetting_test": "min", "acc_current_val": "max", "acc_current_test": "max",
    "loss_train": "min", "capacity_mean": None, "overlap_mean": None,
}
HAT_METRICS = ("capacity_mean", "overlap_mean")
COMPONENTS = ("benchmark", "backbone", "heads", "algorithm")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FULL_LIMIT = 2000  # configurations checked one by one; above, each value is checked on its own


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearcherConfig(_Model):
    name: Literal["tpe", "random", "grid"] = "tpe"
    samples: int | None = Field(None, ge=1)
    """Configurations to sample (tpe/random; default 10, or 1 when nothing is sampled). The grid
    searcher runs every grid point."""
    seed: int = 0


class SchedulerConfig(_Model):
    name: Literal["none", "asha", "median"] = "none"
    grace_period: int = Field(2, ge=1)
    """Tasks a trial always completes before it may be stopped (2: task 1 alone measures
    plasticity only and would favour finetuning-like settings)."""
    reduction_factor: float = Field(2.0, gt=1.0)  # asha only
    min_samples_required: int = Field(3, ge=1)  # median only


class Objective(_Model):
    metric: str
    mode: Literal["max", "min"] | None = None


class ProtocolConfig(_Model):
    name: Literal["validation", "first_k", "test"] = "validation"
    k: int | None = Field(None, ge=1)
    leaky: bool = False


class ResourcesConfig(_Model):
    cpus: float = Field(1.0, gt=0.0)
    gpus: float = Field(0.0, ge=0.0)
    max_concurrent: int | None = Field(None, ge=1)


class TrackingConfig(_Model):
    uri: str | None = None
    experiment: str | None = None


class ClusterConfig(_Model):
    address: str | None = None
    runtime_env: dict[str, Any] = Field(default_factory=dict)


class _SweepShape(_Model):
    name: str
    description: str = ""
    experiment: dict[str, Any]
    variants: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    search: dict[str, SearchEntry] = Field(default_factory=dict)
    searcher: SearcherConfig = Field(default_factory=SearcherConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    objective: Objective | list[Objective] = Field(default_factory=lambda: Objective(metric="avg_acc_val"))
    protocol: ProtocolConfig = Field(default_factory=ProtocolConfig)
    seeds: int | list[int] = 1
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    retries: int = Field(1, ge=-1)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep. ``data`` is the raw mapping it came from (after ``--set``), JSON-able,
    so the sweep can be stored and re-read (``clsweep resume NAME``)."""

    name: str
    description: str
    experiment: dict[str, Any]
    variants: dict[str, dict[str, dict[str, Any]]]
    params: tuple[Param, ...]
    searcher: SearcherConfig
    scheduler: SchedulerConfig
    objectives: tuple[Objective, ...]
    protocol: ProtocolConfig
    seeds: tuple[int, ...]
    resources: ResourcesConfig
    retries: int
    tracking: TrackingConfig
    cluster: ClusterConfig
    data: dict[str, Any]
    fingerprint: str
    max_tasks: int
    """The most tasks any trial runs (the scheduler's time axis ends there)."""
    grid_points: tuple[dict[str, Any], ...]
    """Searcher grid: every configuration (variant labels and values, seeds excluded)."""

    # ---- trials ---------------------------------------------------------------------------------
    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def repeat_params(self) -> tuple[Param, ...]:
        """tpe/random: grid entries, run for every sampled configuration."""
        return tuple(p for p in self.params if p.kind == "grid") if self.searcher.name != "grid" else ()

    @property
    def samples(self) -> int:
        """Configurations the tpe/random sampler proposes."""
        sampled = bool(self.variants) or any(p.kind != "grid" for p in self.params)
        return self.searcher.samples or (10 if sampled else 1)

    @property
    def num_trials(self) -> int:
        if self.searcher.name == "grid":
            return len(self.grid_points) * len(self.seeds)
        repeats = 1
        for p in self.repeat_params:
            repeats *= len(p.values)
        return self.samples * repeats * len(self.seeds)

    def experiment_raw(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The experiment mapping of one trial: base, variants, searched values, seed."""
        raw = _merge_variants(self.experiment, self.variants, config)
        for p in self.params:
            if p.name in config:
                set_path(raw, p.name.split(".")[1:], config[p.name])
        if "seed" in config:
            raw["seed"] = int(config["seed"])
        return raw

    def experiment_for(self, config: Mapping[str, Any]) -> ExperimentConfig:
        """The validated experiment of one trial (``config``: Tune's config of the trial)."""
        return parse_experiment(self.experiment_raw(config), prefix=("experiment",))

    def trial_tasks(self, cfg: ExperimentConfig) -> int:
        """How many tasks a trial of ``cfg`` runs under the protocol."""
        if self.protocol.name == "first_k" and self.protocol.k:
            return min(self.protocol.k, cfg.num_tasks)
        return cfg.num_tasks

    @property
    def max_tasks_per_trial(self) -> int | None:
        return self.protocol.k if self.protocol.name == "first_k" else None

    def searched(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The values a trial's config varies (variant labels and searched paths), seed excluded."""
        return {k: v for k, v in config.items() if k != "seed"}

    @classmethod
    def from_data(cls, data: Mapping[str, Any], source: str | None = None) -> SweepSpec:
        return parse_sweep(data, source=source)


def _merge_variants(base: Mapping[str, Any], variants: Mapping[str, Mapping[str, Any]],
                    config: Mapping[str, Any]) -> dict[str, Any]:
    raw = deep_merge(base, {})
    for axis, options in variants.items():
        label = config.get(f"variants.{axis}")
        if label is None:
            continue
        for key, value in options[label].items():
            old = raw.get(key)
            if isinstance(value, Mapping) and isinstance(old, Mapping):
                renamed = key in COMPONENTS and value.get("name", old.get("name")) != old.get("name")
                raw[key] = deep_merge({}, value) if renamed else deep_merge(old, value)
            else:
                raw[key] = copy.deepcopy(value)
    return raw


# ---- parsing ---------------------------------------------------------------------------------------

def load_sweep(path: str | Path, overrides: Iterable[str] = (), *, name: str | None = None) -> SweepSpec:
    """Read a sweep file, apply ``--set`` overrides (and ``--name``), validate everything.
    Raises :class:`SpecError` naming each bad field with its line."""
    source = str(path)
    raw = load_mapping(path)
    try:
        data = apply_sweep_overrides(raw, overrides)
        if name is not None:
            data["name"] = name
        return parse_sweep(data, source=source)
    except SpecError as err:
        raise SpecError(err.problems, source).with_lines(lambda p: line_of(raw, p)) from None


def apply_sweep_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """``--set`` for sweep files. ``search.<dotted path>[.<key>]=value`` addresses a search entry
    by its dotted key (``--set search.experiment.train.lr.uniform=[0.01,0.1]``)."""
    data: dict[str, Any] = apply_overrides(raw, [])
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] != "search" or len(parts) < 2:
            data = apply_overrides(data, [text])
            continue
        search = data.get("search")
        if not isinstance(search, dict):
            search = LineDict()
            data["search"] = search
        rest = parts[1:]
        split = next((i for i in range(len(rest), 0, -1) if ".".join(rest[:i]) in search), None)
        if split is None:  # a new entry: the value is the whole distribution
            search[".".join(rest)] = value
            continue
        entry = search[".".join(rest[:split])]
        if split == len(rest):
            search[".".join(rest)] = value
        elif isinstance(entry, dict):
            set_path(entry, rest[split:], value)
        else:
            raise SpecError([Problem(("search", ".".join(rest[:split])), f"--set {text!r}: the entry is not a mapping")])
    return data


def parse_sweep(raw: Any, *, source: str | None = None) -> SweepSpec:
    """Validate a raw sweep mapping; raises :class:`SpecError` listing every problem found."""
    from clsweep.spec import _sweep_checks as checks  # keeps this module short

    if not isinstance(raw, Mapping):
        raise SpecError([Problem((), f"expected a mapping, got {type(raw).__name__}")], source)
    try:
        shape = _SweepShape.model_validate(dict(raw))
    except ValidationError as err:
        raise SpecError(_pydantic_problems(err, ()), source) from None
    problems: list[Problem] = []
    if not _NAME.match(shape.name):
        problems.append(Problem(("name",), f"{shape.name!r}: use letters, digits, '_', '-' or '.' (it names a folder)"))
    params = checks.check_search(shape, problems)
    search_ok = not problems
    objectives = checks.check_objectives(shape, problems)
    if isinstance(shape.seeds, int):
        if shape.seeds < 1:
            problems.append(Problem(("seeds",), "the number of seeds must be >= 1"))
        base = shape.experiment.get("seed", 0)
        seeds = tuple(int(base) + i for i in range(max(1, shape.seeds))) if isinstance(base, int) else (0,)
    else:
        seeds = tuple(shape.seeds)
        if not seeds:
            problems.append(Problem(("seeds",), "the list of seeds is empty"))
        elif len(set(seeds)) != len(seeds):
            problems.append(Problem(("seeds",), "seeds are repeated"))
    max_tasks, grid = 0, tuple[dict[str, Any], ...]()
    if search_ok:
        max_tasks, grid = checks.check_configurations(shape, params, objectives, seeds, problems)
    if problems:
        raise SpecError(problems, source)
    data = json.loads(json.dumps(dict(raw)))
    canon = shape.model_dump(mode="json", by_alias=True, exclude={"cluster"})
    fingerprint = hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:16]
    return SweepSpec(
        name=shape.name, description=shape.description, experiment=dict(shape.experiment),
        variants={a: dict(o) for a, o in shape.variants.items()}, params=params, searcher=shape.searcher,
        scheduler=shape.scheduler, objectives=objectives, protocol=shape.protocol, seeds=seeds,
        resources=shape.resources, retries=shape.retries, tracking=shape.tracking, cluster=shape.cluster,
        data=data, fingerprint=fingerprint, max_tasks=max_tasks, grid_points=grid,
    )
