"""Declaration of the `packnet` method: PackNet (Mallya & Lazebnik, CVPR 2018), iterative magnitude
pruning that packs tasks into disjoint sets of weights of one backbone."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from clsweep.registry import register

__all__ = ["PackNetParams"]


class PackNetParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prune_ratio: float = Field(0.75, gt=0.0, lt=1.0)
    """Fraction of the weights a task could train (the free ones) released after it, per layer, by
    smallest magnitude. 0.75: the paper's value for every task added after the first (§4; authors'
    code arunmallya/packnet src/scripts/run_all_sequence.sh: `0.75,0.75`); the paper prunes its first
    task (ImageNet) by 0.5 (src/scripts/run_imagenet_pruning.sh), as one value here holds for every
    task. 0.75 keeps 0.75**(t-1) of each layer free for task t (32% for the 5th task), 0.5 only 6%."""
    retrain_epochs: int = Field(10, ge=0)
    """Epochs of retraining the kept weights after pruning, at `train.lr` with a fresh optimiser:
    10, the authors' `--post_prune_epochs 10` (src/scripts/run_sequence.sh and
    run_imagenet_pruning.sh; the paper retrains at a 10x smaller learning rate, 1e-4 after 1e-3,
    which the task loop's second phase does not offer). 0: prune at the task's end, no retraining."""


register(
    "algorithm",
    "packnet",
    "clsweep.algorithms.packnet:PackNet",
    params=PackNetParams,
    paradigms=("til",),
    tags=("frozen_weights",),  # weight decay would shrink the weights old tasks keep
    summary="PackNet (Mallya & Lazebnik, CVPR 2018): prune, retrain, freeze a weight subset per task",
)
