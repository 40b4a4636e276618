"""The Python API, for notebooks: :func:`run` a sweep, :func:`load` its trials as a DataFrame,
:func:`run_experiment` one experiment, :func:`best_experiment` the winning configuration.

Each function validates its input exactly as the command line does and raises
:class:`~clsweep.spec.errors.SpecError` (never SystemExit) listing the problems. Heavy libraries
(torch, Ray, MLflow, pandas) are imported inside the functions, so ``import clsweep`` stays cheap.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clsweep.spec.errors import Problem, SpecError

if TYPE_CHECKING:
    import pandas as pd

    from clsweep.report.load import SweepData
    from clsweep.spec.sweep import SweepPlan

__all__ = ["BestTrial", "SweepResult", "SweepTrials", "best_experiment", "load", "run", "run_experiment"]

STAGE_TAG = "clsweep.stage"
"""A trial's stage (``search``, or ``confirm`` for re-runs of the winner); absent means search."""


@dataclass(frozen=True)
class SweepResult:
    """Where :func:`run` left a sweep."""

    name: str
    exit_code: int
    """What ``clsweep run`` would exit with: 0 ok, 1 a trial failed or tracking records were lost."""
    complete: bool
    counts: dict[str, int]
    """Trials per state: finished, pruned, failed, running, pending, paused."""
    objective: list[str]
    """The objective metric(s), each as ``metric (mode)``."""
    best_config: dict[str, Any] | None
    """The best configuration's searched values (first of the Pareto front for two objectives)."""
    best_value: tuple[float, ...] | None
    """Its objective value(s), the mean over its seeds."""
    sweep_dir: Path
    tracking_uri: str
    experiment: str
    parent_run_id: str | None
    report: Path | None
    """The report's index.html (None when not written)."""
    lost_records: int = 0
    """Tracking records MLflow refused (or whose journal write failed): they are not in MLflow."""
    unsent: int = 0
    """Tracking records still in the sweep's journal (the server did not answer): ``clsweep sync``."""


def _plan_from(
    space: str | Path | Mapping[str, Any], overrides: Iterable[str], name: str | None
) -> SweepPlan:
    from clsweep.spec.sweep import apply_sweep_overrides, load_sweep, parse_sweep

    if isinstance(space, Mapping):
        data = apply_sweep_overrides(space, overrides)
        if name is not None:
            data["name"] = name
        return parse_sweep(data)
    return load_sweep(space, overrides, name=name)


def run(
    space: str | Path | Mapping[str, Any],
    *,
    overrides: Iterable[str] | None = None,
    name: str | None = None,
    storage: str | Path | None = None,
    tracking_uri: str | None = None,
    address: str | None = None,
    report: bool = True,
) -> SweepResult:
    """Run (or continue) a sweep as ``clsweep run SPACE`` does. ``space``: a sweep file or its
    mapping; ``overrides``: ``--set`` strings (``"searcher.samples=4"``). Prints the summary."""
    import time

    from clsweep.common import DEFAULT_STORAGE
    from clsweep.sweep.commands import run_sweep

    started = time.monotonic()
    spec = _plan_from(space, overrides or (), name)
    source = None if isinstance(space, Mapping) else str(Path(space).resolve())
    code, outcome, index = run_sweep(
        spec,
        storage=storage if storage is not None else DEFAULT_STORAGE,
        tracking_uri=tracking_uri,
        address=address,
        source=source,
        no_report=not report,
        started=started,
    )
    plan, summary = outcome.plan, outcome.summary
    best = summary.best[0] if summary.best else None
    return SweepResult(
        name=spec.name,
        exit_code=code,
        complete=outcome.complete,
        counts=dict(summary.counts),
        objective=[f"{o.metric} ({o.mode})" for o in spec.objectives],
        best_config=dict(best.config) if best else None,
        best_value=tuple(best.values) if best else None,
        sweep_dir=plan.paths.sweep_dir,
        tracking_uri=plan.tracking_uri,
        experiment=plan.experiment,
        parent_run_id=outcome.parent_run_id,
        report=index.resolve() if index else None,
        lost_records=outcome.lost_records,
        unsent=outcome.unsent,
    )


