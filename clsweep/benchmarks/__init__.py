"""Benchmarks: image sources cut into task streams with train / validation / test tensors per task.

Sources (``digits``, ``mnist``, ...) and streams (``permuted``, ``split``, ``rotated``) are chosen by
name through the registry; their hyperparameters are the fields of the matching params models in
:mod:`clsweep.spec.components`. :func:`build_stream` and :func:`load_source` build them by name.
"""

from __future__ import annotations

from typing import Any

from clsweep.benchmarks.sources import BenchmarkDataError, SourceData, load_source
from clsweep.benchmarks.streams import (
    PermutedStream,
    RotatedStream,
    SplitStream,
    TaskData,
    TaskStream,
    rotate,
)

__all__ = [
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
    """The registered stream ``name`` for ``paradigm``; ``params`` are checked against (and completed
    from the defaults of) its params model, as a config's ``benchmark`` section is."""
    from clsweep import registry

    stream: TaskStream = registry.create("benchmark", name, paradigm, **params)
    return stream
