"""``clsweep export``: a sweep's trials, read back from MLflow, as an Optuna study in an Optuna RDB
storage (``sqlite:///study.db``, ``postgresql://...``), for optuna-dashboard and Optuna's analysis.

One study per sweep, with one direction per objective. Every trial keeps its state (finished ->
COMPLETE, pruned -> PRUNED with the value it stopped at, failed -> FAIL); its parameters are its
searched values under the distributions of the sweep's plan (clsweep.optuna_space, the one
translation of the search space into Optuna); the first objective after each task is an
intermediate value (step = tasks done); the seed, trial id, MLflow run id and stage are user
attributes. Trials still running or pending are left out.
"""

from __future__ import annotations

import datetime
import math
from typing import TYPE_CHECKING, Any, Literal

from clsweep.spec.errors import Problem, SpecError

if TYPE_CHECKING:
    from clsweep.api import SweepTrials

__all__ = ["export_optuna"]

STATES = {"finished": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL"}


def _when(seconds: Any) -> datetime.datetime | None:
    if seconds is None or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return None
    return datetime.datetime.fromtimestamp(float(seconds))


def export_optuna(
    sweep: SweepTrials, storage_url: str, *, study_name: str | None = None
) -> tuple[str, int, int]:
    """Write the trials of ``sweep`` to a new study in ``storage_url``; returns (study name, trials
    written, trials left out). Raises SpecError when the study exists already or the storage fails."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from clsweep.api import STAGE_TAG, searched_values
    from clsweep.optuna_space import distribution, to_optuna_value

    plan, data = sweep.plan, sweep.data
    name = study_name or plan.name
    directions: list[Literal["minimize", "maximize"]] = [
        "maximize" if str(o.mode) == "max" else "minimize" for o in plan.objectives
    ]
    metrics = [o.metric for o in plan.objectives]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(storage=storage_url, study_name=name, directions=directions)
    except optuna.exceptions.DuplicatedStudyError:
        raise SpecError(
            [Problem(("--study",), f"the Optuna storage {storage_url} already has a study {name!r}")]
        ) from None
    except Exception as err:  # noqa: BLE001 - a bad URL, a missing driver: bad input
        raise SpecError(
            [Problem(("--optuna-storage",), f"{storage_url}: {type(err).__name__}: {err}")]
        ) from None
    study.set_user_attr("clsweep.sweep", plan.name)
    study.set_user_attr("clsweep.protocol", plan.protocol_tag)
    study.set_user_attr("clsweep.objective", [f"{o.metric} ({o.mode})" for o in plan.objectives])
    study.set_user_attr("mlflow.tracking_uri", data.tracking_uri)
    study.set_user_attr("mlflow.parent_run_id", data.parent["run_id"])
    params = plan.searched_params
    written = skipped = 0
    trials = (
        data.trials.sort_values(["start", "trial_id"], kind="stable") if len(data.trials) else data.trials
    )
    for _, row in trials.iterrows():
        state = STATES.get(str(row["state"]))
        if state is None:
            skipped += 1
            continue
        tags = sweep.tags.get(row["run_id"], {})
        config = searched_values(tags)
        used = [p for p in params if p.name in config]
        finals = [row["metrics"].get(m) for m in metrics]
        complete = all(v is not None and math.isfinite(v) for v in finals)
        if state == "COMPLETE" and not complete:
            state = "FAIL"  # finished without an objective value: Optuna cannot rank it
        intermediate: dict[int, float] = {}
        if len(metrics) == 1 and state != "FAIL":
            intermediate = {int(s): float(v) for s, v in data.history(row["run_id"], metrics[0])}
        if state == "COMPLETE":
            values: list[float] | None = [float(v) for v in finals]
        elif state == "PRUNED" and len(metrics) == 1 and intermediate:
            values = [intermediate[max(intermediate)]]  # Optuna's convention: the value it stopped at
        else:
            values = None
        attrs = {
            "seed": row["seed"],
            "trial_id": row["trial_id"],
            "mlflow_run_id": row["run_id"],
            "stage": tags.get(STAGE_TAG) or "search",
            "tasks_done": int(row["tasks_done"]),
        }
        trial = create_trial(
            state=TrialState[state],
            values=values,
            params={p.name: to_optuna_value(p, config[p.name]) for p in used},
            distributions={p.name: distribution(p) for p in used},
            user_attrs=attrs,
            intermediate_values=intermediate,
        )
        start, end = _when(row["start"]), _when(row["end"])
        if start is not None:
            trial.datetime_start = start
        if end is not None and (trial.datetime_start is None or end >= trial.datetime_start):
            trial.datetime_complete = end
        study.add_trial(trial)
        written += 1
    return name, written, skipped
