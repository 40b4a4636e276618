"""clsweep: a Ray-distributed hyperparameter and benchmark sweeper for continual learning.

Importing the package is cheap: nothing heavy (torch, Ray, MLflow) is imported here.
"""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
