"""Tracking: MLflow runs of a sweep, written from the driver. MLflow is imported on first use."""

from __future__ import annotations

from clsweep.tracking.store import SweepTracker, check_tracking_uri, ui_command

__all__ = ["SweepTracker", "check_tracking_uri", "ui_command"]
