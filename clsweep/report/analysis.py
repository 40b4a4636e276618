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
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from clsweep.common import better
from clsweep.report.benchmark import benchmark_table
from clsweep.report.confirmation import STAGES, confirmation_summary
from clsweep.report.grouping import CURVE_KEYS, final, groups, rank, trial_record
from clsweep.report.honesty import honesty_of
from clsweep.report.importance import param_importance
from clsweep.report.load import SweepData
from clsweep.report.setup import Setup, read_setup, recorded_versions, short_name
from clsweep.report.stats import clean

__all__ = ["Analysis", "analyze"]

FORMAT = 1


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
        return clean(
            {
                "format": FORMAT,
                "sweep": {
                    "name": d.name,
                    "experiment": d.experiment,
                    "tracking_uri": d.tracking_uri,
                    "parent_run_id": d.parent["run_id"],
                    "status": d.parent["status"],
                    "description": s.description,
                    "fingerprint": d.parent["tags"].get("clsweep.fingerprint"),
                },
                "setup": {
                    "objectives": [{"metric": m, "mode": mode} for m, mode in s.objectives],
                    "protocol": s.protocol,
                    "protocol_note": s.protocol_note,
                    "leaky": s.leaky,
                    "searcher": s.searcher,
                    "scheduler": s.scheduler,
                    "seeds": s.seeds,
                    "budget": s.budget,
                    "resources": s.resources,
                    "variants": s.variants,
                    "search": [
                        {
                            "name": p.name,
                            "kind": p.kind,
                            "log": p.log,
                            "low": p.low,
                            "high": p.high,
                            "values": list(p.values),
                        }
                        for p in s.params
                    ],
                },
                "versions": self.versions,
                "counts": self.counts,
                "compute": self.compute,
                "trials": self.trials,
                "top_configurations": self.top,
                "history": self.history,
                "importance": self.importance,
                "best_trial": self.best,
                "capacity": self.capacity,
                "benchmark_table": self.benchmark,
                "pruned": self.pruned,
                "failed": self.failed,
                "objective_curves": {k: [list(p) for p in v] for k, v in self.curves.items()},
                "rung_importance": self.rung_importance,
                "rung_fidelity": self.rung_fidelity,
                "leak_gap": self.leak_gap,
                "confirmation": self.confirmation,
            }
        )


def _history(trials: pd.DataFrame, setup: Setup) -> list[dict[str, Any]]:
    metric, mode = setup.objectives[0]
    done = trials[trials.state.isin(["finished", "pruned"])].sort_values(["end", "start"], kind="stable")
    best: float | None = None
    out = []
    for order, (_, row) in enumerate(done.iterrows(), 1):
        value = final(row, metric)
        if row["state"] == "finished" and value is not None and (best is None or better(value, best, mode)):
            best = value
        out.append(
            {
                "order": order,
                "run_id": row["run_id"],
                "trial_id": row["trial_id"],
                "state": row["state"],
                "value": value,
                "tasks_done": int(row["tasks_done"]),
                "best_so_far": best,
            }
        )
    return out


