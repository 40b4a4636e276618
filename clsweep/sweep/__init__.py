"""The sweeper: a validated sweep file run as a Ray Tune experiment with Optuna proposing
configurations, one MLflow run per trial, per-task reports and checkpoints.

The only package of clsweep that imports Ray, and only in the modules that need it
(``space``, ``searcher``, ``trial``, ``driver``, the callbacks); ``commands``, ``storage`` and
``summary`` are Ray-free so that ``clsweep validate`` and ``clsweep status`` stay instant.
"""

from __future__ import annotations
