"""One real sweep for the API tests, run once per session through ``clsweep.run`` (a grid over the
learning rate whose three trials end finished, pruned by ASHA after task 1, and failed on a NaN
loss), in a scratch storage folder with its own sqlite MLflow store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

SWEEP: dict[str, Any] = {
    "name": "apisweep",
    "description": "API test sweep.",
    "experiment": {
        "seed": 4,
        "benchmark": {"name": "permuted", "source": "digits", "num_tasks": 3, "seed": 1},
        "backbone": {"name": "mlp", "hidden_dims": [32]},
        "algorithm": {"name": "finetuning"},
        "train": {"epochs": 2, "lr": 0.05},
    },
    "search": {"experiment.train.lr": {"grid": [0.05, 1.0e-5, 1.0e30]}},
    "searcher": {"name": "grid"},
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
    "resources": {"max_concurrent": 1},
    "retries": 0,
}


@pytest.fixture(scope="session")
def api_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """(the SweepResult of clsweep.run, the storage folder)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import clsweep

    storage = tmp_path_factory.mktemp("api-sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(storage)  # the report goes to ./reports/NAME
        result = clsweep.run(SWEEP, storage=storage / "runs")
    return result, storage / "runs"
