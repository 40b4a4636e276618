"""Everything a report shows, computed once from the runs read back from MLflow.

:func:`analyze` turns :class:`~clsweep.report.load.SweepData` into an :class:`Analysis`: trial
counts and compute time, the best configurations with mean and spread over seeds, the objective
history, parameter importance, the best trial's accuracy matrices and per-task curves, capacity
per layer for HAT-family trials, the algorithms x benchmarks table of benchmark sweeps, and where
pruned trials stopped. ``Analysis.summary()`` is the JSON written as ``summary.json``; the HTML and
Markdown pages are rendered from the same object, so they show the same numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from clsweep.common import better, pareto_front
from clsweep.report.confirmation import STAGES, confirmation_summary
from clsweep.report.honesty import leak_gap, rung_fidelity, test_counterpart
from clsweep.report.importance import param_importance, rung_importance
from clsweep.report.load import SweepData
from clsweep.report.setup import Setup, read_setup, recorded_versions, short_name
from clsweep.report.stats import clean, spread

__all__ = ["Analysis", "analyze"]

FORMAT = 1
EXTRA_METRICS = ("avg_acc_test", "bwt_test", "forgetting_test")
"""Shown beside the objective for the best configurations and in the benchmark table."""
CURVE_KEYS = ("avg_acc", "bwt", "forgetting", "acc_current")
UPPER_REFERENCES = ("joint",)
"""Methods that see every past task's data: shown apart in the benchmark table, never marked best."""


@dataclass
class Analysis:
    data: SweepData
    setup: Setup
    versions: dict[str, Any]
    counts: dict[str, int]
    compute: dict[str, float | None]
    trials: list[dict[str, Any]]
    top: list[dict[str, Any]]
    history: list[dict[str, Any]]
    importance: dict[str, Any]
    best: dict[str, Any] | None
    capacity: dict[str, Any] | None
    benchmark: dict[str, Any] | None
    pruned: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """Objective per task of every trial that reported (run id -> (tasks done, value))."""
    rung_importance: list[dict[str, Any]] = field(default_factory=list)
    rung_fidelity: dict[str, Any] = field(default_factory=dict)
    leak_gap: dict[str, Any] = field(default_factory=dict)
    confirmation: dict[str, Any] | None = None
    """The stage after the search (clsweep.report.confirmation); None when there was none."""

    @property
    def objective(self) -> tuple[str, str]:
        return self.setup.objectives[0]

    def summary(self) -> dict[str, Any]:
        d, s = self.data, self.setup
        return clean({
            "format": FORMAT,
            "sweep": {"name": d.name, "experiment": d.experiment, "tracking_uri": d.tracking_uri,
                      "parent_run_id": d.parent["run_id"], "status": d.parent["status"],
                      "description": s.description, "fingerprint": d.parent["tags"].get("clsweep.fingerprint")},
            "setup": {"objectives": [{"metric": m, "mode": mode} for m, mode in s.objectives],
                      "protocol": s.protocol, "protocol_note": s.protocol_note, "leaky": s.leaky,
                      "searcher": s.searcher, "scheduler": s.scheduler, "seeds": s.seeds, "budget": s.budget,
                      "resources": s.resources, "variants": s.variants,
                      "search": [{"name": p.name, "kind": p.kind, "log": p.log, "low": p.low, "high": p.high,
                                  "values": list(p.values)} for p in s.params]},
            "versions": self.versions, "counts": self.counts, "compute": self.compute, "trials": self.trials,
            "top_configurations": self.top, "history": self.history, "importance": self.importance,
            "best_trial": self.best, "capacity": self.capacity, "benchmark_table": self.benchmark,
            "pruned": self.pruned, "failed": self.failed,
            "objective_curves": {k: [list(p) for p in v] for k, v in self.curves.items()},
            "rung_importance": self.rung_importance, "rung_fidelity": self.rung_fidelity, "leak_gap": self.leak_gap,
            "confirmation": self.confirmation,
        })


def _final(row: pd.Series, metric: str) -> float | None:
    value = row["metrics"].get(metric)
    return float(value) if value is not None and math.isfinite(value) else None


