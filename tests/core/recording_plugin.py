"""An out-of-tree algorithm that records the loop's hook calls (loaded through `imports:`)."""

from __future__ import annotations

from typing import Any

from clsweep import registry
from clsweep.algorithms.finetuning import Finetuning

CALLS: list[str] = []


class Recording(Finetuning):
    def setup_task(self, task_id: int, num_classes: int) -> None:
        CALLS.append(f"setup_task({task_id})")
        super().setup_task(task_id, num_classes)

    def on_task_data(self, task_id: int, data: Any) -> None:
        CALLS.append(f"on_task_data({task_id})")

    def on_task_start(self, task_id: int) -> None:
        CALLS.append(f"on_task_start({task_id})")

    def training_set(self, task_id: int, data: Any) -> Any:
        CALLS.append(f"training_set({task_id})")
        return super().training_set(task_id, data)

    def post_train_epochs(self, task_id: int) -> int:
        CALLS.append(f"post_train_epochs({task_id})")
        return 0

    def on_train_epoch_start(self) -> None:
        CALLS.append("on_train_epoch_start")

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        CALLS.append(f"training_step({batch_idx})")
        return super().training_step(batch, batch_idx)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        CALLS.append("on_before_optimizer_step")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        CALLS.append("on_train_batch_end")

    def on_task_end(self, task_id: int) -> None:
        CALLS.append(f"on_task_end({task_id})")

    def evaluate_logits(self, x: Any, task_id: int) -> Any:
        CALLS.append(f"evaluate({task_id})")
        return super().evaluate_logits(x, task_id)

    def diagnostics(self) -> dict[str, float]:
        CALLS.append("diagnostics")
        return {}


if "recording" not in registry.list_names("algorithm"):
    registry.register(
        "algorithm",
        "recording",
        f"{__name__}:Recording",
        summary="test only: records hook calls",
        tags=("test_only",),
    )
