"""Declaration of the `independent` method: a fresh backbone per task, no transfer, no forgetting.

No hyperparameters: each task's backbone is the template re-initialised (the backbone config
decides its architecture and initialisation), see :mod:`clsweep.algorithms.independent`.
"""

from __future__ import annotations

from clsweep.registry import register

__all__: list[str] = []

register(
    "algorithm",
    "independent",
    "clsweep.algorithms.independent:Independent",
    paradigms=("til",),
    tags=("isolated",),  # old tasks' parameters never move: refused with decay on shared-layer heads
    summary="one freshly initialised backbone and head per task (no transfer; BWT exactly 0)",
)
