"""Declarations of the built-in CL methods beyond the HAT family, one module per method (the
implementation is the module of the same name in :mod:`clsweep.algorithms`).

Each module defines the method's params model (every default with its source) and registers it
with the paradigms it supports. Torch-free, like :mod:`clsweep.spec.components`.
"""

from __future__ import annotations

import importlib

__all__ = ["METHODS"]

METHODS: tuple[str, ...] = ("hat", "joint", "independent", "ewc", "si", "lwf", "er", "agem", "packnet")
"""The declaration modules imported with the built-in components (names under this package)."""


def load() -> None:
    """Import every declaration module (each registers its method)."""
    for name in METHODS:
        importlib.import_module(f"{__name__}.{name}")
