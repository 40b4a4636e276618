"""Output heads for each CL paradigm (TIL, CIL, DIL), multi-task and single-task runs, and the
masked single-layer multi-head. See :mod:`clsweep.heads.heads` for how each one is called."""

from __future__ import annotations

from clsweep.heads._base import MASKING_VALUE, TaskHeads
from clsweep.heads.heads import HeadDIL, HeadsCIL, HeadsMTL, HeadsTIL, HeadSTL
from clsweep.heads.masked import MaskedMultiHead

__all__ = [
    "MASKING_VALUE",
    "HeadDIL",
    "HeadSTL",
    "HeadsCIL",
    "HeadsMTL",
    "HeadsTIL",
    "MaskedMultiHead",
    "TaskHeads",
]
