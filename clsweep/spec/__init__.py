"""The spec layer: configs and sweep files, validated into typed objects. Imports neither torch nor Ray."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from clsweep.spec.errors import Problem, SpecError
from clsweep.spec.experiment import Component, ExperimentConfig, TrainConfig, flatten, parse_experiment
from clsweep.spec.loading import apply_overrides, line_of, load_mapping

__all__ = [
    "Component",
    "ExperimentConfig",
    "Problem",
    "SpecError",
    "TrainConfig",
    "flatten",
    "load_experiment",
    "parse_experiment",
]


def load_experiment(path: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read an experiment config file (or the ``experiment`` section of a sweep file), apply
    ``--set`` overrides, validate. Raises :class:`SpecError` with file and line numbers."""
    source = str(path)
    raw = load_mapping(path)
    nested = "experiment" in raw
    overrides = list(overrides)
    if not nested:
        # `--set experiment.train.epochs=1` also works on a plain experiment file
        overrides = [o[len("experiment.") :] if o.startswith("experiment.") else o for o in overrides]
    try:
        data: Any = apply_overrides(raw, overrides)
        section, prefix = (data["experiment"], ("experiment",)) if nested else (data, ())
        return parse_experiment(section, prefix=prefix)
    except SpecError as err:
        located = SpecError(err.problems, source).with_lines(lambda p: line_of(raw, p))
        raise located from None
