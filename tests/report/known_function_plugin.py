"""A test-only algorithm whose validation accuracy is a known function of its two knobs: ``mode``
(categorical) decides it, ``jitter`` (float) barely moves it. Loaded through ``imports:``."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from clsweep import registry
from clsweep.algorithms.finetuning import Finetuning

NOISE = {"sharp": 0.0, "blurred": 1.5, "blind": 1000.0}
"""Scale of the noise added to the logits at evaluation: none, some, all signal drowned."""


class KnownFunctionParams(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mode: Literal["sharp", "blurred", "blind"] = "sharp"
    jitter: float = Field(0.0, ge=0.0, le=0.01)


class KnownFunction(Finetuning):
    """Finetuning whose evaluation logits get seeded noise of scale NOISE[mode] + jitter."""

    @torch.no_grad()
    def evaluate_logits(self, x: Any, task_id: int) -> Any:
        logits = super().evaluate_logits(x, task_id)
        generator = torch.Generator(device=logits.device).manual_seed(1234 + task_id)
        scale = NOISE[self.params.mode] + self.params.jitter  # type: ignore[attr-defined]
        noise = torch.randn(logits.shape, generator=generator, device=logits.device)
        return logits + scale * noise * logits.abs().mean().clamp_min(1e-6)


if "known_function" not in registry.list_names("algorithm"):
    registry.register(
        "algorithm",
        "known_function",
        f"{__name__}:KnownFunction",
        params=KnownFunctionParams,
        summary="test only: accuracy a known function of mode and jitter",
        tags=("test_only",),
    )
