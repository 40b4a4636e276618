"""Declaration of the `joint` method: multi-task training on every task seen so far (upper reference).

No hyperparameters: Joint changes only which data a task trains on, not how (its budget is the
train config's, see :mod:`clsweep.algorithms.joint`).
"""

from __future__ import annotations

from clsweep.registry import register

__all__: list[str] = []

register(
    "algorithm",
    "joint",
    "clsweep.algorithms.joint:Joint",
    paradigms=("til", "cil"),
    summary="train task t on the union of tasks 1..t (upper reference; needs all past data)",
)
