"""Declaration of the `lwf` method: Learning without Forgetting (Li & Hoiem, TPAMI 2017).

Implementation: :mod:`clsweep.algorithms.lwf`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from clsweep.registry import register

__all__ = ["LwFParams"]


class LwFParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    strength: float = Field(1.0, ge=0.0)
    """lambda_o of Li & Hoiem Eq. 1, the weight of the distillation loss on the old tasks' outputs:
    "set to 1 for most our experiments" (p. 5, as quoted in mmasana/FACIL src/approach/lwf.py,
    whose `--lamb` default is 1). Larger favours the old tasks over the new one."""
    temperature: float = Field(2.0, gt=0.0)
    """T of Li & Hoiem Eq. 2 (both distributions are softened as softmax(logits / T)): "We use
    T = 2 according to a grid search on a held out set" (p. 5); FACIL's default (`--T`)."""
    cil_cross_entropy: Literal["current", "seen"] = "current"
    """CIL only (TIL scores each task's own head either way): the classes the new task's
    cross-entropy ranges over. `current`: the current task's classes alone, as FACIL's LwF without
    exemplars (src/approach/lwf.py `criterion`: `cross_entropy(outputs[t], targets - task_offset[t])`)
    and PyCIL's (the new classes' logits); the old classes are then shaped by distillation only.
    `seen`: every class seen so far (Mammoth's models/lwf.py), which pushes the old classes' logits
    down on every new sample; on split digits it forgets the old tasks almost entirely."""


register(
    "algorithm",
    "lwf",
    "clsweep.algorithms.lwf:LwF",
    params=LwFParams,
    paradigms=("til", "cil"),
    summary="Learning without Forgetting (Li & Hoiem, 2017): distil the old model's old-task outputs",
)
