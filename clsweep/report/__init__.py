"""Reports: ``clsweep report NAME`` reads a sweep back from MLflow into pandas and writes
``reports/NAME/`` (an offline HTML page, a Markdown page with PNG figures, ``summary.json`` and,
for benchmark sweeps, LaTeX tables).

Depends on MLflow's query API, pandas, matplotlib and (for parameter importance) Optuna; never on
Ray or torch. Importing this package imports none of them: they load when a report is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["report_sweep"]


def report_sweep(name: str, **options: Any) -> Path:
    """Write the report of sweep ``name``; returns the path of its ``index.html``.

    Options (keyword-only): ``tracking_uri``, ``experiment``, ``parent_run_id``, ``storage``,
    ``out`` (default ``reports/NAME``), ``top_k`` (default 5). See :func:`clsweep.report.build.report_sweep`."""
    from clsweep.report.build import report_sweep as build

    return build(name, **options)
