"""Declaration of the `er` method: experience replay with a reservoir buffer (clsweep.algorithms.er)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from clsweep.registry import register

__all__ = ["ERParams"]


class ERParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    buffer_size: int = Field(500, ge=1)
    """Samples the reservoir keeps, over all tasks. Mammoth's `--buffer_size` has no default
    (utils/args.py add_rehearsal_args: required); 500 is the middle of the sizes its benchmark
    reports (200 / 500 / 5120, Buzzega et al. 2020 "Dark Experience", Table 2), about 8% of the
    5 permuted-digit tasks' 6475 training samples (Chaudhry et al. 2019's tiny memories go down to
    one sample per class and task, abstract)."""
    replay_batch_size: int | None = Field(None, ge=1)
    """Samples drawn from the buffer per step (distinct; the whole buffer while it holds fewer);
    null: the training batch size, as Mammoth (`--minibatch_size` unset: main.py takes the
    dataset's batch size, so current and replay batches are equal as in the paper's Algorithm 1)."""


register(
    "algorithm",
    "er",
    "clsweep.algorithms.er:ER",
    params=ERParams,
    paradigms=("til", "cil"),
    summary="experience replay, reservoir buffer (Chaudhry et al. 2019, Tiny Episodic Memories)",
)
