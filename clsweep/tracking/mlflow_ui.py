"""What the MLflow UI shows of a sweep: the experiment's kind, the parent run's description, each
trial's benchmark as a dataset input, and a shared runs-table view with the sweep's metrics first.

MLflow 3.x labels an experiment by the tag ``mlflow.experimentKind`` (``custom_model_development``:
model training, shown in the experiment header). Which side the 3.17 UI opens on (GenAI overview
or Model training runs) is the browser's own setting (localStorage ``mlflow.workflowType``, GenAI
by default), overridden by the URL parameter ``workflowType=machine_learning``: the links clsweep
prints carry it (:func:`runs_url`).
The runs table's visible columns are UI state, kept by the browser; the only server-side way to
choose them is a *shared view*: an experiment tag ``mlflow.sharedViewState.<key>`` holding the
UI state as JSON, opened with ``?viewStateShareKey=<key>`` (what the UI's own "Share" button
writes). Nothing here imports MLflow; the store turns these values into MLflow calls.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from clsweep.spec.experiment import ExperimentConfig
from clsweep.spec.sweep import SweepPlan

__all__ = [
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "NOTE_TAG",
    "OPEN_TRAINING_RUNS",
    "VIEW_KEY",
    "VIEW_TAG",
    "dataset_of",
    "describe",
    "runs_url",
    "shared_view",
]

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # the UI's "training runs" kind (3.17 ExperimentKind enum)
NOTE_TAG = "mlflow.note.content"  # a run's description, rendered as markdown
VIEW_KEY = "clsweep"
OPEN_TRAINING_RUNS = "workflowType=machine_learning"  # the UI's "Model training" side
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
CL_METRICS = ("avg_acc_test", "bwt_test", "forgetting_test", "tasks_done")
"""Shown after the objective(s) in the shared runs view."""


def _column(section: str, key: str) -> str:
    return f"{section}.`{key}`"  # the UI's canonical column id


def shared_view(plan: SweepPlan) -> str:
    """The UI state of the shared view: the Dataset column, then the objective(s), then the main
    CL metrics, in that order (the value of the :data:`VIEW_TAG` experiment tag)."""
    metrics = list(dict.fromkeys([*(o.metric for o in plan.objectives), *CL_METRICS]))
    columns = [_column("attributes", "Dataset"), *(_column("metrics", m) for m in metrics)]
    return json.dumps({"selectedColumns": columns, "columnOrder": columns})


def runs_url(base: str, experiment_id: str) -> str:
    """The runs table of the experiment in the shared view, on a server at ``base``."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{OPEN_TRAINING_RUNS}&viewStateShareKey={VIEW_KEY}"


def dataset_of(cfg: ExperimentConfig) -> dict[str, str]:
    """What a trial trains on, as MLflow dataset fields (name, digest, source_type, source, profile):
    the benchmark's kind and data source, with its task count and seed in the source and profile."""
    bench = cfg.to_dict()["benchmark"]
    source = str(bench.get("source") or "")
    name = f"{bench['name']}/{source}" if source and source != "None" else str(bench["name"])
    text = json.dumps(bench, sort_keys=True, default=str)
    profile = {"num_tasks": cfg.num_tasks, "seed": bench.get("seed"), "paradigm": cfg.paradigm}
    return {
        "name": name,
        "digest": hashlib.sha256(text.encode()).hexdigest()[:12],
        "source_type": "clsweep",
        "source": text,
        "profile": json.dumps(profile, default=str),
    }


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _how(plan: SweepPlan) -> str:
    seeds = f"{len(plan.seeds)} seed{'s' if len(plan.seeds) != 1 else ''} ({', '.join(map(str, plan.seeds))})"
    if plan.searcher.name == "grid":
        return f"grid search over {plan.num_grid_points} configurations x {seeds}"
    repeats = [p for p in plan.repeat_params]
    grid = "".join(f" x {len(p.values)} values of {p.name}" for p in repeats)
    return f"{plan.searcher.name} search, {plan.samples} sampled configurations{grid} x {seeds}"


def _param(p: Any) -> str:
    if p.kind == "variant":
        return f"- `{p.name}`: one of {', '.join(map(str, p.values))}"
    where = f" when {', '.join(f'{k} in {list(v)}' for k, v in p.when)}" if p.when else ""
    if p.finite:
        return f"- `{p.name}`: {p.kind} of {', '.join(_value(v) for v in p.values)}{where}"
    return f"- `{p.name}`: {p.kind.replace('_', '-')} in [{_value(p.low)}, {_value(p.high)}]{where}"


def describe(plan: SweepPlan) -> str:
    """The sweep's plan in words (markdown): the parent run's description in the MLflow UI."""
    exp: Mapping[str, Any] = plan.experiment
    bench = exp.get("benchmark") or {}
    objective = " and ".join(f"{o.metric} ({o.mode})" for o in plan.objectives)
    protocol = plan.protocol_tag
    scheduler = plan.scheduler.name
    lines = [
        f"**clsweep sweep `{plan.name}`**: {plan.num_trials} trials, {_how(plan)}.",
        "",
        f"Each trial trains {(exp.get('algorithm') or {}).get('name', '?')} on "
        f"{(exp.get('backbone') or {}).get('name', '?')} over {bench.get('name', '?')}/"
        f"{bench.get('source', 'digits')} ({bench.get('num_tasks', '?')} tasks, benchmark seed "
        f"{bench.get('seed', 0)}, {exp.get('paradigm', 'til')}), one task after another.",
        f"Objective: {objective}; protocol: {protocol}; early stopping: "
        f"{'none' if scheduler == 'none' else f'{scheduler} after each task'}.",
        f"Resources per trial: {plan.resources.cpus} CPU, {plan.resources.gpus} GPU.",
    ]
    if plan.searched_params:
        lines += ["", "Searched:", *(_param(p) for p in plan.searched_params)]
    if plan.description:
        lines += ["", plan.description]
    return "\n".join(lines)
