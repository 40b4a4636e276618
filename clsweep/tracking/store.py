"""MLflow, written from the sweep driver only: one parent run per sweep, one child run per trial.

The driver is the single writer (no sqlite contention, no trial needs the tracking URI). The
store, the experiment and the parent run are created before any trial starts (concurrent first
use of a fresh sqlite store races). Child runs carry ``clsweep.trial_id``, so a resumed sweep
finds the run of each trial again instead of creating a second one.
"""

from __future__ import annotations

import importlib.util
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from clsweep.common import PLAN_ARTIFACT
from clsweep.recovery import orphan_runs
from clsweep.spec.errors import Problem, SpecError

__all__ = ["SweepTracker", "check_tracking_uri", "search_all_runs", "ui_command"]

TRIAL_ID = "clsweep.trial_id"
STATUS = "clsweep.status"
_MAX_PARAM = 6000  # MLflow's limit on a param value
_PAGE = 1000  # runs per search request


def search_all_runs(
    client: Any, experiment_ids: Sequence[str], filter_string: str = "", **kwargs: Any
) -> list[Any]:
    """Every run ``client.search_runs`` finds, over all its pages (one page holds at most 1000).
    ``kwargs``: passed on (``order_by``, ``run_view_type``)."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            list(experiment_ids), filter_string, max_results=_PAGE, page_token=token, **kwargs
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


_DATABASES = {"postgresql": ("psycopg2",), "mysql": ("mysqldb",), "mssql": ("pyodbc",)}
"""SQLAlchemy dialects MLflow accepts as a tracking store, with their default driver."""
_DRIVERS = {
    "psycopg2": "psycopg2",
    "psycopg": "psycopg",
    "pg8000": "pg8000",
    "mysqldb": "MySQLdb",
    "pymysql": "pymysql",
    "mysqlconnector": "mysql.connector",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}
_PACKAGES = {
    "psycopg2": "psycopg2-binary",
    "mysqldb": "mysqlclient",
    "mysqlconnector": "mysql-connector-python",
}


def check_tracking_uri(uri: str, *, timeout: float = 3.0) -> None:
    """Raise SpecError (bad input) when the store cannot be used; writes nothing.

    http(s): the server must answer ``/health``. sqlite: the folder of the file must exist or be
    creatable. ``file:`` stores are refused by MLflow since 3.13. Other database URIs are passed on."""
    where = ("tracking", "uri")
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:  # noqa: S310
                if response.status != 200:
                    raise SpecError(
                        [Problem(where, f"MLflow server {uri} answered {response.status} on /health")]
                    )
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise SpecError(
                [Problem(where, f"cannot reach the MLflow tracking server {uri}: {reason}")]
            ) from None
    elif uri.startswith("sqlite:"):
        path = uri.removeprefix("sqlite:///")
        if path == uri or not path.startswith("/"):
            raise SpecError(
                [
                    Problem(
                        where,
                        f"{uri!r}: use an absolute path, sqlite:////abs/path/mlflow.db "
                        "(trials run in other working directories)",
                    )
                ]
            )
        folder = Path(path).parent
        existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
        if not existing.is_dir():
            raise SpecError([Problem(where, f"{existing} is not a folder")])
    elif (scheme := uri.split("://", 1)[0].split("+", 1)) and scheme[0] in _DATABASES:
        dialect, driver = scheme[0], scheme[1] if len(scheme) > 1 else _DATABASES[scheme[0]][0]
        module = _DRIVERS.get(driver, driver)
        if importlib.util.find_spec(module) is None:
            raise SpecError(
                [
                    Problem(
                        where,
                        f"{uri.split('@')[-1] if '@' in uri else uri!r}: a {dialect} tracking store "
                        f"needs the {driver} driver (pip install {_PACKAGES.get(driver, driver)})",
                    )
                ]
            )
    elif uri.startswith(("databricks", "uc:")):
        raise SpecError(
            [
                Problem(
                    where,
                    f"{uri!r}: Databricks tracking is not supported by clsweep; use an http:// "
                    "MLflow server or a database URI",
                )
            ]
        )
    elif uri.startswith("file:") or "://" not in uri:
        raise SpecError(
            [
                Problem(
                    where,
                    f"{uri!r}: MLflow (3.13+) refuses file stores; use sqlite:////abs/mlflow.db "
                    "or an http:// tracking server",
                )
            ]
        )


def ui_command(uri: str) -> str:
    """What to run to look at the runs (the URL opens MLflow 3's "Model training" side)."""
    from clsweep.tracking.mlflow_ui import OPEN_TRAINING_RUNS

    if uri.startswith(("http://", "https://")):
        return f"open {uri.rstrip('/')}/#/experiments?{OPEN_TRAINING_RUNS}"
    return f"mlflow ui --backend-store-uri {uri}, then open http://127.0.0.1:5000/#/experiments?{OPEN_TRAINING_RUNS}"


class SweepTracker:
    """The MLflow side of one sweep. Picklable (the client is made on first use)."""

    def __init__(self, uri: str, experiment: str, sweep: str, *, artifact_root: Path | None = None) -> None:
        self.uri, self.experiment, self.sweep = uri, experiment, sweep
        self.artifact_root = artifact_root
        self.experiment_id: str | None = None
        self.parent_id: str | None = None
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    # ---- the sweep ------------------------------------------------------------------------------
    def open(
        self, parent_id: str | None, *, tags: Mapping[str, str], plan: Mapping[str, Any] | None = None
    ) -> str:
        """Create (or find) the experiment and the parent run; returns the parent run id. A new
        parent run stores the sweep file (``sweep.yaml``) and ``plan`` (SweepPlan.payload(), which
        the report reads) as artifacts."""
        import logging

        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables..."
        logging.getLogger("alembic").setLevel(logging.WARNING)
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            location = (self.artifact_root / self.experiment).as_uri() if self.artifact_root else None
            self.experiment_id = self.client.create_experiment(self.experiment, artifact_location=location)
        else:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id
        self._label_experiment(plan)
        if parent_id and self._exists(parent_id):
            self.client.update_run(parent_id, status="RUNNING")
            self.parent_id = parent_id
            return parent_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.sweep,
            tags={"clsweep.role": "sweep", "clsweep.sweep": self.sweep, **tags},
        )
        self.parent_id = run.info.run_id
        if plan is not None:
            from clsweep.spec.sweep import SweepPlan
            from clsweep.tracking.mlflow_ui import NOTE_TAG, describe

            self.set_tags(self.parent_id, {NOTE_TAG: describe(SweepPlan.from_payload(plan))})
            self.client.log_text(self.parent_id, yaml.safe_dump(plan["sweep"], sort_keys=False), "sweep.yaml")
            self.client.log_text(self.parent_id, json.dumps(plan, indent=1), PLAN_ARTIFACT)
        return self.parent_id

    def attach(self, parent_id: str) -> None:
        """Use the existing experiment and parent run (``clsweep sync``); creates nothing."""
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            raise LookupError(f"MLflow has no experiment {self.experiment!r} at {self.uri}")
        self.experiment_id, self.parent_id = exp.experiment_id, parent_id

    def _label_experiment(self, plan: Mapping[str, Any] | None) -> None:
        """Open the experiment on its training runs (not MLflow 3's GenAI overview), and store the
        shared runs view with the sweep's objective and CL metrics as the first columns."""
        from clsweep.tracking.mlflow_ui import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, VIEW_TAG, shared_view

        self.client.set_experiment_tag(str(self.experiment_id), EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        if plan is not None:
            from clsweep.spec.sweep import SweepPlan

            view = shared_view(SweepPlan.from_payload(plan))
            self.client.set_experiment_tag(str(self.experiment_id), VIEW_TAG, view)

    def close(self, *, tags: Mapping[str, str], status: str = "FINISHED") -> None:
        if self.parent_id:
            self.set_tags(self.parent_id, tags)
            self.client.set_terminated(self.parent_id, status)

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False

    def children(self) -> list[Any]:
        """The trial runs of the sweep (children of the parent run)."""
        return search_all_runs(
            self.client, [str(self.experiment_id)], f"tags.mlflow.parentRunId = '{self.parent_id}'"
        )

    def delete_orphans(self, keep: Iterable[str], *, stage: str | None = None) -> list[str]:
        """Delete the child runs of trials not in ``keep`` (the trials Tune knows: a run whose trial
        Tune lost with a killed driver and nobody adopted); returns their run ids. ``stage``: look
        among the runs of that stage only (runs without a stage tag are search runs)."""
        children = [
            r for r in self.children() if stage is None or r.data.tags.get("clsweep.stage", "search") == stage
        ]
        runs = ((r.info.run_id, r.data.tags.get(TRIAL_ID)) for r in children)
        gone = orphan_runs(runs, keep)
        for run_id in gone:
            self.client.delete_run(run_id)
        return gone

    # ---- trials ---------------------------------------------------------------------------------
    def find_trial(self, trial_id: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.mlflow.parentRunId = '{self.parent_id}' and tags.`{TRIAL_ID}` = '{trial_id}'",
            max_results=2,
        )
        return runs[0].info.run_id if runs else None

    def start_trial(
        self, trial_id: str, run_name: str, *, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={
                "mlflow.parentRunId": str(self.parent_id),
                "clsweep.role": "trial",
                "clsweep.sweep": self.sweep,
                TRIAL_ID: trial_id,
                STATUS: "running",
                **tags,
            },
        )
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:_MAX_PARAM]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # log_batch takes at most 100 params
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_dataset(self, run_id: str, dataset: Mapping[str, str], *, context: str = "train") -> None:
        """Record what the run trained on as an MLflow dataset input (the runs table's Dataset
        column). ``dataset``: name, digest, source_type, source and profile (mlflow_ui.dataset_of)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        entry = DatasetInput(Dataset(**dataset), tags=[InputTag("mlflow.data.context", context)])
        self.client.log_inputs(run_id, datasets=[entry])

    def resume_trial(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")
        self.set_tags(run_id, {STATUS: "running"})

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], step: int, *, at: int | None = None
    ) -> None:
        """``at``: the metrics' time in ms (default now); the same metrics sent again with the same
        time are stored once (MLflow's SQL store drops exact duplicates)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000) if at is None else int(at)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[start : start + 1000])

    def logged_steps(self, run_id: str, key: str) -> set[int]:
        """The steps at which ``key`` was already logged to the run."""
        return {m.step for m in self.client.get_metric_history(run_id, key)}

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, text, path)

    def end_trial(self, run_id: str, state: str) -> None:
        """state: finished, pruned or failed (MLflow status FINISHED, KILLED, FAILED)."""
        self.set_tags(run_id, {STATUS: state})
        self.client.set_terminated(
            run_id, {"finished": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}[state]
        )
        forget_artifact_repo(run_id)

    def kill_running(self) -> list[str]:
        """Mark the sweep's trial runs still RUNNING as KILLED (tag ``interrupted``), and the parent
        run too: the sweep was stopped (Ctrl-C, SIGTERM); a resumed sweep sets them running again.
        Returns the trial run ids."""
        if not self.parent_id:
            return []
        killed = [r.info.run_id for r in self.children() if r.info.status == "RUNNING"]
        for run_id in killed:
            self.set_tags(run_id, {STATUS: "interrupted"})
            self.client.set_terminated(run_id, "KILLED")
        if self.client.get_run(self.parent_id).info.status != "KILLED":
            self.client.set_terminated(self.parent_id, "KILLED")
        return killed


def forget_artifact_repo(run_id: str) -> None:
    """Drop MLflow's cached artifact repository of an ended run. MLflow 3 keeps one per run it has
    logged an artifact to, up to 1024 runs (``_tracking_service/client.py``, ``_get_artifact_repo``;
    4-5 KB each): in a sweep of thousands of trials that is driver memory growing with every trial
    for runs that get no artifact again (a record sent again looks its run up afresh)."""
    from mlflow.tracking._tracking_service import utils

    cache = getattr(utils, "_artifact_repos_cache", None)
    if cache is not None:
        cache.pop(run_id, None)
