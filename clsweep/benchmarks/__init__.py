"""Benchmarks: image sources cut into task streams with train / validation / test tensors per task.

A stream is chosen by name (``permuted``, ``split``, ``rotated``) through the registry; its
hyperparameters are the fields of the matching params model in :mod:`clsweep.spec.components`,
and the experiment passes the CL paradigm as ``paradigm``. :func:`build_stream` does both.
"""

from __future__ import annotations

from typing import Any

from clsweep.benchmarks.sources import SOURCES, BenchmarkDataError, SourceData, load_source
from clsweep.benchmarks.streams import (
    PermutedStream,
    RotatedStream,
    SplitStream,
    TaskData,
    TaskStream,
    rotate,
)

__all__ = [
    "SOURCES",
    "BenchmarkDataError",
    "PermutedStream",
    "RotatedStream",
    "SourceData",
    "SplitStream",
    "TaskData",
    "TaskStream",
    "build_stream",
    "load_source",
    "rotate",
]


def build_stream(name: str, *, paradigm: str, **params: Any) -> TaskStream:
    """The registered stream ``name``; ``params`` are checked against (and completed from the defaults
    of) its params model, as a config's ``benchmark`` section is."""
    from clsweep import registry

    entry = registry.get("benchmark", name)
    validated = entry.params(**params)
    return entry.load()(paradigm=paradigm, **validated.model_dump())
