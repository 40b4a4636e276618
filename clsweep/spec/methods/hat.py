"""Declarations of the HAT family: HAT (Serra et al., ICML 2018), AdaHAT (Wang et al., ECML PKDD
2024) and CBPHAT (CLArena's HAT + continual backpropagation's contribution utility).

Each needs a HAT-mask backbone (tag ``hat_family``) and supports TIL. Torch-free.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from clsweep.registry import register

__all__ = ["ADAHAT_DEFAULT_ALPHA", "AGGREGATIONS", "INIT_MODES", "AdaHATParams", "CBPHATParams", "HATParams"]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


InitMode = Literal["N01", "U-11", "U01", "U-10", "last"]
Aggregation = Literal["min", "max"]
INIT_MODES: tuple[str, ...] = get_args(InitMode)
"""Task-embedding initialisations at a task start; `last` keeps the previous task's embedding."""
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
"""How two units' measures become a parameter's: min (HAT paper Eq. 2) or max."""


class HATParams(_Params):
    s_max: float = Field(400.0, gt=0.0)  # HAT paper §4 (grid {25..800}, §4.3)
    sparsity_strength: float = Field(0.75, ge=0.0)  # c in HAT paper Eq. 4; 0.75 from §4
    init_mode: InitMode = "N01"  # HAT paper §4: N(0,1)
    aggregation: Aggregation = "min"  # HAT paper Eq. 2 takes the min
    compensation_clamp: float = Field(50.0, gt=0.0)  # |s e| clamp in the cosh, joansj/hat thres_cosh
    embedding_clamp: float = Field(6.0, gt=0.0)  # e clamped to [-6, 6] after each step, joansj/hat thres_emb
    grad_clip_norm: float | None = Field(10000.0, gt=0.0)  # joansj/hat clipgrad (effectively off); None: off
    min_free_units: int = Field(10, ge=0)
    """The sparsity term is 0 when no more than this many free units remain (guards 0/0);
    10 as in CLArena's regulariser."""
    test_mask: Literal["binary", "soft"] = "binary"
    """The mask a finished task keeps (test time, and its share of the cumulative mask that
    conditions later gradients). `binary`: (e > 0), as CLArena stores it (backbones/base.py
    te_to_binary_mask, hat.py on_train_end) and the reference documents describe; old tasks are
    then exactly frozen (BWT 0). `soft`: sigmoid(s_max e), as the HAT authors' code does
    (joansj/hat src/approaches/hat.py: `mask = model.mask(task, s=smax)`, `mask_pre = max(mask_pre,
    mask)`, test forward at s=smax); a small s_max leaves gates far from 0/1, so old tasks forget."""


ADAHAT_DEFAULT_ALPHA: dict[str, float] = {"sgd": 0.1, "adam": 1e-6, "adamw": 1e-6}
"""AdaHAT's alpha when `alpha` is null, per optimiser. adam/adamw: 1e-6, every AdaHAT config
(Adam lr 1e-3; continual-learning-research configs/cl_algorithm/adahat.yaml). sgd: 0.1, measured
(table in clsweep/algorithms/adahat.py): with plain SGD 1e-6 is HAT (BWT 0) and 0.1 forgets about
as much as Adam does at 1e-6."""


class AdaHATParams(HATParams):
    alpha: float | None = Field(None, ge=0.0)
    """Adjustment intensity; null: the train optimiser's default (ADAHAT_DEFAULT_ALPHA). Adam hides
    a constant gradient scale until it nears its eps, so useful values there are about 1e-7..1e-5;
    plain SGD applies the scale to the update, so its useful range is about 1e-3..1."""
    eps: float = Field(0.1, gt=0.0)  # AdaHAT code default epsilon 0.1
    variant: Literal["adahat", "no_summative", "no_sparsity", "constant_alpha"] = "adahat"
    """The reference's ablations: importance replaced by the task index t (no_summative), sparsity
    R_l := 0 (no_sparsity), or a constant alpha multiplier on protected parameters (constant_alpha)."""


class CBPHATParams(AdaHATParams):
    utility_decay: float = Field(0.99, gt=0.0, le=1.0)
    """eta in U <- eta U + v (the per-task contribution-utility accumulator): 0.99, the decay of
    continual backpropagation (Dohare et al., Nature 2024; shibhansh/loss-of-plasticity
    lop/*/cfg/cbp.json), CLArena cbphat.py's `utility_decay_rate`."""


register(
    "algorithm",
    "hat",
    "clsweep.algorithms.hat:HAT",
    params=HATParams,
    paradigms=("til",),
    tags=("hat_family",),
    summary="Hard Attention to the Task (Serra et al., ICML 2018)",
)
register(
    "algorithm",
    "adahat",
    "clsweep.algorithms.adahat:AdaHAT",
    params=AdaHATParams,
    paradigms=("til",),
    tags=("hat_family",),
    summary="HAT + adaptive soft gradient clipping (Wang et al., ECML PKDD 2024)",
)
register(
    "algorithm",
    "cbphat",
    "clsweep.algorithms.cbphat:CBPHAT",
    params=CBPHATParams,
    paradigms=("til",),
    tags=("hat_family",),
    summary="AdaHAT + continual-backprop contribution utility as unit importance (CLArena's CBPHAT)",
)
