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
    scheduler: {name: none}               # none | asha | median | pbt; time axis = tasks completed
    objective: {metric: avg_acc_val, mode: max}     # or a list of two: Pareto front, no early stopping
    protocol: {name: validation}          # validation | first_k (k: N) | first_task | test (leaky: true)
                                          # | current_task (with scheduler pbt)
    confirm: null                         # {top_k: 3, seeds: 5}: re-run the best on new seeds
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

The file is the typed model :class:`~clsweep.spec.sweep_file.SweepFile`; what a sweep runs is the
frozen :class:`SweepPlan` derived from it once, on the driver. Workers and callbacks rebuild the
plan from :meth:`SweepPlan.payload` without enumerating the configurations again.

A trial runs on the GPU (or GPU fraction) Ray assigns it through ``resources.gpus``, else on the
CPU: ``experiment.device`` is not used by sweeps. search_spaces/README.md has the full reference.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clsweep.spec import _config_checks
from clsweep.spec import _pbt_checks as pbt_checks
from clsweep.spec import _sweep_checks as checks
from clsweep.spec.errors import Problem, SpecError
from clsweep.spec.experiment import ExperimentConfig, parse_experiment, pydantic_problems
from clsweep.spec.loading import LineDict, apply_overrides, line_of, load_mapping, parse_override
from clsweep.spec.search_space import Param, set_path
from clsweep.spec.sweep_file import (
    ClusterConfig,
    Objective,
    ProtocolConfig,
    ResourcesConfig,
    SchedulerConfig,
    SearcherConfig,
    SweepFile,
    TrackingConfig,
    merge_variants,
)

__all__ = ["STAGE_KEY", "SweepPlan", "apply_sweep_overrides", "load_sweep", "parse_sweep", "stage_of"]

STAGE_KEY = "stage"
"""The key of a trial's config naming its stage (search trials have none): ``confirm`` (the
best configurations re-run on new seeds) or ``final`` (protocol first_task: the full stream)."""


def stage_of(config: Mapping[str, Any]) -> str:
    return str(config.get(STAGE_KEY, "search"))


_PAYLOAD_FORMAT = 1


