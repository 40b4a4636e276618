"""Declaration of the `agem` method: averaged gradient episodic memory (clsweep.algorithms.agem)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from clsweep.registry import register

__all__ = ["AGEMParams"]


class AGEMParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    samples_per_class: int = Field(25, ge=1)
    """Episodic memory kept of each class of every finished task: 25, the A-GEM authors' permuted
    MNIST setting (facebookresearch/agem fc_permute_mnist.py SAMPLES_PER_CLASS = 25, i.e. 250
    samples per 10-class task)."""
    reference_batch_size: int | None = Field(None, ge=1)
    """Memory samples behind each reference gradient g_ref (distinct; the whole memory while it
    holds fewer). null: the training batch size, as Mammoth (models/agem.py draws
    `--minibatch_size`, which main.py sets to the dataset's batch size when unset); the extra
    forward/backward then costs about one more step. The A-GEM authors use 256 with batches of 10
    (facebookresearch/agem fc_permute_mnist.py EPS_MEM_BATCH_SIZE), about 4x a step's compute
    at batch 64."""


register(
    "algorithm",
    "agem",
    "clsweep.algorithms.agem:AGEM",
    params=AGEMParams,
    paradigms=("til", "cil"),
    summary="A-GEM: gradient projected against the episodic memory's (Chaudhry et al., ICLR 2019)",
)
