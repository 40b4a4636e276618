"""Shared fixtures: every registered backbone built at a tiny size."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from clsweep import registry
from clsweep.backbones.base import CLBackbone

TINY: dict[str, Any] = {
    "hidden_dims": [12, 10],
    "channels": [4, 6, 8],
    "fc_dims": [12, 10],
    "base_width": 8,
}


def tiny_params(name: str, **overrides: Any) -> dict[str, Any]:
    """The declared defaults of backbone ``name``, shrunk to tiny sizes, validated by its model."""
    entry = registry.get("backbone", name)
    fields = entry.params.model_fields
    values = {k: v for k, v in TINY.items() if k in fields}
    values.update(overrides)
    return entry.params(**values).model_dump()


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    """These tensors are tiny: one intra-op thread is fastest, and on a shared few-core machine
    torch's default thread pool makes the folder several times slower. Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def build() -> Callable[..., CLBackbone]:
    """``build(name, input_shape=(3, 16, 16), **overrides)``: a tiny registered backbone, seeded."""

    def _build(name: str, input_shape: tuple[int, ...] = (3, 16, 16), **overrides: Any) -> CLBackbone:
        torch.manual_seed(0)
        backbone = registry.create("backbone", name, input_shape, **tiny_params(name, **overrides))
        backbone.setup_task_id(1)
        return backbone

    return _build


@pytest.fixture
def run_forward() -> Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """``run_forward(backbone, x, stage)`` -> (feature, hidden) for plain and HAT backbones alike;
    for a HAT backbone's test stage the current embedding is stored as task 1's mask first."""
    from clsweep.backbones.hat import HATMaskBackbone

    def _run(
        backbone: CLBackbone, x: torch.Tensor, stage: str
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not isinstance(backbone, HATMaskBackbone):
            return backbone(x, stage)
        if stage == "test":
            if 1 not in backbone.stored_task_ids:
                backbone.store_task_mask(1)
            feature, _, hidden = backbone(x, "test", 1)
        else:
            feature, _, hidden = backbone(x, stage, s_max=10.0, batch_idx=1, num_batches=2)
        return feature, hidden

    return _run


@pytest.fixture
def make_positive() -> Callable[[CLBackbone], CLBackbone]:
    """Set every weight to U(0.5, 1) / fan_in and every 1-D parameter (biases, norm affine) to
    U(0.5, 1), leaving task embeddings alone: with a positive input every unit whose gate is open
    is then strictly positive and every closed one exactly zero, and magnitudes stay bounded."""
    from clsweep.backbones.hat import HATMaskBackbone

    def _positive(backbone: CLBackbone) -> CLBackbone:
        skip = set()
        if isinstance(backbone, HATMaskBackbone):
            skip = {id(e) for e in backbone.embedding_parameters()}
        with torch.no_grad():
            for p in backbone.parameters():
                if id(p) in skip:
                    continue
                p.uniform_(0.5, 1.0)
                if p.dim() >= 2:
                    p.div_(p[0].numel())
        return backbone

    return _positive
