"""Trials read back from MLflow, grouped by configuration: the pieces every part of the report
ranks and tabulates (the best configurations, the benchmark table, the leak gap)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from clsweep.common import pareto_front
from clsweep.report.setup import Setup
from clsweep.report.stats import spread

__all__ = ["CURVE_KEYS", "EXTRA_METRICS", "UPPER_REFERENCES", "final", "groups", "rank", "trial_record"]

EXTRA_METRICS = ("avg_acc_test", "bwt_test", "forgetting_test")
"""Shown beside the objective for the best configurations and in the benchmark table."""
CURVE_KEYS = ("avg_acc", "bwt", "forgetting", "acc_current")
UPPER_REFERENCES = ("joint",)
"""Methods that see every past task's data: shown apart in the benchmark table, never marked best."""


def final(row: pd.Series, metric: str) -> float | None:
    value = row["metrics"].get(metric)
    return float(value) if value is not None and math.isfinite(value) else None


def trial_record(row: pd.Series, setup: Setup) -> dict[str, Any]:
    metrics = {m: final(row, m) for m, _ in setup.objectives}
    metrics.update({m: final(row, m) for m in EXTRA_METRICS if m in row["metrics"]})
    return {
        "run_id": row["run_id"],
        "trial_id": row["trial_id"],
        "state": row["state"],
        "seed": row["seed"],
        "stage": row.get("stage", "search"),
        "algorithm": row["algorithm"],
        "benchmark": row["benchmark"],
        "config": row["config"],
        "tasks_done": int(row["tasks_done"]),
        "tasks_total": row["tasks_total"],
        "metrics": metrics,
        "compute_s": row["compute_s"],
        "wall_s": row["wall_s"],
    }


def groups(finished: pd.DataFrame, setup: Setup, keys: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Finished trials grouped by configuration (seeds pooled): spread of every objective and extra metric."""
    out = []
    for _, group in finished.groupby(["config_key", *keys], sort=False):
        first = group.iloc[0]
        entry: dict[str, Any] = {
            "config": first["config"],
            "seeds": sorted(int(s) for s in group["seed"] if s is not None and s == s),
            "run_ids": list(group["run_id"]),
            "trial_ids": list(group["trial_id"]),
            "algorithm": first["algorithm"],
            "benchmark": first["benchmark"],
            "objectives": {},
            "metrics": {},
        }
        for k in keys:
            entry[k] = first[k]
        for metric, _ in setup.objectives:
            entry["objectives"][metric] = spread(final(r, metric) for _, r in group.iterrows())
        for metric in EXTRA_METRICS:
            if metric not in entry["objectives"]:
                entry["metrics"][metric] = spread(final(r, metric) for _, r in group.iterrows())
        out.append(entry)
    return out


def rank(groups: list[dict[str, Any]], setup: Setup) -> list[dict[str, Any]]:
    metric, mode = setup.objectives[0]
    usable = [g for g in groups if g["objectives"][metric]["mean"] is not None]
    sign = -1.0 if mode == "max" else 1.0
    usable.sort(key=lambda g: sign * g["objectives"][metric]["mean"])
    if len(setup.objectives) > 1:
        points = [[g["objectives"][m]["mean"] for m, _ in setup.objectives] for g in usable]
        front = set(pareto_front(points, [mode for _, mode in setup.objectives]))
        for i, g in enumerate(usable):
            g["pareto"] = i in front
        usable.sort(key=lambda g: not g["pareto"])  # stable: the front first, each part by objective 1
    for rank, g in enumerate(usable, 1):
        g["rank"] = rank
    return usable