def run_experiment(
    config_or_path: str | Path | Mapping[str, Any], *, overrides: Iterable[str] | None = None
) -> dict[str, Any]:
    """Run one experiment (no Ray) as ``clsweep experiment`` does; returns what it writes to
    results.json (accuracy matrices, ACC, BWT, forgetting, per-task metrics, the resolved config).
    A diverged run raises clsweep.training.NonFiniteLossError (its ``result``: the tasks done)."""
    from clsweep.spec import load_experiment
    from clsweep.spec.experiment import parse_experiment
    from clsweep.spec.loading import apply_overrides

    if isinstance(config_or_path, Mapping):
        nested = "experiment" in config_or_path
        given = list(overrides or ())
        if not nested:
            given = [o.removeprefix("experiment.") for o in given]
        data: Any = apply_overrides(config_or_path, given)
        cfg = (
            parse_experiment(data["experiment"], prefix=("experiment",)) if nested else parse_experiment(data)
        )
    else:
        cfg = load_experiment(config_or_path, overrides or ())
    from clsweep.experiment import run_experiment as run_cfg

    return run_cfg(cfg).to_dict()


# ---- reading a sweep back ------------------------------------------------------------------------


@dataclass
class SweepTrials:
    """A loaded sweep: per-task metrics and accuracy matrices of its trials, read on demand."""

    data: SweepData = field(repr=False)
    tags: dict[str, dict[str, str]] = field(repr=False)
    """Tags of each trial's run, by run id."""

    def __deepcopy__(self, memo: dict[int, Any]) -> SweepTrials:  # pandas copies DataFrame.attrs
        return self

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def plan(self) -> SweepPlan:
        from clsweep.spec.sweep import SweepPlan

        return SweepPlan.from_payload(self.data.plan)

    def run_id(self, trial_id: str) -> str:
        rows = self.data.trials[self.data.trials.trial_id == trial_id]
        if not len(rows):
            raise KeyError(f"no trial {trial_id!r} in sweep {self.name!r}")
        return str(rows.iloc[0]["run_id"])

    def per_task(self, trial_id: str) -> pd.DataFrame:
        """One row per task done (index: tasks done), one column per metric the trial logged."""
        import pandas as pd

        run_id = self.run_id(trial_id)
        columns = {key: dict(self.data.history(run_id, key)) for key in self.data.metric_keys(run_id)}
        frame = pd.DataFrame(columns).sort_index()
        frame.index.name = "tasks_done"
        return frame

    def matrix(self, trial_id: str, split: str = "test") -> pd.DataFrame | None:
        """The accuracy matrix R[t, j] of ``split`` (val or test): row t = after training task t,
        column j = evaluated on task j (NaN: not evaluated). None when the trial stored none."""
        import pandas as pd

        rows = self.data.matrix(self.run_id(trial_id), split)
        if rows is None:
            return None
        n = len(rows[0]) if rows else 0
        return pd.DataFrame(
            [[math.nan if v is None else v for v in row] for row in rows],
            index=pd.Index(range(1, len(rows) + 1), name="after_task"),
            columns=[f"task_{j + 1}" for j in range(n)],
        )


def _resolve(name: str, tracking_uri: str | None, storage: str | Path | None) -> SweepData:
    from clsweep.report.build import resolve_store
    from clsweep.report.load import load_sweep_runs

    uri, experiment, parent = resolve_store(
        name, tracking_uri=tracking_uri, experiment=None, parent_run_id=None, storage=storage
    )
    return load_sweep_runs(name, tracking_uri=uri, experiment=experiment, parent_run_id=parent)


