"""Read one sweep back from MLflow: the parent run, one row per trial, metric histories, artifacts.

Only MLflow's query API is used, so a report can be written from any store a sweep logged to
(the local sqlite store, or a tracking server), without Ray and without the sweep folder. The
layout read here is the one :mod:`clsweep.tracking.store` writes: a parent run tagged
``clsweep.role=sweep`` and ``clsweep.sweep=NAME`` holding ``sweep.yaml`` and the sweep's plan
(``plan.json``); child runs tagged
``mlflow.parentRunId``, ``clsweep.trial_id``, ``clsweep.status``, ``clsweep.seed``,
``clsweep.config`` (the searched values as JSON), with per-task metrics (step = tasks done) and
the artifacts ``acc_matrix_{val,test}.csv``, ``config.yaml`` and, for a failed trial,
``traceback.txt``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from clsweep.common import PLAN_ARTIFACT
from clsweep.spec.errors import Problem, SpecError
from clsweep.tracking.store import search_all_runs

__all__ = ["SweepData", "dedupe_by_step", "load_sweep_runs", "parse_matrix_csv"]

COLUMNS = [
    "run_id",
    "trial_id",
    "run_name",
    "state",
    "mlflow_status",
    "seed",
    "algorithm",
    "backbone",
    "benchmark",
    "paradigm",
    "config",
    "config_key",
    "tasks_done",
    "tasks_total",
    "start",
    "end",
    "wall_s",
    "compute_s",
    "metrics",
    "params",
    "stage",
]
MLFLOW_STATES = {
    "FINISHED": "finished",
    "KILLED": "pruned",
    "FAILED": "failed",
    "RUNNING": "running",
    "SCHEDULED": "pending",
}


def dedupe_by_step(points: list[tuple[int, int, float]]) -> list[tuple[int, float]]:
    """(step, timestamp, value) points -> one (step, value) per step, the last one logged.

    A resumed trial may log a task's metrics a second time; the later value wins (by timestamp,
    and by logging order between equal timestamps)."""
    ordered = sorted(enumerate(points), key=lambda item: (item[1][0], item[1][1], item[0]))
    last: dict[int, float] = {}
    for _, (step, _ts, value) in ordered:
        last[int(step)] = float(value)
    return sorted(last.items())


def parse_matrix_csv(text: str) -> list[list[float | None]]:
    """The accuracy matrix CSV the sweeper writes (header ``after_task, task_1, ...``; an empty cell
    is a task not evaluated) -> rows of floats / None."""
    rows = list(csv.reader(io.StringIO(text)))
    return [[float(cell) if cell.strip() else None for cell in row[1:]] for row in rows[1:] if row]


def _number(value: Any) -> Any:
    """A searched value as stored in the config tag: keep numbers numeric, the rest as is."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return value
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


@dataclass
class SweepData:
    """A sweep as read from MLflow. ``trials`` has one row per child run."""

    name: str
    tracking_uri: str
    experiment: str
    experiment_id: str
    parent: dict[str, Any]
    plan: dict[str, Any]
    """The sweep plan's payload (``plan.json`` of the parent run, SweepPlan.payload())."""
    trials: pd.DataFrame
    client: Any = field(repr=False)
    _histories: dict[tuple[str, str], list[tuple[int, float]]] = field(default_factory=dict, repr=False)
    _artifacts: dict[tuple[str, str], str | None] = field(default_factory=dict, repr=False)

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """Per-task values of one metric of one run: (step, value), deduplicated by step."""
        if (run_id, key) not in self._histories:
            points = [(m.step, m.timestamp, m.value) for m in self.client.get_metric_history(run_id, key)]
            self._histories[run_id, key] = [(s, v) for s, v in dedupe_by_step(points) if math.isfinite(v)]
        return self._histories[run_id, key]

    def metric_keys(self, run_id: str) -> list[str]:
        row = self.trials.loc[self.trials.run_id == run_id]
        return sorted(row.iloc[0]["metrics"]) if len(row) else []

    def artifact_text(self, run_id: str, path: str) -> str | None:
        """A text artifact of a run, or None when the run has no such file."""
        if (run_id, path) not in self._artifacts:
            self._artifacts[run_id, path] = _read_artifact(self.client, run_id, path)
        return self._artifacts[run_id, path]

    def matrix(self, run_id: str, split: str) -> list[list[float | None]] | None:
        text = self.artifact_text(run_id, f"acc_matrix_{split}.csv")
        return parse_matrix_csv(text) if text else None

    @property
    def histories_read(self) -> dict[str, dict[str, list[tuple[int, float]]]]:
        out: dict[str, dict[str, list[tuple[int, float]]]] = {}
        for (run_id, key), points in self._histories.items():
            out.setdefault(run_id, {})[key] = points
        return out


def _read_artifact(client: Any, run_id: str, path: str) -> str | None:
    from mlflow.exceptions import MlflowException

    folder, _, name = path.rpartition("/")
    try:
        listed = {Path(a.path).name for a in client.list_artifacts(run_id, folder or None)}
    except (MlflowException, OSError):
        return None
    if name not in listed:
        return None
    with tempfile.TemporaryDirectory(prefix="clsweep-report-") as tmp:
        local = client.download_artifacts(run_id, path, tmp)
        return Path(local).read_text(encoding="utf-8", errors="replace")


