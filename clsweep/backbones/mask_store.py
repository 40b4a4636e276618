"""Buffers that hold HAT masks inside a module, so they live in ``state_dict()``.

Keys are layer names ('/' is allowed in buffer names). :class:`StoredTaskMasks` grows by one row
per stored task and resizes itself when a checkpoint with a different number of tasks is loaded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["StoredTaskMasks", "UnitBuffers"]


class UnitBuffers(nn.Module):
    """One float buffer per layer (keyed by layer name), shape ``(units,)``."""

    def __init__(self, units: dict[str, int]) -> None:
        super().__init__()
        for name, n in units.items():
            self.register_buffer(name, torch.zeros(n))

    def as_dict(self) -> dict[str, Tensor]:
        return {name: buf.clone() for name, buf in self._buffers.items() if buf is not None}


class StoredTaskMasks(nn.Module):
    """The binary masks of the stored tasks: ``task_ids`` of shape ``(T,)`` and, per layer, a
    buffer of shape ``(T, units)`` whose row ``k`` belongs to ``task_ids[k]``. Loading a state dict
    with a different ``T`` resizes the buffers first, so a fresh module accepts any checkpoint."""

    task_ids: Tensor

    def __init__(self, units: dict[str, int]) -> None:
        super().__init__()
        self.register_buffer("task_ids", torch.zeros(0, dtype=torch.long))
        self.layer_names = list(units)
        for name, n in units.items():
            self.register_buffer(name, torch.zeros(0, n))

    def ids(self) -> list[int]:
        return [int(t) for t in self.task_ids.tolist()]

    def rows(self, name: str) -> Tensor:
        return self._buffers[name]  # type: ignore[return-value]

    def put(self, task_id: int, masks: dict[str, Tensor]) -> None:
        ids = self.ids()
        if task_id in ids:
            row = ids.index(task_id)
            for name in self.layer_names:
                self.rows(name)[row] = masks[name]
            return
        self._buffers["task_ids"] = torch.cat([self.task_ids, self.task_ids.new_tensor([task_id])])
        for name in self.layer_names:
            self._buffers[name] = torch.cat([self.rows(name), masks[name].unsqueeze(0)])

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for name, buf in list(self._buffers.items()):
            incoming = state_dict.get(prefix + name)
            if buf is not None and incoming is not None and incoming.shape[1:] == buf.shape[1:]:
                self._buffers[name] = buf.new_empty(incoming.shape)
        super()._load_from_state_dict(state_dict, prefix, *args)
