"""clsweep: a Ray-distributed hyperparameter and benchmark sweeper for continual learning.

Importing the package is cheap: nothing is imported here until an API name is first used (module
``__getattr__``), and the API functions import torch, Ray, MLflow or pandas only when called.

    import clsweep
    result = clsweep.run("search_spaces/quickstart.yaml", overrides=["searcher.samples=4"])
    trials = clsweep.load(result.name)            # pandas DataFrame, one row per trial
    trials.attrs["sweep"].matrix(trials.trial_id[0], "test")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clsweep.api import BestTrial, SweepResult, SweepTrials, best_experiment, load, run, run_experiment
    from clsweep.spec.errors import SpecError

__all__ = [
    "BestTrial",
    "SpecError",
    "SweepResult",
    "SweepTrials",
    "__version__",
    "best_experiment",
    "load",
    "run",
    "run_experiment",
]
__version__ = "0.1.0"

_LAZY = {
    "SpecError": "clsweep.spec.errors",
    **{n: "clsweep.api" for n in __all__ if n not in ("SpecError", "__version__")},
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clsweep' has no attribute {name!r}")
