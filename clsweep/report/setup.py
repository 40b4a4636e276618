"""What a sweep was: objective, protocol, searcher, scheduler, budget and searched parameters.

Read from the ``sweep.yaml`` the parent run stores (validated again with the same code path as
``clsweep validate``); when that file is missing or no longer validates, the facts are inferred
from the parent's tags and the trials' searched values, so an old sweep still gets a report.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import yaml

__all__ = ["SearchedParam", "Setup", "read_setup", "versions"]

PROTOCOLS = {
    "validation": "hyperparameters chosen on the validation split of every task (carved from the training "
                  "data); the test splits were never used to choose anything",
    "first_k": "hyperparameters chosen on the validation splits of the first {k} tasks only (trials ran {k} "
               "tasks); the later tasks stayed unseen by the search",
    "test": "LEAKY: the objective reads the test split, so the best configuration's test numbers are optimistic",
}
_LIBRARIES = ("clsweep", "ray", "optuna", "mlflow", "torch", "lightning", "pandas", "matplotlib")


@dataclass(frozen=True)
class SearchedParam:
    name: str
    """The key in a trial's config (``experiment.algorithm.s_max``, ``variants.method``)."""
    label: str
    """Short display name (``algorithm.s_max``, ``method``)."""
    kind: str
    """uniform, log_uniform, int, choice, grid, or variant (a benchmark axis)."""
    log: bool = False
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None

    @property
    def categorical(self) -> bool:
        return self.kind in ("choice", "grid", "variant")


@dataclass
class Setup:
    objectives: list[tuple[str, str]]
    protocol: str
    protocol_note: str
    leaky: bool
    searcher: dict[str, Any]
    scheduler: dict[str, Any]
    seeds: list[int]
    budget: int | None
    resources: dict[str, Any]
    params: list[SearchedParam]
    variants: dict[str, list[str]]
    description: str = ""
    experiment: dict[str, Any] = field(default_factory=dict)
    spec_problem: str | None = None
    """Why the stored sweep file could not be validated (facts then come from tags and trials)."""

    def mode(self, metric: str) -> str | None:
        """The better direction of a metric: the objective's mode, else the known default."""
        from clsweep.spec.sweep import METRICS

        for m, mode in self.objectives:
            if m == metric:
                return mode
        return METRICS.get(metric)


def _short(name: str) -> str:
    return name.removeprefix("experiment.").removeprefix("variants.")


def _protocol_text(name: str, k: Any) -> str:
    return PROTOCOLS.get(name, name).format(k=k)


def _from_spec(spec: Any) -> Setup:
    params = [SearchedParam(p.name, _short(p.name), p.kind, bool(p.log), tuple(p.values), p.low, p.high)
              for p in spec.params]
    params += [SearchedParam(f"variants.{axis}", axis, "variant", values=tuple(options))
               for axis, options in spec.variants.items()]
    protocol = spec.protocol.name + (f":{spec.protocol.k}" if spec.protocol.name == "first_k" else "")
    return Setup(
        objectives=[(o.metric, str(o.mode)) for o in spec.objectives], protocol=protocol,
        protocol_note=_protocol_text(spec.protocol.name, spec.protocol.k), leaky=spec.protocol.name == "test",
        searcher=spec.searcher.model_dump(), scheduler=spec.scheduler.model_dump(), seeds=list(spec.seeds),
        budget=spec.num_trials, resources=spec.resources.model_dump(), params=params,
        variants={axis: list(options) for axis, options in spec.variants.items()}, description=spec.description,
        experiment=dict(spec.experiment))


def _inferred(tags: dict[str, str], trials: pd.DataFrame, problem: str | None) -> Setup:
    """Facts from the parent's tags (``clsweep.objective`` 'metric (mode), ...') and the trials."""
    objectives = []
    for part in tags.get("clsweep.objective", "avg_acc_val (max)").split(","):
        metric, _, mode = part.strip().partition(" (")
        objectives.append((metric, mode.rstrip(")") or "max"))
    keys: dict[str, list[Any]] = {}
    for config in trials.get("config", []):
        for k, v in config.items():
            keys.setdefault(k, []).append(v)
    params = []
    for name, values in keys.items():
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        positive = numeric and min(values) > 0
        log = bool(positive and max(values) / min(values) >= 20)
        kind = "variant" if name.startswith("variants.") else "uniform" if numeric else "choice"
        params.append(SearchedParam(name, _short(name), "log_uniform" if log else kind, log,
                                    () if numeric else tuple(sorted({str(v) for v in values}))))
    protocol = tags.get("clsweep.protocol", "validation")
    base, _, k = protocol.partition(":")
    seeds = sorted({int(s) for s in trials.get("seed", []) if s is not None and s == s})
    return Setup(objectives=objectives, protocol=protocol, protocol_note=_protocol_text(base, k or "?"),
                 leaky=base == "test", searcher={"name": tags.get("clsweep.searcher", "?")}, scheduler={},
                 seeds=seeds, budget=None, resources={}, params=params,
                 variants={p.label: list(p.values) for p in params if p.kind == "variant"}, spec_problem=problem)


def read_setup(spec_text: str | None, parent_tags: dict[str, str], trials: pd.DataFrame) -> Setup:
    if spec_text:
        from clsweep.spec.errors import SpecError
        from clsweep.spec.sweep import parse_sweep

        try:
            return _from_spec(parse_sweep(yaml.safe_load(spec_text)))
        except (SpecError, yaml.YAMLError, TypeError, ValueError) as err:
            return _inferred(parent_tags, trials, f"the stored sweep file no longer validates: {err}")
    return _inferred(parent_tags, trials, "the parent run holds no sweep.yaml")


def versions(parent_tags: dict[str, str]) -> dict[str, Any]:
    """Library versions: those the sweep recorded (parent tag ``clsweep.versions``, JSON), and those
    of the environment writing the report (read from package metadata; nothing is imported)."""
    here: dict[str, str] = {"python": platform.python_version()}
    for lib in _LIBRARIES:
        try:
            here[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            continue
    recorded = None
    if parent_tags.get("clsweep.versions"):
        try:
            recorded = json.loads(parent_tags["clsweep.versions"])
        except json.JSONDecodeError:
            recorded = None
    return {"sweep": recorded, "report": here}


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
