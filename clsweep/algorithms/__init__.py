"""CL algorithms: each owns only its learning rule; one short file per method."""

from __future__ import annotations

__all__ = ["CLAlgorithm"]

from clsweep.algorithms.base import CLAlgorithm
