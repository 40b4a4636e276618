"""Population-based training over tasks (``protocol: current_task``, ``scheduler: pbt``).

Ray Tune's PopulationBasedTraining, synchronous, with ``tasks_done`` as its clock and one task as
its perturbation interval: once every live trial has reported task t, the trials in the bottom
``quantile`` (by the objective, the validation metric over the tasks seen so far) take over the
config and the task-t checkpoint of a trial in the top quantile and perturb the ``mutate`` knobs.
A trial never perturbs after its last task.

How new values are proposed: by PBT itself, not by Optuna. Each mutated knob of the copied
config is drawn afresh from its distribution with probability ``resample_probability``, else a
number is scaled by 0.8 or 1.2 and a choice moves to a neighbouring value; the result is then
put back inside the distribution (clipped to its bounds, on its step, whole for int). The first
values of the population are ``searcher.samples`` random draws (Optuna's RandomSampler, which
learns nothing from the trials' values).

A trial's knobs change at an exploit, so each result carries its lineage: for every task done so
far, the trial that trained it and the knob values it used (:data:`LINEAGE`, JSON text, copied
from the donor's checkpoint at an exploit), and the current knob values as numbers
(``pbt.<knob>``, logged to MLflow per task). clsweep.report.pbt draws the best lineage. A trial's
run ends tagged with the config it ended with (``clsweep.config``: the knobs of its last task).

Limits: Ray's PBT draws its perturbations from Python's global ``random`` and compares trials in
the order they arrive, so two runs of one sweep file agree on the first population only. All the
population's trials exist at once (PBT refuses a Searcher, and a generator that held trials back
would split the population): ``resources.max_concurrent`` does not apply, the CPUs and GPUs
decide how many train together. Every task checkpoint is kept (a donor's must outlive the copy).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.experiment import _convert_to_experiment_list
from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.search import BasicVariantGenerator

from clsweep.recovery import REPLAYED, save_result, saved_result
from clsweep.spec.search_space import Param, SearchEntry
from clsweep.spec.sweep import SweepPlan
from clsweep.sweep.tasks import Report

__all__ = [
    "LINEAGE",
    "Bounds",
    "Population",
    "TaskPBT",
    "knob_metric",
    "lineage_reporter",
    "make_pbt",
    "mutations",
    "population",
]

LINEAGE = "pbt_lineage"
"""Result key: JSON list, one entry per task done, ``{"task", "trial", "knobs"}``."""
TIME_ATTR = "tasks_done"


def knob_metric(path: str) -> str:
    """The metric name of a mutated knob: ``experiment.train.lr`` -> ``pbt.train.lr``."""
    return "pbt." + path.removeprefix("experiment.")


def _param(key: str, entry: SearchEntry) -> Param:
    return Param.from_entry(key, entry)


def mutations(spec: SweepPlan) -> dict[str, Any]:
    """The ``mutate`` entries as Ray Tune distributions (a choice as its list of values)."""
    out: dict[str, Any] = {}
    for key, entry in spec.scheduler.mutate.items():
        p = _param(key, entry)
        if p.finite:
            out[key] = list(p.values)
            continue
        assert p.low is not None and p.high is not None
        if p.kind == "int":
            low, high = int(p.low), int(p.high)
            out[key] = (
                tune.lograndint(low, high + 1)
                if p.log
                else tune.qrandint(low, high, int(p.step))
                if p.step
                else tune.randint(low, high + 1)
            )
        elif p.log:
            out[key] = tune.loguniform(p.low, p.high)
        else:
            out[key] = tune.quniform(p.low, p.high, p.step) if p.step else tune.uniform(p.low, p.high)
    return out


class Bounds:
    """PBT's ``custom_explore_fn``: a perturbed value put back inside its distribution. A plain
    class (Tune pickles the scheduler with the experiment state)."""

    def __init__(self, spec: SweepPlan) -> None:
        self.params = [_param(k, e) for k, e in spec.scheduler.mutate.items()]

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for p in self.params:
            value = config.get(p.name)
            if p.finite or not isinstance(value, (int, float)) or p.low is None or p.high is None:
                continue
            v = min(max(float(value), p.low), p.high)
            if p.step:  # on the grid low + k * step, not above high
                v = p.low + round((v - p.low) / p.step) * p.step
                v = v - p.step if v > p.high + 1e-12 else v
            config[p.name] = int(round(v)) if p.kind == "int" else v
        return config


class TaskPBT(PopulationBasedTraining):
    """Ray's synchronous PBT, with two changes. A trial which has done its last task is never
    perturbed (it is about to end). A result a restored trial sends again (marked ``replayed``) is
    no boundary: the trial trains on. And the barrier cannot dead-lock: Ray waits until every live
    trial has reached the next boundary, but after a restored sweep (the scheduler's clock starts
    again at 0 while the trials stand at their checkpoints) or when the trial that would complete
    the barrier ends instead, every trial waits, paused, and none is chosen to run. Then the
    barrier moves to one interval past the slowest waiting trial: that boundary goes without a
    perturbation and the sweep runs on."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if int(result.get(TIME_ATTR, 0)) >= int(result.get("tasks_total", math.inf)):
            return str(self.CONTINUE)
        if result.get(REPLAYED) and {TIME_ATTR, self._metric} <= result.keys() and trial in self._trial_state:
            # A stored result sent again after a restore (clsweep.recovery.resume_point): Tune's
            # checkpoint of the trial predates it. Paused here, the trial would be handed that old
            # checkpoint again, replay the same result and be paused again, for ever. The trial's
            # state moves to the replayed task and it trains on: that boundary goes unperturbed.
            state = self._trial_state[trial]
            self._save_trial_state(state, int(result[TIME_ATTR]), result, trial)
            state.last_perturbation_time = int(result[TIME_ATTR])
            return str(self.CONTINUE)
        return str(super().on_trial_result(tune_controller, trial, result))

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        chosen = super().choose_trial_to_run(tune_controller)
        if chosen is not None or not self._synch:
            return chosen
        trials = tune_controller.get_trials()
        waiting = [t for t in trials if t.status in (t.PENDING, t.PAUSED)]
        if not waiting or any(t.status == t.RUNNING for t in trials):
            return None  # a running trial may still complete the barrier
        slowest = min(self._trial_state[t].last_train_time for t in waiting)
        self._next_perturbation_sync = slowest + self._perturbation_interval
        return super().choose_trial_to_run(tune_controller)