def open_sweep(
    name: str, *, tracking_uri: str | None = None, storage: str | Path | None = None
) -> SweepTrials:
    """Sweep ``name`` as stored in MLflow (where ``clsweep report`` would look for it)."""
    from clsweep.tracking.store import search_all_runs

    data = _resolve(name, tracking_uri, storage)
    parent = data.parent["run_id"]
    runs = search_all_runs(data.client, [data.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    return SweepTrials(data, {r.info.run_id: dict(r.data.tags) for r in runs})


def searched_values(tags: Mapping[str, str]) -> dict[str, Any]:
    """The searched values of a trial (``clsweep.config`` tag), exactly as the trial used them."""
    try:
        return dict(json.loads(tags.get("clsweep.config", "{}")))
    except json.JSONDecodeError:
        return {}


def load(name: str, *, tracking_uri: str | None = None, storage: str | Path | None = None) -> pd.DataFrame:
    """The trials of sweep ``name``, one row each: trial_id, run_id, stage, status, seed, every
    searched parameter (its dotted name), tasks_done and the final value of every metric.
    ``df.attrs["sweep"]`` is a :class:`SweepTrials` (``.per_task(trial_id)``, ``.matrix(trial_id, split)``)."""
    import pandas as pd

    sweep = open_sweep(name, tracking_uri=tracking_uri, storage=storage)
    names = [p.name for p in sweep.plan.searched_params]
    metrics = sorted({k for m in sweep.data.trials.get("metrics", []) for k in m} - {"tasks_done"})
    rows = []
    for _, trial in sweep.data.trials.iterrows():
        tags = sweep.tags.get(trial["run_id"], {})
        values = searched_values(tags)
        rows.append(
            {
                "trial_id": trial["trial_id"],
                "run_id": trial["run_id"],
                "stage": tags.get(STAGE_TAG) or "search",
                "status": trial["state"],
                "seed": trial["seed"],
                **{n: values.get(n) for n in names},
                "tasks_done": trial["tasks_done"],
                **{m: trial["metrics"].get(m, math.nan) for m in metrics},
            }
        )
    columns = ["trial_id", "run_id", "stage", "status", "seed", *names, "tasks_done", *metrics]
    frame = pd.DataFrame(rows, columns=columns)
    frame.attrs["sweep"] = sweep
    return frame


@dataclass(frozen=True)
class BestTrial:
    """The winning trial of a sweep and the experiment that reproduces it."""

    sweep: str
    trial_id: str
    run_id: str
    stage: str
    objective: str
    """``metric (mode)``: the first objective (the one the winner is chosen by)."""
    value: float
    """The winner's objective value (the best configuration's best seed)."""
    mean: float
    """The mean over the seeds of its configuration."""
    seed: int | None
    protocol: str
    experiment: dict[str, Any]
    """The resolved experiment config, as ``clsweep experiment`` reads it."""


def best_experiment(sweep: SweepTrials) -> BestTrial:
    """The best configuration (finished trials of the ``confirm`` or ``final`` stage when there are
    any, else of the search; ranked by the mean over seeds of the first objective) and, among its
    seeds, the best trial, with its experiment rebuilt from the sweep's plan."""
    plan, trials = sweep.plan, sweep.data.trials
    metric, mode = plan.objectives[0].metric, str(plan.objectives[0].mode)
    rows = []
    for _, trial in trials[trials.state == "finished"].iterrows() if len(trials) else []:
        value = trial["metrics"].get(metric)
        if value is not None and math.isfinite(value):
            tags = sweep.tags.get(trial["run_id"], {})
            rows.append((tags.get(STAGE_TAG) or "search", trial["config_key"], float(value), trial, tags))
    confirmed = [r for r in rows if r[0] in ("confirm", "final")]
    rows = confirmed or rows
    if not rows:
        raise SpecError([Problem(("name",), f"sweep {plan.name!r} has no finished trial with {metric}")])
    sign = 1.0 if mode == "max" else -1.0
    groups: dict[str, list[Any]] = {}
    for row in rows:
        groups.setdefault(row[1], []).append(row)
    means = {k: sum(r[2] for r in g) / len(g) for k, g in groups.items()}
    key = max(means, key=lambda k: sign * means[k])
    stage, _, value, trial, tags = max(groups[key], key=lambda r: sign * r[2])
    config = {**searched_values(tags)}
    if trial["seed"] is not None:
        config["seed"] = int(trial["seed"])
    cfg = plan.experiment_for(config).to_dict()
    return BestTrial(
        sweep=plan.name,
        trial_id=str(trial["trial_id"]),
        run_id=str(trial["run_id"]),
        stage=stage,
        objective=f"{metric} ({mode})",
        value=value,
        mean=means[key],
        seed=config.get("seed"),
        protocol=plan.protocol_tag,
        experiment=cfg,
    )


def best_config_text(best: BestTrial) -> str:
    """The winner as an experiment config file, with a header comment saying where it comes from."""
    import yaml

    header = [
        f"# The best configuration of sweep {best.sweep!r} (protocol {best.protocol}):",
        f"# trial {best.trial_id} (MLflow run {best.run_id}, stage {best.stage}, seed {best.seed}),",
        f"# {best.objective} = {best.value:.6g} (mean over its configuration's seeds {best.mean:.6g}).",
        "# Run it with: clsweep experiment FILE",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(best.experiment, sort_keys=False)
