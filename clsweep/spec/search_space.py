"""The ``search`` section of a sweep file: distributions over dotted experiment paths.

Each entry maps a dotted path to exactly one distribution, optionally guarded by a ``when``
condition::

    search:
      experiment.algorithm.s_max: {log_uniform: [25, 800], when: {experiment.algorithm.name: [hat, adahat]}}
      experiment.algorithm.init_mode: {choice: [N01, U-11, U01]}
      experiment.train.lr: {uniform: [0.01, 0.1], step: 0.01}
      experiment.train.epochs: {int: [5, 30], step: 5}
      experiment.algorithm.aggregation: {grid: [min, max]}

This module holds the data only (torch-, Ray- and Optuna-free); the single translation into
Optuna distributions lives in :mod:`clsweep.optuna_space`.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["KINDS", "Param", "SearchEntry", "decode", "encode", "get_path", "set_path"]

Kind = Literal["uniform", "log_uniform", "int", "choice", "grid"]
KINDS: tuple[str, ...] = ("uniform", "log_uniform", "int", "choice", "grid")
_SCALAR = (str, int, float, bool, type(None))
MAX_VALUES = 1000
"""Values of one choice or grid entry: each is validated as part of an experiment."""


class SearchEntry(BaseModel):
    """One entry of ``search`` as written in the file (exactly one distribution key)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    uniform: tuple[float, float] | None = None
    log_uniform: tuple[float, float] | None = None
    int_: tuple[int, int] | None = Field(None, alias="int")
    choice: list[Any] | None = None
    grid: list[Any] | None = None
    step: float | None = Field(None, gt=0)
    """Quantisation: uniform values low + k*step; int values low + k*step."""
    log: bool = False
    """int only: sample on a log scale (needs low >= 1 and no step)."""
    when: dict[str, Any] = Field(default_factory=dict)
    """Sample this entry only if every listed path has the given value (or one of a list)."""

    @model_validator(mode="after")
    def _one_distribution(self) -> SearchEntry:
        given = [k for k in KINDS if getattr(self, "int_" if k == "int" else k) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one distribution of {', '.join(KINDS)} (found: {found})")
        kind = given[0]
        if kind in ("uniform", "log_uniform", "int"):
            low, high = getattr(self, "int_" if kind == "int" else kind)
            if not (math.isfinite(low) and math.isfinite(high)):
                raise ValueError(f"{kind}: bounds must be finite numbers")
            if low > high:
                raise ValueError(f"{kind}: low {low} > high {high}")
            if (kind == "log_uniform" or self.log) and low <= 0:
                raise ValueError(f"{kind}: a log scale needs low > 0, got {low}")
        else:
            values = getattr(self, kind)
            if not values:
                raise ValueError(f"{kind}: the list of values is empty")
            if len(values) > MAX_VALUES:
                raise ValueError(f"{kind}: {len(values)} values; at most {MAX_VALUES} (each one is checked)")
            keys = [encode(v) for v in values]
            if len(set(keys)) != len(keys):
                raise ValueError(f"{kind}: values are repeated")
        if self.step is not None and kind not in ("uniform", "int"):
            raise ValueError("step applies to uniform and int only")
        if kind == "int" and self.step is not None and self.step != int(self.step):
            raise ValueError(f"int: step must be a whole number, got {self.step}")
        if self.log and kind != "int":
            raise ValueError("log applies to int only (use log_uniform for floats)")
        if self.log and self.step not in (None, 1):
            raise ValueError("int: log and step cannot be combined")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, "int_" if k == "int" else k) is not None)


@dataclass(frozen=True)
class Param:
    """A searched dimension: a validated search entry (``name`` is the dotted path,
    ``experiment.train.lr``) or a benchmark-mode variant axis (``variants.method``, kind
    ``variant``, its labels as values)."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    values: tuple[Any, ...] = ()
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @classmethod
    def from_entry(cls, name: str, entry: SearchEntry) -> Param:
        kind = entry.kind
        when = tuple((path, tuple(v) if isinstance(v, list) else (v,)) for path, v in entry.when.items())
        if kind in ("choice", "grid"):
            return cls(name, kind, values=tuple(getattr(entry, kind)), when=when)
        low, high = getattr(entry, "int_" if kind == "int" else kind)
        return cls(name, kind, low, high, entry.step, entry.log or kind == "log_uniform", when=when)

    @classmethod
    def variant_axis(cls, axis: str, labels: tuple[str, ...]) -> Param:
        return cls(f"variants.{axis}", "variant", values=labels)

    @property
    def finite(self) -> bool:
        return self.kind in ("choice", "grid", "variant")

    @property
    def categorical(self) -> bool:
        return self.finite

    @property
    def label(self) -> str:
        """Short display name: ``algorithm.s_max``, ``method``."""
        return self.name.removeprefix("experiment.").removeprefix("variants.")

    def bounds(self) -> tuple[Any, ...]:
        """Values that validation tries: every value of a finite entry, else both ends."""
        if self.finite:
            return self.values
        if self.kind == "int":
            assert self.low is not None and self.high is not None
            top = int(self.high)
            if self.step:  # the largest value the sampler can produce
                top = int(self.low) + int((self.high - self.low) // self.step) * int(self.step)
            return (int(self.low), top)
        return (self.low, self.high)

    def active(self, context: Mapping[str, Any]) -> bool:
        """Whether the ``when`` conditions hold for ``context`` (dotted path -> value)."""
        return all(encode(context.get(path)) in {encode(v) for v in allowed} for path, allowed in self.when)


def encode(value: Any) -> Any:
    """A value Optuna can store as a categorical choice: scalars as they are, others as JSON."""
    if isinstance(value, _SCALAR):
        return value
    return json.dumps(value, sort_keys=True)


def decode(value: Any, choices: tuple[Any, ...]) -> Any:
    """The original choice behind an encoded value."""
    for choice in choices:
        if encode(choice) == value and type(encode(choice)) is type(value):
            return copy.deepcopy(choice)
    raise KeyError(value)


def get_path(data: Mapping[str, Any], parts: list[str] | tuple[str, ...]) -> Any:
    node: Any = data
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def set_path(data: dict[str, Any], parts: list[str] | tuple[str, ...], value: Any) -> None:
    """Set a nested key in place, creating intermediate mappings."""
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` laid over ``base``; nested mappings merge, everything else replaces."""
    out = {k: copy.deepcopy(v) for k, v in base.items()}
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
