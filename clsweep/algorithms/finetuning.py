"""Finetuning: every task trained with the plain optimiser, no protection of old tasks.

The lower reference of every CL comparison: it shows how much a method's protection is worth.
"""

from __future__ import annotations

from clsweep.algorithms.base import CLAlgorithm

__all__ = ["Finetuning"]


class Finetuning(CLAlgorithm):
    """Train each task in turn on the same backbone; old tasks' knowledge is overwritten freely."""
