"""The algorithms x benchmarks table of a benchmark sweep: the best configuration of each cell,
mean and spread over its seeds, the best per column (the upper reference never marked)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from clsweep.report.grouping import EXTRA_METRICS, UPPER_REFERENCES, groups, rank
from clsweep.report.setup import Setup

__all__ = ["benchmark_table"]


def benchmark_table(finished: pd.DataFrame, setup: Setup) -> dict[str, Any] | None:
    """Algorithms x benchmarks (variant axes when the sweep has them), the best configuration per cell."""
    axes = list(setup.variants)
    frame = finished.copy()
    frame["row"] = [
        c.get(f"variants.{axes[0]}", a) if axes else a
        for c, a in zip(frame.config, frame.algorithm, strict=True)
    ]
    frame["col"] = [
        c.get(f"variants.{axes[1]}", b) if len(axes) > 1 else b
        for c, b in zip(frame.config, frame.benchmark, strict=True)
    ]
    rows, cols = list(dict.fromkeys(frame["row"])), list(dict.fromkeys(frame["col"]))
    several_methods = bool(axes) or frame["algorithm"].nunique() > 1
    if not several_methods or len(rows) * len(cols) < 2:
        return None
    metrics = [m for m, _ in setup.objectives] + [m for m in EXTRA_METRICS if m not in dict(setup.objectives)]
    metrics = [m for m in metrics if any(m in r for r in frame["metrics"])]
    cells: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in metrics}
    for g in rank(groups(frame, setup, ("row", "col")), setup):  # best configuration first
        for metric in metrics:
            stats = g["objectives"].get(metric) or g["metrics"].get(metric)
            cell = cells[metric].setdefault(str(g["row"]), {})
            if str(g["col"]) not in cell and stats and stats["mean"] is not None:
                cell[str(g["col"])] = {**stats, "config": g["config"], "run_ids": g["run_ids"]}
    algorithms = {str(r): a for r, a in zip(frame["row"], frame["algorithm"], strict=True)}
    references = [str(r) for r in rows if algorithms.get(str(r)) in UPPER_REFERENCES]
    best: dict[str, dict[str, str | None]] = {}
    for metric in metrics:
        mode = setup.mode(metric)
        best[metric] = {}
        for col in map(str, cols):
            present = [
                (r, cells[metric][r][col]["mean"])
                for r in cells[metric]
                if col in cells[metric][r] and r not in references
            ]
            best[metric][col] = None
            if mode and len(present) > 1:
                pick = max if mode == "max" else min
                best[metric][col] = pick(present, key=lambda item: item[1])[0]
    return {
        "row_axis": axes[0] if axes else "algorithm",
        "col_axis": axes[1] if len(axes) > 1 else "benchmark",
        "rows": [str(r) for r in rows],
        "columns": [str(c) for c in cols],
        "metrics": metrics,
        "modes": {m: setup.mode(m) for m in metrics},
        "cells": cells,
        "best": best,
        "references": references,
    }
