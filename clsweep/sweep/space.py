"""A validated sweep as Ray Tune objects: the Optuna searcher and the scheduler. Each searched
dimension becomes an Optuna distribution in :mod:`clsweep.optuna_space` (the one translation).

- tpe / random: Optuna samples each configuration through a define-by-run function that follows
  the ``when`` conditions in file order (variant axes first, as categorical choices). Right after a
  configuration is sampled, its repeats (other seeds, other values of ``grid`` entries) are
  enqueued in the Optuna study with the same values, so they run next, and every repeat is told to
  Optuna as an observation of the same point.
- grid: every grid point (variants x grid/choice values, conditions followed) is enqueued in file
  order at the start, once per seed; the sampler is never consulted. File order, not a shuffled
  order, so sweeps are reproducible and easy to follow.
- The seed of a trial travels as the Optuna user attribute ``clsweep.seed``, never as a parameter:
  the sampler must not learn from it.
- Schedulers use ``tasks_done`` as their time axis; pbt (clsweep.sweep.pbt) proposes later values
  itself, from a population of random draws.
"""

from __future__ import annotations

from itertools import product
from typing import Any

from clsweep.optuna_space import suggest, to_optuna_value
from clsweep.spec._config_checks import condition_context
from clsweep.spec.search_space import encode
from clsweep.spec.sweep import SweepPlan
from clsweep.sweep.searcher import SEED_ATTR, CLOptunaSearch

__all__ = ["DefineByRun", "make_scheduler", "make_searcher"]

TIME_ATTR = "tasks_done"


class DefineByRun:
    """Optuna define-by-run space of a sweep. Pickled with the searcher: holds only the plan's
    payload, from which the plan is rebuilt without enumerating the sweep."""

    def __init__(self, plan: SweepPlan) -> None:
        self.payload = plan.payload()
        self._plan: SweepPlan | None = plan

    def __getstate__(self) -> dict[str, Any]:
        return {"payload": self.payload, "_plan": None}

    @property
    def plan(self) -> SweepPlan:
        if self._plan is None:
            self._plan = SweepPlan.from_payload(self.payload)
        return self._plan

    def __call__(self, trial: Any) -> dict[str, Any]:
        plan = self.plan
        config: dict[str, Any] = {}
        axes = [p for p in plan.searched_params if p.kind == "variant"]
        for axis in axes:
            config[axis.name] = suggest(trial, axis)
        raw = plan.experiment_raw(config)
        for p in plan.params:
            if p.active(condition_context(config, raw)):
                config[p.name] = suggest(trial, p)
                raw = plan.experiment_raw(config)
        seed = trial.user_attrs.get(SEED_ATTR)
        if seed is None:  # a freshly sampled configuration: queue its repeats
            seed = plan.seeds[0]
            _enqueue_repeats(trial, plan, config)
        return {**config, "seed": int(seed)}


def _enqueue_repeats(trial: Any, spec: SweepPlan, config: dict[str, Any]) -> None:
    grid = spec.repeat_params
    mine = tuple(encode(config[p.name]) for p in grid)
    for values in product(*(p.values for p in grid)):
        for seed in spec.seeds:
            if tuple(encode(v) for v in values) == mine and seed == spec.seeds[0]:
                continue
            params = {
                **trial.params,
                **{p.name: to_optuna_value(p, v) for p, v in zip(grid, values, strict=True)},
            }
            trial.study.enqueue_trial(params, user_attrs={SEED_ATTR: seed})


def make_searcher(spec: SweepPlan) -> Any:
    """The Optuna searcher of a sweep; under scheduler pbt, its fixed first population
    (clsweep.sweep.pbt: PBT proposes every later config itself and refuses a searcher)."""
    if spec.scheduler.name == "pbt":
        from clsweep.sweep.pbt import Population, population

        return Population(population(spec, DefineByRun(spec)))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = spec.searcher.seed
    if spec.searcher.name == "tpe":
        conditional = any(p.when for p in spec.params)
        samples = spec.samples
        # group: conditional entries are sampled jointly within the configurations that have them
        sampler: Any = optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=max(2, min(10, samples // 2)),
            multivariate=True if conditional else None,
            group=conditional,
        )
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    metric = [o.metric for o in spec.objectives]
    mode = [str(o.mode) for o in spec.objectives]
    searcher = CLOptunaSearch(
        DefineByRun(spec),
        metric=metric if spec.multi_objective else metric[0],
        mode=mode if spec.multi_objective else mode[0],
        sampler=sampler,
        study_name=f"clsweep-{spec.name}",
    )
    if spec.searcher.name == "grid":
        for point in spec.grid_points:
            for s in spec.seeds:
                searcher.enqueue({k: encode(v) for k, v in point.items()}, seed=s)  # all categorical
    return searcher


def make_scheduler(spec: SweepPlan) -> Any:
    """ASHA or median stopping on ``tasks_done`` (choosing the next trial among the live ones:
    clsweep.sweep.tune_state), population-based training over tasks (clsweep.sweep.pbt); None
    for no early stopping (the driver then uses tune_state.LiveFirstFIFO)."""
    sched = spec.scheduler
    if sched.name == "none":
        return None
    if sched.name == "pbt":
        from clsweep.sweep.pbt import make_pbt

        return make_pbt(spec)
    metric, mode = spec.objectives[0].metric, spec.objectives[0].mode
    if sched.name == "asha":
        from clsweep.sweep.tune_state import LiveFirstASHA

        return LiveFirstASHA(
            time_attr=TIME_ATTR,
            metric=metric,
            mode=mode,
            max_t=spec.max_tasks,
            grace_period=sched.grace_period,
            reduction_factor=sched.reduction_factor,
        )
    from clsweep.sweep.tune_state import LiveFirstMedian

    # Median stopping compares a trial's best value so far with the others' running means; with
    # accuracy over seen tasks (which falls as tasks accumulate) it seldom stops anything, and it may
    # pause trials (they resume from their last task checkpoint). ASHA is the better default.
    return LiveFirstMedian(
        time_attr=TIME_ATTR,
        metric=metric,
        mode=mode,
        grace_period=sched.grace_period,
        min_samples_required=sched.min_samples_required,
    )
