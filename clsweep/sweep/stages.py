"""The stage after the search: given configurations re-run on given seeds, as a second Tune experiment.

- ``confirm`` (``confirm: {top_k, seeds}``): the ``top_k`` configurations of the search ranking
  (mean objective over their finished seeds, as in clsweep.sweep.summary) run again on ``seeds``
  new seeds, ``max(search seeds) + 1`` on (under ``benchmark.seed: trial`` new task orders too).
  The sweep's winner is the best mean over these runs.
- ``final`` (protocol first_task): the search trained task 1 only; its best configuration now runs
  the whole stream once per seed of the sweep.

What the stage runs is chosen once, when the search has ended, and written into the sweep record
(key ``stage``) before its Tune experiment is made: a driver killed during the stage, run again,
finds the record, does not touch the search and restores the stage's experiment from its folder
``<sweep>/<stage>/`` (its trials, checkpoints and status file live there). Stage trials carry the
stage in their config (``stage``), which tags their MLflow runs ``clsweep.stage`` and tells the
trial how many tasks to run.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from clsweep.spec.sweep import STAGE_KEY, SweepPlan
from clsweep.storage import STATUS_FILE, write_json
from clsweep.sweep.summary import ranking

__all__ = ["RECORD_KEY", "FixedPoints", "choose", "stage_dir", "stage_points", "stage_tuner"]

RECORD_KEY = "stage"
"""The sweep record's entry: name, configs, seeds and the search ranking they came from."""


def choose(spec: SweepPlan, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the later stage of ``spec`` runs, from the search's trial rows (the status file)."""
    name = spec.later_stage
    if name is None:
        raise ValueError(f"sweep {spec.name!r} has no stage after the search")
    objective = spec.objectives[0]
    ranked = ranking(rows, str(objective.mode))
    if name == "confirm" and spec.file.confirm is not None:
        top = ranked[: spec.file.confirm.top_k]
        first = max(spec.seeds) + 1
        seeds = list(range(first, first + spec.file.confirm.seeds))
    else:
        top, seeds = ranked[:1], list(spec.seeds)
    return {
        "name": name,
        "metric": objective.metric,
        "mode": str(objective.mode),
        "configs": [dict(b.config) for b in top],
        "seeds": seeds,
        "search_ranking": [
            {"config": dict(b.config), "mean": b.values[0], "seeds": list(b.seeds)} for b in ranked
        ],
    }


def begin(
    spec: SweepPlan, record: dict[str, Any], rows: Sequence[Mapping[str, Any]], path: Path
) -> dict[str, Any]:
    """Choose the stage's configurations and seeds and store them in the record (``path``). With
    no finished configuration there is nothing to run: nothing is stored and the sweep stays
    incomplete (a resume tries again once its failed trials are re-run)."""
    stage = choose(spec, rows)
    if stage["configs"]:
        record[RECORD_KEY] = stage
        write_json(path, record)
    return stage


def stage_points(stage: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every trial config of the stage: each configuration once per seed, in ranking order."""
    return [{**c, "seed": int(s), STAGE_KEY: stage["name"]} for c in stage["configs"] for s in stage["seeds"]]


def stage_dir(sweep_dir: Path, stage: Mapping[str, Any]) -> Path:
    return Path(sweep_dir) / str(stage["name"])


def stage_status(sweep_dir: Path, stage: Mapping[str, Any]) -> Path:
    return stage_dir(sweep_dir, stage) / STATUS_FILE


class FixedPoints(Searcher):
    """A searcher that proposes the given configs in order, then nothing. Its position is saved
    with Tune's experiment state; a config proposed again after a killed driver (the snapshot lags)
    adopts the lost trial's checkpoints and run (clsweep.sweep.adoption)."""

    def __init__(self, points: Sequence[Mapping[str, Any]]) -> None:
        super().__init__()
        self.points = [dict(p) for p in points]
        self.position = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.position >= len(self.points):
            return Searcher.FINISHED  # type: ignore[return-value]
        self.position += 1
        return dict(self.points[self.position - 1])

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        return None

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"points": self.points, "position": self.position}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)  # noqa: S301 - Tune's own file in the sweep folder
        self.points, self.position = state["points"], int(state["position"])


def stage_tuner(
    plan: Any,
    stage: Mapping[str, Any],
    callbacks: Sequence[Any],
    display: bool | None,
    forkserver: str | None = None,
) -> Any:
    """The stage's Tune experiment in ``<sweep>/<stage>/``, restored when a driver ran it before.
    ``plan``: the driver's Plan. Same trainable and callbacks as the search; no scheduler."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from clsweep.recovery import trial_folder_name
    from clsweep.sweep.adoption import AdoptionCallback
    from clsweep.sweep.progress import ProgressCallback
    from clsweep.sweep.stopping import StopCallback
    from clsweep.sweep.tracking_callback import MLflowCallback
    from clsweep.sweep.trial import train_trial
    from clsweep.sweep.tune_state import TrimCallback, VanishedCheckpoints, kept_result_keys

    spec: SweepPlan = plan.spec
    folder = stage_dir(plan.paths.sweep_dir, stage)
    points = stage_points(stage)
    payload = spec.payload()
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, plan=payload, forkserver=forkserver, sweep_dir=str(folder)),
        {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus},
    )
    if tune.Tuner.can_restore(str(folder)) and any(folder.glob("experiment_state-*.json")):
        return tune.Tuner.restore(str(folder), trainable=trainable, resume_errored=True)
    name = str(stage["name"])
    adoption = AdoptionCallback(folder)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=FixedPoints(points),
            num_samples=len(points),
            reuse_actors=True,
            max_concurrent_trials=spec.resources.max_concurrent,
            trial_dirname_creator=trial_folder_name,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(plan.paths.sweep_dir),
            verbose=0,
            callbacks=[
                StopCallback(),
                JsonLoggerCallback(),
                CSVLoggerCallback(),
                adoption,
                MLflowCallback(plan.paths.sweep_dir, payload, adoption, stage=name, total=len(points)),
                ProgressCallback(
                    payload, folder / STATUS_FILE, display=display, stage=name, total=len(points)
                ),
                *callbacks,
                VanishedCheckpoints(),
                TrimCallback(kept_result_keys(spec)),  # last: the others have seen the trial end
            ],
            failure_config=tune.FailureConfig(max_failures=spec.retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
