"""Names and small helpers shared by every layer of clsweep.

A leaf module: it imports nothing from clsweep (and neither torch, Ray nor MLflow), so every
package may import it and the arrows between packages stay one-way.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

__all__ = [
    "DEFAULT_STORAGE",
    "EXPERIMENT_COMPONENTS",
    "HAT_METRICS",
    "METRICS",
    "PARADIGMS",
    "PLAN_ARTIFACT",
    "better",
    "dominates",
    "format_duration",
    "pareto_front",
    "versions",
]

PARADIGMS: tuple[str, ...] = ("til", "cil", "dil")
"""Task-incremental, class-incremental and domain-incremental learning."""

EXPERIMENT_COMPONENTS: tuple[str, ...] = ("benchmark", "backbone", "heads", "algorithm")
"""The components an experiment is built from, each chosen by name from the registry."""

METRICS: dict[str, str | None] = {
    "avg_acc_val": "max",
    "avg_acc_test": "max",
    "bwt_val": "max",
    "bwt_test": "max",
    "forgetting_val": "min",
    "forgetting_test": "min",
    "acc_current_val": "max",
    "acc_current_test": "max",
    "loss_train": "min",
    "capacity_mean": None,
    "overlap_mean": None,
}
"""Metrics every trial reports after each task (clsweep.experiment), with the better direction.
HAT-family algorithms add capacity_mean and overlap_mean: no default direction (say ``mode``)."""

HAT_METRICS: tuple[str, ...] = ("capacity_mean", "overlap_mean")

DEFAULT_STORAGE = "clsweep_runs"
"""Root folder of sweeps (relative to the working directory) when ``--storage`` is not given."""

PLAN_ARTIFACT = "plan.json"
"""The artifact of a sweep's parent MLflow run holding its plan (SweepPlan.payload()), read by the report."""

_LIBRARIES = ("clsweep", "ray", "optuna", "mlflow", "torch", "lightning", "pandas", "matplotlib")


def versions() -> dict[str, str | None]:
    """The versions of Python and of the packages behind a sweep's numbers, read from installed
    metadata (nothing is imported); None for a package that is not installed."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def format_duration(seconds: float | None) -> str:
    """``4m05s``, or ``1h02m03s`` from an hour on; ``-`` for a missing or NaN value."""
    if seconds is None or seconds != seconds:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def better(a: float, b: float, mode: str) -> bool:
    """Whether ``a`` is strictly better than ``b`` under ``mode`` (max or min)."""
    return a > b if mode == "max" else a < b


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """Pareto dominance: ``a`` is better in at least one objective and worse in none."""
    pairs = list(zip(a, b, modes, strict=True))
    return any(better(x, y, m) for x, y, m in pairs) and not any(better(y, x, m) for x, y, m in pairs)


def pareto_front(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p, modes) for q in points)]
