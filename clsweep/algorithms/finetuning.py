"""Finetuning: every task trained with the plain optimiser, no protection of old tasks.

The lower reference of every CL comparison: it shows how much a method's protection is worth.
"""

from __future__ import annotations

from torch import nn

from clsweep.algorithms.base import CLAlgorithm
from clsweep.backbones.base import CLBackbone

__all__ = ["Finetuning"]


class Finetuning(CLAlgorithm):
    """Train each task in turn on the same backbone; old tasks' knowledge is overwritten freely."""

    def __init__(self, backbone: CLBackbone, heads: nn.Module) -> None:
        super().__init__(backbone, heads)