def make_pbt(spec: SweepPlan) -> TaskPBT:
    """The scheduler of a ``pbt`` sweep (synchronous: every trial is compared at the same task)."""
    objective = spec.objectives[0]
    sched = spec.scheduler
    return TaskPBT(
        time_attr=TIME_ATTR,
        metric=objective.metric,
        mode=objective.mode,
        perturbation_interval=1,
        hyperparam_mutations=mutations(spec),
        quantile_fraction=sched.quantile,
        resample_probability=sched.resample_probability,
        custom_explore_fn=Bounds(spec),
        synch=True,
    )


def population(spec: SweepPlan, space: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    """The first configs of the population: ``spec.num_trials`` draws of Optuna's RandomSampler
    (seeded by ``searcher.seed``) through ``space``, the sweep's define-by-run space
    (clsweep.sweep.space.DefineByRun), the same translation a random sweep uses (conditions
    followed, each draw repeated for every seed)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.searcher.seed))
    return [space(study.ask()) for _ in range(spec.num_trials)]


class Population(BasicVariantGenerator):
    """Tune's plain generator run through a fixed list of configs. PBT refuses a Searcher, and
    this generator resolves a preset config only over keys its spec's config already has (the
    config's keys are dotted paths, so they are declared first, as constants)."""

    def __init__(self, configs: list[dict[str, Any]]) -> None:
        super().__init__(points_to_evaluate=[dict(c) for c in configs])
        self._keys = sorted({k for c in configs for k in c})

    def add_configurations(self, experiments: Any) -> None:
        listed = _convert_to_experiment_list(experiments)  # Ray 2.60: exported, underscored
        for experiment in listed:
            config = experiment.spec.setdefault("config", {})
            for key in self._keys:
                config.setdefault(key, None)
        super().add_configurations(listed)


def lineage_reporter(
    send: Report, spec: SweepPlan, config: Mapping[str, Any], trial_id: str | None, start_from: Path | None
) -> Report:
    """``send`` with each new result given the trial's lineage and knob values (see the module's
    docstring). The lineage so far comes from the checkpoint the trial starts from (its own, or the
    donor's at an exploit). The result stored in the checkpoint is rewritten with them, so that a
    trial copying this checkpoint inherits the lineage."""
    start = saved_result(start_from) if start_from is not None else None
    lineage: list[dict[str, Any]] = []
    if start is not None:
        lineage = list(json.loads(start.get(LINEAGE, "[]")))[: int(start["tasks_done"])]
    knobs = {k: config.get(k) for k in spec.scheduler.mutate}
    numbers = {
        knob_metric(k): float(v)
        for k, v in knobs.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }

    def report(result: dict[str, Any], checkpoint_dir: Path | None) -> None:
        if not result.get(REPLAYED):  # a replayed result carries the lineage it was stored with
            task = int(result[TIME_ATTR])
            lineage[:] = [*lineage[: task - 1], {"task": task, "trial": trial_id, "knobs": knobs}]
            result = {**result, **numbers, LINEAGE: json.dumps(lineage, default=str)}
            if checkpoint_dir is not None:
                save_result(Path(checkpoint_dir), result)
        send(result, checkpoint_dir)

    return report