@dataclass(frozen=True)
class SweepPlan:
    """What a validated sweep runs: the file, and everything derived from it once.

    ``data`` is the raw mapping the file came from (after ``--set``), JSON-able, so the sweep can
    be stored and re-read (``clsweep resume NAME``)."""

    file: SweepFile
    data: dict[str, Any]
    fingerprint: str
    params: tuple[Param, ...]
    """The ``search`` entries, in file order."""
    objectives: tuple[Objective, ...]
    """Each with its mode resolved."""
    seeds: tuple[int, ...]
    max_tasks: int
    """The most tasks any trial runs (the scheduler's time axis ends there)."""
    num_grid_points: int
    grid_points: tuple[dict[str, Any], ...] = ()
    """Searcher grid: every configuration (variant labels and values, seeds excluded). Empty in a
    plan rebuilt from its payload (only the driver's searcher needs them)."""

    # ---- the file's sections ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.file.name

    @property
    def description(self) -> str:
        return self.file.description

    @property
    def experiment(self) -> dict[str, Any]:
        return self.file.experiment

    @property
    def variants(self) -> dict[str, dict[str, dict[str, Any]]]:
        return self.file.variants

    @property
    def searcher(self) -> SearcherConfig:
        return self.file.searcher

    @property
    def scheduler(self) -> SchedulerConfig:
        return self.file.scheduler

    @property
    def protocol(self) -> ProtocolConfig:
        return self.file.protocol

    @property
    def resources(self) -> ResourcesConfig:
        return self.file.resources

    @property
    def retries(self) -> int:
        return self.file.retries

    @property
    def tracking(self) -> TrackingConfig:
        return self.file.tracking

    @property
    def cluster(self) -> ClusterConfig:
        return self.file.cluster

    # ---- trials ---------------------------------------------------------------------------------
    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def searched_params(self) -> tuple[Param, ...]:
        """Every dimension a trial's config varies: variant axes first, then the search entries."""
        axes = tuple(Param.variant_axis(a, tuple(o)) for a, o in self.variants.items())
        return axes + self.params

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
            return self.num_grid_points * len(self.seeds)
        repeats = 1
        for p in self.repeat_params:
            repeats *= len(p.values)
        return self.samples * repeats * len(self.seeds)

    @property
    def later_stage(self) -> str | None:
        """The stage run after the search: ``confirm``, ``final`` (protocol first_task) or None."""
        if self.protocol.name == "first_task":
            return "final"
        return "confirm" if self.file.confirm is not None else None

    @property
    def stages_text(self) -> str:
        """What the sweep runs, stage by stage, in words (``clsweep validate``)."""
        tasks = " (task 1 only)" if self.protocol.name == "first_task" else ""
        search = f"search ({self.num_trials} trials{tasks})"
        confirm = self.file.confirm
        if self.later_stage == "confirm" and confirm is not None:
            first = max(self.seeds) + 1
            return (
                f"{search} -> confirm (the top {confirm.top_k} configurations x {confirm.seeds} new seeds "
                f"{first}..{first + confirm.seeds - 1} = {confirm.top_k * confirm.seeds} runs; the winner is "
                "the best confirmation mean)"
            )
        if self.later_stage == "final":
            return (
                f"{search} -> final (the best configuration on the whole stream x {len(self.seeds)} "
                f"seed(s) = {len(self.seeds)} runs)"
            )
        return f"{search}; the winner is the best search mean"

    @property
    def protocol_tag(self) -> str:
        """The protocol as stamped on every run: ``validation``, ``first_k:2``, ``test (leaky)``."""
        p = self.protocol
        return {"first_k": f"first_k:{p.k}", "test": "test (leaky)"}.get(p.name, p.name)

    def experiment_raw(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The experiment mapping of one trial: base, variants, searched values, seed."""
        raw = merge_variants(self.experiment, self.variants, config)
        for p in self.params:
            if p.name in config:
                set_path(raw, p.name.split(".")[1:], config[p.name])
        if "seed" in config:
            raw["seed"] = int(config["seed"])
        return raw

    def experiment_for(self, config: Mapping[str, Any]) -> ExperimentConfig:
        """The validated experiment of one trial (``config``: Tune's config of the trial)."""
        return parse_experiment(self.experiment_raw(config), prefix=("experiment",))

    def trial_tasks(self, cfg: ExperimentConfig, stage: str = "search") -> int:
        """How many tasks a trial of ``cfg`` runs under the protocol, in ``stage``."""
        limit = self.max_tasks_per_trial(stage)
        return cfg.num_tasks if limit is None else min(limit, cfg.num_tasks)

    def max_tasks_per_trial(self, stage: str = "search") -> int | None:
        """The task limit of a trial in ``stage`` (None: the whole stream). Later stages run the
        stream a search trial of the protocol runs, except first_task's final stage: all of it."""
        if self.protocol.name == "first_task":
            return 1 if stage == "search" else None
        return self.protocol.k if self.protocol.name == "first_k" else None

    def searched(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The values a trial's config varies (variant labels and searched paths), seed and stage
        excluded."""
        return {k: v for k, v in config.items() if k not in ("seed", STAGE_KEY)}

    # ---- travelling to workers ------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        """JSON-able data from which :meth:`from_payload` rebuilds this plan without enumerating
        the sweep's configurations (what trials, callbacks and the report receive)."""
        return {
            "format": _PAYLOAD_FORMAT,
            "sweep": self.data,
            "fingerprint": self.fingerprint,
            "max_tasks": self.max_tasks,
            "num_grid_points": self.num_grid_points,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> SweepPlan:
        """The plan of :meth:`payload`. The file's shape is re-read (cheap) and must match the
        fingerprint; the per-configuration checks are not repeated."""
        if payload.get("format") != _PAYLOAD_FORMAT or "sweep" not in payload:
            raise ValueError("not a sweep plan payload (SweepPlan.payload)")
        file = SweepFile.model_validate(payload["sweep"])
        if fingerprint_of(file) != payload["fingerprint"]:
            raise ValueError("the sweep plan payload does not match its fingerprint")
        problems: list[Problem] = []
        params, objectives, seeds = _derive(file, problems)
        if problems:
            raise SpecError(problems)
        return cls(
            file=file,
            data=dict(payload["sweep"]),
            fingerprint=str(payload["fingerprint"]),
            params=params,
            objectives=objectives,
            seeds=seeds,
            max_tasks=int(payload["max_tasks"]),
            num_grid_points=int(payload["num_grid_points"]),
        )


def fingerprint_of(file: SweepFile) -> str:
    """What identifies a sweep: every section but ``cluster`` (where it runs does not matter)."""
    canon = file.model_dump(mode="json", by_alias=True, exclude={"cluster"})
    if file.scheduler.name != "pbt":  # the fingerprints of sweeps written before pbt existed stay
        for key in pbt_checks.PBT_ONLY:
            canon["scheduler"].pop(key, None)
    return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:16]


def _derive(
    file: SweepFile, problems: list[Problem]
) -> tuple[tuple[Param, ...], tuple[Objective, ...], tuple[int, ...]]:
    checks.check_name(file, problems)
    params = checks.check_search(file, problems)
    params += pbt_checks.check_pbt(file, params, problems)
    objectives = checks.check_objectives(file, problems)
    seeds = checks.check_seeds(file, problems)
    return params, objectives, seeds


# ---- parsing ---------------------------------------------------------------------------------------


def load_sweep(path: str | Path, overrides: Iterable[str] = (), *, name: str | None = None) -> SweepPlan:
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
    by its dotted key (``--set search.experiment.train.lr.uniform=[0.01,0.1]``); so does
    ``scheduler.mutate.<dotted path>[.<key>]=value`` a mutated knob."""
    data: dict[str, Any] = apply_overrides(raw, [])
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] == "search" and len(parts) >= 2:
            _set_entry(data, ("search",), parts[1:], value, text)
        elif parts[:2] == ["scheduler", "mutate"] and len(parts) >= 3:
            _set_entry(data, ("scheduler", "mutate"), parts[2:], value, text)
        else:
            data = apply_overrides(data, [text])
    return data


def _set_entry(
    data: dict[str, Any], section: tuple[str, ...], rest: list[str], value: Any, text: str
) -> None:
    """Set ``rest`` (a dotted entry key, then keys inside the entry) in the mapping at ``section``."""
    holder: dict[str, Any] = data
    for key in section:
        nxt = holder.get(key)
        if not isinstance(nxt, dict):
            nxt = LineDict()
            holder[key] = nxt
        holder = nxt
    split = next((i for i in range(len(rest), 0, -1) if ".".join(rest[:i]) in holder), None)
    if split is None:  # a new entry: the value is the whole distribution
        holder[".".join(rest)] = value
        return
    entry = holder[".".join(rest[:split])]
    if split == len(rest):
        holder[".".join(rest)] = value
    elif isinstance(entry, dict):
        set_path(entry, rest[split:], value)
    else:
        where = (*section, ".".join(rest[:split]))
        raise SpecError([Problem(where, f"--set {text!r}: the entry is not a mapping")])


def parse_sweep(raw: Any, *, source: str | None = None) -> SweepPlan:
    """Validate a raw sweep mapping completely (every configuration the searcher can produce);
    raises :class:`SpecError` listing every problem found."""
    if not isinstance(raw, Mapping):
        raise SpecError([Problem((), f"expected a mapping, got {type(raw).__name__}")], source)
    try:
        file = SweepFile.model_validate(dict(raw))
    except ValidationError as err:
        raise SpecError(pydantic_problems(err, ()), source) from None
    problems: list[Problem] = []
    checks.check_name(file, problems)
    params = checks.check_search(file, problems)
    params += pbt_checks.check_pbt(file, params, problems)
    search_ok = not problems  # configurations are enumerated only from valid entries
    objectives = checks.check_objectives(file, problems)
    seeds = checks.check_seeds(file, problems)
    max_tasks, grid = 0, tuple[dict[str, Any], ...]()
    if search_ok:
        max_tasks, grid = _config_checks.check_configurations(file, params, objectives, seeds, problems)
    if problems:
        raise SpecError(problems, source)
    return SweepPlan(
        file=file,
        data=json.loads(json.dumps(dict(raw))),
        fingerprint=fingerprint_of(file),
        params=params,
        objectives=objectives,
        seeds=seeds,
        max_tasks=max_tasks,
        num_grid_points=len(grid),
        grid_points=grid,
    )