def _per_task(data: SweepData, run_id: str, prefixes: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    keys = [k for k in data.metric_keys(run_id) if k.startswith(prefixes)]
    return {k: data.history(run_id, k) for k in keys}


def _trial_detail(data: SweepData, row: pd.Series, setup: Setup) -> dict[str, Any]:
    run_id = row["run_id"]
    curves = _per_task(data, run_id, tuple(f"{k}_" for k in CURVE_KEYS) + ("loss_train", "epochs_run"))
    return {
        "run_id": run_id,
        "trial_id": row["trial_id"],
        "seed": row["seed"],
        "config": row["config"],
        "algorithm": row["algorithm"],
        "benchmark": row["benchmark"],
        "objectives": {m: final(row, m) for m, _ in setup.objectives},
        "matrices": {split: data.matrix(run_id, split) for split in ("test", "val")},
        "per_task": {k: [list(p) for p in v] for k, v in curves.items()},
    }


def _capacity(data: SweepData, row: pd.Series | None) -> dict[str, Any] | None:
    if row is None:
        return None
    layers = {
        k.removeprefix("capacity/"): v for k, v in _per_task(data, row["run_id"], ("capacity/",)).items()
    }
    return {
        "run_id": row["run_id"],
        "trial_id": row["trial_id"],
        "algorithm": row["algorithm"],
        "layers": {k: [list(p) for p in v] for k, v in layers.items()},
        "mean": [list(p) for p in data.history(row["run_id"], "capacity_mean")],
    }


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
    compute = {
        "trial_compute_s": float(pd.to_numeric(trials.compute_s, errors="coerce").sum())
        if len(trials)
        else 0.0,
        "trial_wall_s": float(pd.to_numeric(trials.wall_s, errors="coerce").sum()) if len(trials) else 0.0,
        "sweep_wall_s": (parent["end"] - parent["start"]) if parent["end"] and parent["start"] else None,
    }
    ranked = rank(groups(finished, setup), setup)
    importance = param_importance(
        [g["config"] for g in ranked],
        [[g["objectives"][m]["mean"] for m, _ in setup.objectives] for g in ranked],
        setup.objectives,
        setup.params,
    )
    confirmed = rank(groups(staged[staged.state == "finished"], setup), setup) if len(staged) else []
    confirmation = None
    if len(staged):
        stage = str(staged.iloc[0]["stage"])
        confirmation = confirmation_summary(stage, ranked, confirmed, metric)
    best_row = None
    chosen, pool = (confirmed, staged[staged.state == "finished"]) if confirmed else (ranked, finished)
    if chosen:
        group = pool[pool.run_id.isin(chosen[0]["run_ids"])]
        values = [(final(r, metric), i) for i, r in group.iterrows()]
        pick = max if setup.objectives[0][1] == "max" else min
        best_row = group.loc[pick(v for v in values if v[0] is not None)[1]]
    hat_rows = [r for _, r in trials.iterrows() if any(k.startswith("capacity/") for k in r["metrics"])]
    cap_row = (
        best_row
        if best_row is not None and any(k.startswith("capacity/") for k in best_row["metrics"])
        else None
    )
    if cap_row is None and hat_rows:
        hat_ids = {r["run_id"] for r in hat_rows}
        cap_row = next(
            (
                finished.loc[finished.run_id == rid].iloc[0]
                for g in ranked
                for rid in g["run_ids"]
                if rid in hat_ids
            ),
            hat_rows[0],
        )
    curves = {
        row["run_id"]: data.history(row["run_id"], metric)
        for _, row in trials.iterrows()
        if row["state"] in ("finished", "pruned") and metric in row["metrics"]
    }
    honesty = honesty_of(trials, finished, ranked, curves, setup)
    pruned = [
        {**trial_record(r, setup), "stopped_after": int(r["tasks_done"]), "value_at_stop": final(r, metric)}
        for _, r in trials[trials.state == "pruned"].iterrows()
    ]
    failed = [
        {**trial_record(r, setup), "error": _last_line(data.artifact_text(r["run_id"], "traceback.txt"))}
        for _, r in trials[trials.state == "failed"].iterrows()
    ]
    return Analysis(
        data=data,
        setup=setup,
        versions=recorded_versions(parent["tags"]),
        counts=counts,
        compute=compute,
        trials=[trial_record(r, setup) for _, r in everything.iterrows()],
        top=ranked[:top_k],
        history=_history(trials, setup),
        importance=importance,
        best=_trial_detail(data, best_row, setup) if best_row is not None else None,
        capacity=_capacity(data, cap_row),
        benchmark=benchmark_table(finished, setup) if len(finished) else None,
        pruned=pruned,
        failed=failed,
        curves=curves,
        confirmation=confirmation,
        **honesty,
    )


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
