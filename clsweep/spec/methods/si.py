"""Declaration of the `si` method: Synaptic Intelligence (Zenke, Poole & Ganguli, ICML 2017).

Implementation: :mod:`clsweep.algorithms.si`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from clsweep.registry import register

__all__ = ["SIParams"]


class SIParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    strength: float = Field(10.0, ge=0.0)
    """c of Zenke et al. Eq. 4, the weight of the quadratic surrogate loss. 10: the value of
    GMvandeVen/continual-learning for task-incremental permuted MNIST (params/param_values.py
    `si_c`); FACIL's default is 0.1 (mmasana/FACIL src/approach/path_integral.py `--lamb`).
    Measured on configs/si_digits.yaml (seed 0, BWT): 0.1 -> -0.160 (finetuning -0.169), 1 ->
    -0.110, 10 -> -0.031; 100 diverges under SGD lr 0.05."""
    damping: float = Field(0.1, gt=0.0)
    """xi of Zenke et al. Eq. 5, added to the squared total displacement so that a parameter that
    barely moved does not get an unbounded importance. 0.1: FACIL's default
    (src/approach/path_integral.py `--damping`, "set to 0.1 in the MNIST case") and
    GMvandeVen/continual-learning (params/options.py `--epsilon`)."""


register(
    "algorithm",
    "si",
    "clsweep.algorithms.si:SI",
    params=SIParams,
    paradigms=("til", "cil"),
    summary="Synaptic Intelligence (Zenke et al., ICML 2017): path-integral importance",
)
