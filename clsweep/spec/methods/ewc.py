"""Declaration of the `ewc` method: Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017),
with online EWC (Schwarz et al., ICML 2018, "Progress & Compress") as an option.

Implementation: :mod:`clsweep.algorithms.ewc`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from clsweep.registry import register

__all__ = ["EWCParams"]


class EWCParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    strength: float = Field(500.0, ge=0.0)
    """lambda of Kirkpatrick et al. Eq. 3, the weight of the quadratic penalty (how much the old
    tasks matter against the new one). Its useful range scales with the Fisher, hence with the
    model and the data: references use 100 (GMvandeVen/continual-learning params/param_values.py,
    task-incremental permuted MNIST) to 5000 (mmasana/FACIL src/approach/ewc.py `--lamb`). 500:
    measured on configs/ewc_digits.yaml (mean BWT -0.006 over seeds 0-2). With plain SGD the
    penalty's curvature strength * sum_t F_t must stay below 2 / lr: 1000 diverged in task 5 of
    seed 1 and 5000 in task 2 there (lr 0.05, max F about 0.009)."""
    online: bool = False
    """False: one penalty per finished task, each with its own Fisher and anchor (Kirkpatrick et
    al., after Eq. 3: "two separate penalties"). True: online EWC (Schwarz et al. 2018), a
    single running Fisher gamma * F_old + F_new anchored at the last task's weights."""
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    """Online EWC's decay of the old Fisher (ignored unless `online`). 1.0: the default of
    GMvandeVen/continual-learning (params/options.py `--gamma`); Schwarz et al. use gamma < 1 to
    let very old tasks fade."""
    fisher_samples: int | None = Field(None, ge=1)
    """Training samples (a seeded random subset) that estimate the Fisher at the end of a task;
    null: all of the task's training split, as FACIL's default (src/approach/ewc.py
    `--fi-num-samples -1`)."""
    fisher_labels: Literal["true", "predicted"] = "true"
    """The label whose log-likelihood gradient is squared. `true`: the data's label, i.e. the
    empirical Fisher (FACIL `--fi-sampling-type true`; GMvandeVen/continual-learning
    `--fisher-labels true`). `predicted`: the model's most likely class (FACIL's default
    `max_pred`). Neither reference defaults to `true` (GMvandeVen's default is the exact
    expectation over the predictions, not offered here); the default is this project's choice."""


register(
    "algorithm",
    "ewc",
    "clsweep.algorithms.ewc:EWC",
    params=EWCParams,
    paradigms=("til", "cil"),
    summary="Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017); online EWC as an option",
)