def _trial_record(row: pd.Series, setup: Setup) -> dict[str, Any]:
    metrics = {m: _final(row, m) for m, _ in setup.objectives}
    metrics.update({m: _final(row, m) for m in EXTRA_METRICS if m in row["metrics"]})
    return {"run_id": row["run_id"], "trial_id": row["trial_id"], "state": row["state"], "seed": row["seed"],
            "stage": row.get("stage", "search"), "algorithm": row["algorithm"], "benchmark": row["benchmark"],
            "config": row["config"],
            "tasks_done": int(row["tasks_done"]), "tasks_total": row["tasks_total"], "metrics": metrics,
            "compute_s": row["compute_s"], "wall_s": row["wall_s"]}


def _groups(finished: pd.DataFrame, setup: Setup, keys: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Finished trials grouped by configuration (seeds pooled): spread of every objective and extra metric."""
    out = []
    for _, group in finished.groupby(["config_key", *keys], sort=False):
        first = group.iloc[0]
        entry: dict[str, Any] = {
            "config": first["config"], "seeds": sorted(int(s) for s in group["seed"] if s is not None and s == s),
            "run_ids": list(group["run_id"]), "trial_ids": list(group["trial_id"]),
            "algorithm": first["algorithm"], "benchmark": first["benchmark"], "objectives": {}, "metrics": {}}
        for k in keys:
            entry[k] = first[k]
        for metric, _ in setup.objectives:
            entry["objectives"][metric] = spread(_final(r, metric) for _, r in group.iterrows())
        for metric in EXTRA_METRICS:
            if metric not in entry["objectives"]:
                entry["metrics"][metric] = spread(_final(r, metric) for _, r in group.iterrows())
        out.append(entry)
    return out


def _rank(groups: list[dict[str, Any]], setup: Setup) -> list[dict[str, Any]]:
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


def _history(trials: pd.DataFrame, setup: Setup) -> list[dict[str, Any]]:
    metric, mode = setup.objectives[0]
    done = trials[trials.state.isin(["finished", "pruned"])].sort_values(["end", "start"], kind="stable")
    best: float | None = None
    out = []
    for order, (_, row) in enumerate(done.iterrows(), 1):
        value = _final(row, metric)
        if row["state"] == "finished" and value is not None and (best is None or better(value, best, mode)):
            best = value
        out.append({"order": order, "run_id": row["run_id"], "trial_id": row["trial_id"], "state": row["state"],
                    "value": value, "tasks_done": int(row["tasks_done"]), "best_so_far": best})
    return out


def _per_task(data: SweepData, run_id: str, prefixes: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    keys = [k for k in data.metric_keys(run_id) if k.startswith(prefixes)]
    return {k: data.history(run_id, k) for k in keys}


def _trial_detail(data: SweepData, row: pd.Series, setup: Setup) -> dict[str, Any]:
    run_id = row["run_id"]
    curves = _per_task(data, run_id, tuple(f"{k}_" for k in CURVE_KEYS) + ("loss_train", "epochs_run"))
    return {"run_id": run_id, "trial_id": row["trial_id"], "seed": row["seed"], "config": row["config"],
            "algorithm": row["algorithm"], "benchmark": row["benchmark"],
            "objectives": {m: _final(row, m) for m, _ in setup.objectives},
            "matrices": {split: data.matrix(run_id, split) for split in ("test", "val")},
            "per_task": {k: [list(p) for p in v] for k, v in curves.items()}}


def _capacity(data: SweepData, row: pd.Series | None) -> dict[str, Any] | None:
    if row is None:
        return None
    layers = {k.removeprefix("capacity/"): v for k, v in _per_task(data, row["run_id"], ("capacity/",)).items()}
    return {"run_id": row["run_id"], "trial_id": row["trial_id"], "algorithm": row["algorithm"],
            "layers": {k: [list(p) for p in v] for k, v in layers.items()},
            "mean": [list(p) for p in data.history(row["run_id"], "capacity_mean")]}


def _benchmark(finished: pd.DataFrame, setup: Setup) -> dict[str, Any] | None:
    """Algorithms x benchmarks (variant axes when the sweep has them), the best configuration per cell."""
    axes = list(setup.variants)
    frame = finished.copy()
    frame["row"] = [c.get(f"variants.{axes[0]}", a) if axes else a for c, a in zip(frame.config, frame.algorithm, strict=True)]
    frame["col"] = [c.get(f"variants.{axes[1]}", b) if len(axes) > 1 else b for c, b in zip(frame.config, frame.benchmark, strict=True)]
    rows, cols = list(dict.fromkeys(frame["row"])), list(dict.fromkeys(frame["col"]))
    several_methods = bool(axes) or frame["algorithm"].nunique() > 1
    if not several_methods or len(rows) * len(cols) < 2:
        return None
    metrics = [m for m, _ in setup.objectives] + [m for m in EXTRA_METRICS if m not in dict(setup.objectives)]
    metrics = [m for m in metrics if any(m in r for r in frame["metrics"])]
    cells: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in metrics}
    for g in _rank(_groups(frame, setup, ("row", "col")), setup):  # best configuration first
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
            present = [(r, cells[metric][r][col]["mean"]) for r in cells[metric]
                       if col in cells[metric][r] and r not in references]
            best[metric][col] = None
            if mode and len(present) > 1:
                pick = max if mode == "max" else min
                best[metric][col] = pick(present, key=lambda item: item[1])[0]
    return {"row_axis": axes[0] if axes else "algorithm", "col_axis": axes[1] if len(axes) > 1 else "benchmark",
            "rows": [str(r) for r in rows], "columns": [str(c) for c in cols], "metrics": metrics,
            "modes": {m: setup.mode(m) for m in metrics}, "cells": cells, "best": best, "references": references}


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no traceback recorded)"


def analyze(data: SweepData, *, top_k: int = 5) -> Analysis:
    """Everything but the ``confirmation`` section is of the search's runs; the best trial is the
    stage winner's best seed when a later stage ran (its numbers are the ones to report)."""
    everything = data.trials
    later = everything.stage.isin(STAGES) if len(everything) else pd.Series([], dtype=bool)
    trials, staged = everything[~later], everything[later]
    setup = read_setup(data.plan)
    metric, _mode = setup.objectives[0]
    finished = trials[trials.state == "finished"]
    states = list(trials.state)
    counts = {s: states.count(s) for s in ("finished", "pruned", "failed")}
    counts["other"] = len(states) - sum(counts.values())
    counts["runs"] = len(states)
    counts["budget"] = setup.budget  # type: ignore[assignment]
    parent = data.parent
    compute = {"trial_compute_s": float(pd.to_numeric(trials.compute_s, errors="coerce").sum()) if len(trials) else 0.0,
               "trial_wall_s": float(pd.to_numeric(trials.wall_s, errors="coerce").sum()) if len(trials) else 0.0,
               "sweep_wall_s": (parent["end"] - parent["start"]) if parent["end"] and parent["start"] else None}
    ranked = _rank(_groups(finished, setup), setup)
    importance = param_importance([g["config"] for g in ranked],
                                  [[g["objectives"][m]["mean"] for m, _ in setup.objectives] for g in ranked],
                                  setup.objectives, setup.params)
    confirmed = _rank(_groups(staged[staged.state == "finished"], setup), setup) if len(staged) else []
    confirmation = None
    if len(staged):
        stage = str(staged.iloc[0]["stage"])
        confirmation = confirmation_summary(stage, ranked, confirmed, metric)
    best_row = None
    chosen, pool = (confirmed, staged[staged.state == "finished"]) if confirmed else (ranked, finished)
    if chosen:
        group = pool[pool.run_id.isin(chosen[0]["run_ids"])]
        values = [(_final(r, metric), i) for i, r in group.iterrows()]
        pick = max if setup.objectives[0][1] == "max" else min
        best_row = group.loc[pick(v for v in values if v[0] is not None)[1]]
    hat_rows = [r for _, r in trials.iterrows() if any(k.startswith("capacity/") for k in r["metrics"])]
    cap_row = best_row if best_row is not None and any(k.startswith("capacity/") for k in best_row["metrics"]) else None
    if cap_row is None and hat_rows:
        hat_ids = {r["run_id"] for r in hat_rows}
        cap_row = next((finished.loc[finished.run_id == rid].iloc[0] for g in ranked for rid in g["run_ids"]
                        if rid in hat_ids), hat_rows[0])
    curves = {row["run_id"]: data.history(row["run_id"], metric) for _, row in trials.iterrows()
              if row["state"] in ("finished", "pruned") and metric in row["metrics"]}
    honesty = _honesty(trials, finished, ranked, curves, setup)
    pruned = [{**_trial_record(r, setup), "stopped_after": int(r["tasks_done"]), "value_at_stop": _final(r, metric)}
              for _, r in trials[trials.state == "pruned"].iterrows()]
    failed = [{**_trial_record(r, setup), "error": _last_line(data.artifact_text(r["run_id"], "traceback.txt"))}
              for _, r in trials[trials.state == "failed"].iterrows()]
    return Analysis(
        data=data, setup=setup, versions=recorded_versions(parent["tags"]), counts=counts, compute=compute,
        trials=[_trial_record(r, setup) for _, r in everything.iterrows()], top=ranked[:top_k],
        history=_history(trials, setup), importance=importance,
        best=_trial_detail(data, best_row, setup) if best_row is not None else None,
        capacity=_capacity(data, cap_row), benchmark=_benchmark(finished, setup) if len(finished) else None,
        pruned=pruned, failed=failed, curves=curves, confirmation=confirmation, **honesty)


def _honesty(trials: pd.DataFrame, finished: pd.DataFrame, ranked: list[dict[str, Any]],
             curves: dict[str, list[tuple[int, float]]], setup: Setup) -> dict[str, Any]:
    """Importance per rung, rung fidelity and the leak gap (clsweep.report.honesty)."""
    metric, mode = setup.objectives[0]
    by_step = {run: dict(points) for run, points in curves.items()}
    max_tasks = setup.plan.max_tasks
    keys = dict(zip(trials.run_id, trials.config_key, strict=True))
    configs = dict(zip(trials.config_key, trials.config, strict=True))
    rungs: dict[int, tuple[list[dict[str, Any]], list[float]]] = {}
    for k in range(1, max_tasks + 1):
        values: dict[str, list[float]] = {}
        for run, steps in by_step.items():
            if k in steps:
                values.setdefault(keys[run], []).append(steps[k])
        if values:
            rungs[k] = ([configs[c] for c in values], [sum(v) / len(v) for v in values.values()])
    done = [r for r, total, d in zip(finished.run_id, finished.tasks_total, finished.tasks_done, strict=True)
            if total is None or d >= total]
    test_metric, _ = test_counterpart(metric)
    groups = [{"config": g["config"], "method": g["config"].get("variants.method", g["algorithm"]),
               "means": {m: (g["objectives"].get(m) or g["metrics"].get(m) or {}).get("mean")
                         for m in (metric, test_metric)}} for g in ranked]
    for g, r in zip(groups, ranked, strict=True):
        if g["means"][test_metric] is None:  # the test counterpart is not an extra metric: average it here
            rows = finished[finished.run_id.isin(r["run_ids"])]
            found = [v for v in (_final(row, test_metric) for _, row in rows.iterrows()) if v is not None]
            g["means"][test_metric] = sum(found) / len(found) if found else None
    return {"rung_importance": rung_importance(rungs, mode, setup.params) if len(rungs) > 1 else [],
            "rung_fidelity": rung_fidelity(by_step, done, setup.scheduler, max_tasks),
            "leak_gap": leak_gap(groups, metric, mode, leaky_protocol=setup.leaky)}


def config_text(config: dict[str, Any]) -> str:
    """A configuration on one line: ``s_max=113.9, init_mode=U-11``."""
    parts = []
    for k, v in config.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif not isinstance(v, str):
            v = json.dumps(v)
        parts.append(f"{short_name(k)}={v}")
    return ", ".join(parts) or "(the fixed experiment)"
