"""The one translation of a sweep's searched dimensions into Optuna.

Both the searcher (:mod:`clsweep.sweep.space`, which samples configurations) and the report
(:mod:`clsweep.report.importance`, which rebuilds a study from finished trials) turn a
:class:`~clsweep.spec.search_space.Param` into an Optuna distribution here, so a value means the
same thing in both. Imports Optuna, never Ray.

- choice, grid and variant axes: a categorical distribution over the Optuna-encoded values
  (scalars as they are, lists and mappings as JSON text, see :func:`~clsweep.spec.search_space.encode`);
- uniform / log_uniform: a float distribution (``step`` quantises, log for log_uniform);
- int: an int distribution (``step``, ``log``).
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from clsweep.spec.search_space import Param, decode, encode

__all__ = ["distribution", "suggest", "to_optuna_value"]


def distribution(param: Param) -> BaseDistribution:
    """The Optuna distribution of a searched dimension."""
    if param.finite:
        return CategoricalDistribution([encode(v) for v in param.values])
    assert param.low is not None and param.high is not None
    if param.kind == "int":
        return IntDistribution(int(param.low), int(param.high), step=int(param.step or 1), log=param.log)
    return FloatDistribution(float(param.low), float(param.high), step=param.step, log=param.log)


def to_optuna_value(param: Param, value: Any) -> Any:
    """A trial's value of ``param`` as Optuna stores it under :func:`distribution`."""
    return encode(value) if param.finite else value


def suggest(trial: Any, param: Param) -> Any:
    """Ask an Optuna trial (define-by-run) for ``param``'s value, decoded back to the file's value."""
    dist = distribution(param)
    if isinstance(dist, CategoricalDistribution):
        return decode(trial.suggest_categorical(param.name, list(dist.choices)), param.values)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(param.name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(param.name, dist.low, dist.high, step=dist.step, log=dist.log)