def _find_parent(
    client: Any, name: str, experiment: str | None, parent_run_id: str | None
) -> tuple[Any, Any]:
    from mlflow.exceptions import MlflowException

    if parent_run_id:
        try:
            run = client.get_run(parent_run_id)
        except MlflowException:
            raise SpecError(
                [Problem(("name",), f"no MLflow run {parent_run_id} (the parent run of sweep {name!r})")]
            ) from None
        return client.get_experiment(run.info.experiment_id), run
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        experiments = [exp] if exp is not None else []
    else:
        exp = client.get_experiment_by_name(name)
        experiments = [exp] if exp is not None else list(client.search_experiments())
    query = f"tags.`clsweep.role` = 'sweep' and tags.`clsweep.sweep` = '{name}'"
    for exp in experiments:
        runs = client.search_runs(
            [exp.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1
        )
        if runs:
            return exp, runs[0]
    where = f"experiment {experiment!r}" if experiment else "any experiment"
    raise SpecError(
        [Problem(("name",), f"no sweep {name!r} in {where} of the MLflow store {client.tracking_uri}")]
    )


def _trial_row(run: Any) -> dict[str, Any]:
    tags, params, info = run.data.tags, run.data.params, run.info
    try:
        config = {k: _number(v) for k, v in json.loads(tags.get("clsweep.config", "{}")).items()}
    except json.JSONDecodeError:
        config = {}
    state = tags.get("clsweep.status") or MLFLOW_STATES.get(info.status, info.status.lower())
    if info.status == "FAILED":
        state = "failed"
    metrics = {k: float(v) for k, v in run.data.metrics.items()}
    tasks_total = params.get("trial.tasks") or params.get("benchmark.num_tasks")
    start = info.start_time / 1000 if info.start_time else math.nan
    end = info.end_time / 1000 if info.end_time else math.nan
    seed = tags.get("clsweep.seed", params.get("seed"))
    source = tags.get("clsweep.source") or params.get("benchmark.source") or ""
    benchmark = tags.get("clsweep.benchmark") or params.get("benchmark.name") or "?"
    return {
        "run_id": info.run_id,
        "trial_id": tags.get("clsweep.trial_id", info.run_name or info.run_id),
        "run_name": info.run_name,
        "state": state,
        "mlflow_status": info.status,
        "seed": int(seed) if seed not in (None, "") and str(seed).lstrip("-").isdigit() else None,
        "algorithm": tags.get("clsweep.algorithm") or params.get("algorithm.name") or "?",
        "backbone": tags.get("clsweep.backbone") or params.get("backbone.name") or "?",
        "benchmark": f"{benchmark}/{source}" if source and source != "None" else benchmark,
        "paradigm": tags.get("clsweep.paradigm") or params.get("paradigm") or "?",
        "config": config,
        "config_key": json.dumps(config, sort_keys=True, default=str),
        "tasks_done": int(metrics["tasks_done"]) if "tasks_done" in metrics else 0,
        "tasks_total": int(float(tasks_total)) if tasks_total not in (None, "", "None") else None,
        "start": start,
        "end": end,
        "wall_s": end - start if end == end and start == start else math.nan,
        "compute_s": metrics.get("experiment_seconds", math.nan),
        "metrics": metrics,
        "params": dict(params),
        "stage": tags.get("clsweep.stage") or "search",
    }


def load_sweep_runs(
    name: str, *, tracking_uri: str, experiment: str | None = None, parent_run_id: str | None = None
) -> SweepData:
    """Read sweep ``name`` from the MLflow store at ``tracking_uri``. Raises SpecError when the
    store holds no such sweep."""
    import logging

    from mlflow import MlflowClient

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.is_file():  # do not let MLflow create an empty store
            raise SpecError([Problem(("--tracking-uri",), f"no MLflow store at {path}")])
    client = MlflowClient(tracking_uri=tracking_uri)
    exp, parent = _find_parent(client, name, experiment, parent_run_id)
    children = search_all_runs(
        client, [exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    rows = [_trial_row(r) for r in children]
    trials = pd.DataFrame(rows) if rows else pd.DataFrame(columns=COLUMNS)
    if len(trials):
        trials = trials.sort_values(["start", "trial_id"], kind="stable").reset_index(drop=True)
    info = parent.info
    data = SweepData(
        name=name,
        tracking_uri=tracking_uri,
        experiment=exp.name,
        experiment_id=exp.experiment_id,
        parent={
            "run_id": info.run_id,
            "status": info.status,
            "tags": dict(parent.data.tags),
            "start": info.start_time / 1000 if info.start_time else None,
            "end": info.end_time / 1000 if info.end_time else None,
        },
        plan={},
        trials=trials,
        client=client,
    )
    text = data.artifact_text(info.run_id, PLAN_ARTIFACT)
    if text is None:
        raise SpecError(
            [
                Problem(
                    ("name",),
                    f"the parent run {info.run_id} of sweep {name!r} holds no "
                    f"{PLAN_ARTIFACT}: it was not written by clsweep run",
                )
            ]
        )
    data.plan = json.loads(text)
    return data
