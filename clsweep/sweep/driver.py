"""Running a sweep: check everything, then create the stores, start Ray and let Tune run the trials.

:func:`prepare` does every check that can fail on bad input (storage folder ownership, the
tracking store) and writes nothing. :func:`execute` then writes the sweep record, creates the
MLflow experiment and parent run, starts (or joins) Ray and runs or restores the Tune experiment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clsweep.recovery import trial_folder_name
from clsweep.spec.errors import Problem, SpecError
from clsweep.spec.sweep import SweepPlan
from clsweep.storage import SweepPaths, check_owner, new_record, read_json, write_json
from clsweep.sweep.forkserver_setup import start_forkserver
from clsweep.sweep.ray_setup import ray_environment, ray_logs_to
from clsweep.sweep.summary import Summary, summarize
from clsweep.sweep.tracking_session import TrackingSession, open_tracking, sync_journal
from clsweep.tracking.store import check_tracking_uri

__all__ = ["Outcome", "Plan", "execute", "prepare", "tracking_store"]

logger = logging.getLogger(__name__)


@dataclass
class Plan:
    spec: SweepPlan
    paths: SweepPaths
    record: dict[str, Any] | None
    """The stored record when the folder already belongs to this sweep (a resume)."""
    tracking_uri: str
    experiment: str
    address: str | None
    """The cluster to join (--address, cluster.address or RAY_ADDRESS); None: an embedded local Ray."""
    source: str | None = None


@dataclass
class Outcome:
    plan: Plan
    summary: Summary
    parent_run_id: str | None
    complete: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    lost_records: int = 0
    """Tracking records lost in this run of the sweep (refused by MLflow, a journal or status-file
    write that failed); the sweep went on without them."""
    unsent: int = 0
    """Tracking records still in the journal, not in MLflow (the server did not come back in
    time): ``clsweep sync`` sends them."""
    signal: int | None = None
    """The signal (SIGINT, SIGTERM) that stopped the sweep; it can be resumed."""
    stopped: str | None = None
    """Why the sweep was stopped otherwise (no node could place a trial); it can be resumed."""
    stage: str | None = None  # the later stage (confirm, final) the summary is of; None: the search's

    @property
    def failed(self) -> int:
        return self.summary.counts.get("failed", 0)


def prepare(
    spec: SweepPlan,
    *,
    storage: str | Path,
    tracking_uri: str | None = None,
    address: str | None = None,
    source: str | None = None,
) -> Plan:
    """All checks, no writes. Raises SpecError (exit status 2)."""
    from clsweep.sweep import lock
    from clsweep.sweep.cluster import check_launch, effective_address
    from clsweep.sweep.resources import check_machine

    paths = SweepPaths.at(storage, spec.name)
    record = check_owner(paths, spec.fingerprint)
    lock.check(paths)  # one driver per sweep
    uri = tracking_store(tracking_uri, spec, record, paths)
    if record and record.get("tracking_uri") and record["tracking_uri"] != uri:
        raise SpecError(
            [
                Problem(
                    ("--tracking-uri",),
                    f"sweep {spec.name!r} logs to {record['tracking_uri']}; it cannot move to {uri} halfway",
                )
            ]
        )
    given = address or spec.cluster.address
    check_launch(given, tracking_uri=uri, storage=storage)
    check_tracking_uri(uri)
    from clsweep.sweep.forkserver import setting

    setting()  # a malformed CLSWEEP_FORKSERVER is bad input too
    joined = effective_address(given)
    if joined is None:  # an embedded Ray gets this machine; a cluster is checked once joined
        check_machine(spec.resources.cpus, spec.resources.gpus)
    return Plan(spec, paths, record, uri, spec.tracking.experiment or spec.name, joined, source)


def tracking_store(
    given: str | None,
    spec: SweepPlan,
    record: dict[str, Any] | None,
    paths: SweepPaths,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The MLflow tracking URI, first set wins: ``--tracking-uri``, the sweep file's ``tracking.uri``,
    the one a resumed sweep recorded, ``MLFLOW_TRACKING_URI``, the sqlite file in the storage root."""
    env = os.environ if environ is None else environ
    return (
        given
        or spec.tracking.uri
        or (record or {}).get("tracking_uri")
        or env.get("MLFLOW_TRACKING_URI", "").strip()
        or paths.default_tracking_uri
    )


def _start_ray(plan: Plan, num_cpus: int | None) -> bool:
    """Join ``plan.address``, or start an embedded local Ray; False if Ray was already up. On a
    multi-node cluster or through Ray Client (ray://), every node must see the storage folder
    (checkpoints move between nodes and the driver's machine)."""
    import ray

    from clsweep.sweep import signals

    started = False
    if not ray.is_initialized():
        # "local": always a new embedded Ray, never one that an earlier `ray start` left running. It
        # starts no idle workers up front: Tune places each trial actor in a placement group, and
        # such actors always get a new worker process, so prestarted ones only take CPU at start-up.
        ray.init(
            address=plan.address or "local",
            num_cpus=num_cpus if plan.address is None else None,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            runtime_env=plan.spec.cluster.runtime_env or None,
            _system_config={"prestart_worker_first_driver": False} if plan.address is None else None,
        )
        started = True
        signals.reinstall()  # Ray's core worker took SIGTERM
    client = (plan.address or "").startswith("ray://")  # the driver's machine is not a cluster node
    if client or len([n for n in ray.nodes() if n.get("Alive")]) > 1:
        from clsweep.sweep.cluster import check_shared_storage

        try:
            check_shared_storage(plan.paths.storage)
        except BaseException:
            if started:
                ray.shutdown()
            raise
    return started


def _tuner(plan: Plan, callbacks: Sequence[Any], display: bool | None, forkserver: str | None = None) -> Any:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from clsweep.sweep.adoption import AdoptionCallback
    from clsweep.sweep.progress import ProgressCallback
    from clsweep.sweep.space import make_scheduler, make_searcher
    from clsweep.sweep.stopping import StopCallback
    from clsweep.sweep.tracking_callback import MLflowCallback
    from clsweep.sweep.trial import train_trial
    from clsweep.sweep.tune_state import LiveFirstFIFO, TrimCallback, VanishedCheckpoints, kept_result_keys

    spec = plan.spec
    resources = {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus}
    trainable = tune.with_resources(
        tune.with_parameters(
            train_trial, plan=spec.payload(), forkserver=forkserver, sweep_dir=str(plan.paths.sweep_dir)
        ),
        resources,
    )
    path = plan.paths.sweep_dir
    # a driver killed between tuner.pkl and the first snapshot leaves nothing to resume: start afresh
    if tune.Tuner.can_restore(str(path)) and any(path.glob("experiment_state-*.json")):
        return tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    scheduler = make_scheduler(spec)
    adoption = AdoptionCallback(plan.paths.sweep_dir)  # before the MLflow callback, which asks it
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(spec),
            num_samples=spec.num_trials,
            reuse_actors=True,
            max_concurrent_trials=spec.resources.max_concurrent,
            trial_dirname_creator=trial_folder_name,
            scheduler=scheduler or LiveFirstFIFO(),  # FIFO's choice, among the live trials only
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str(plan.paths.storage),
            verbose=0,
            callbacks=[
                StopCallback(),  # first: it restores the state of interrupted trials for the others
                JsonLoggerCallback(),
                CSVLoggerCallback(),
                adoption,
                MLflowCallback(path, spec.payload(), adoption, closes=spec.later_stage is None),
                ProgressCallback(spec.payload(), plan.paths.status, display=display),
                *callbacks,
                VanishedCheckpoints(),
                TrimCallback(kept_result_keys(spec)),  # last: the others have seen the trial end
            ],
            failure_config=tune.FailureConfig(max_failures=spec.retries),
            # pbt: a donor's task checkpoint must outlive the copy that an exploit hands another trial
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None if spec.scheduler.name == "pbt" else 2),
        ),
    )


def _outcome(plan: Plan, record: Mapping[str, Any], lost_records: int = 0) -> Outcome:
    """Where the sweep ended: the search's trials, or those of its later stage once it began."""
    from clsweep.sweep.stages import RECORD_KEY, stage_points, stage_status

    spec, stage = plan.spec, record.get(RECORD_KEY)
    path = plan.paths.status if stage is None else stage_status(plan.paths.sweep_dir, stage)
    rows = list((read_json(path) or {}).get("trials", []))
    total = spec.num_trials if stage is None else len(stage_points(stage))
    summary = summarize(rows, [str(o.mode) for o in spec.objectives], total)
    done = summary.done >= total and (stage is not None or spec.later_stage is None)
    outcome = Outcome(plan, summary, record.get("parent_run_id"), done, rows, lost_records)
    outcome.stage = None if stage is None else str(stage["name"])
    return outcome


def execute(
    plan: Plan,
    *,
    callbacks: Sequence[Any] = (),
    display: bool | None = None,
    num_cpus: int | None = None,
    started: float | None = None,
) -> Outcome:
    """Create the stores, start Ray, run (or continue) the sweep; returns where it ended.
    ``started``: time.monotonic() when the command started (for the elapsed time shown)."""
    ray_environment(embedded=plan.address is None)
    from clsweep.sweep.progress import mark_start

    mark_start(started)
    spec = plan.spec
    record = plan.record or new_record(
        spec.data,
        spec.fingerprint,
        source=plan.source,
        tracking_uri=plan.tracking_uri,
        experiment=plan.experiment,
    )
    from clsweep.sweep import lock as locks
    from clsweep.sweep import signals

    if record.get("complete"):  # its trials are done; what MLflow still lacks is sent
        outcome = _outcome(plan, record)
        if record.get("parent_run_id"):
            with locks.holding(plan.paths):
                _, outcome.unsent, outcome.lost_records = sync_journal(
                    plan.paths, plan.tracking_uri, plan.experiment, record["parent_run_id"]
                )
        return outcome
    lock = locks.DriverLock(plan.paths)
    with signals.interruptible() as state:
        state.on_force_exit.append(lock.release)
        try:
            return _execute(plan, record, lock, callbacks, display, num_cpus)
        finally:
            lock.release()


def _execute(
    plan: Plan,
    record: dict[str, Any],
    lock: Any,
    callbacks: Sequence[Any],
    display: bool | None,
    num_cpus: int | None,
) -> Outcome:
    if plan.address is None:
        if num_cpus:
            from clsweep.sweep.resources import check_machine

            check_machine(plan.spec.resources.cpus, 0, num_cpus=num_cpus)
        lock.acquire()  # before the fork server writes its log in the sweep folder
    server = start_forkserver(plan, before_ray=True)  # its imports overlap Ray's start
    try:
        if plan.address is None:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clsweep-tracking") as pool:
                opening = pool.submit(open_tracking, plan, record)  # a new sqlite store: ~3 s, as Ray starts
                started_ray = _start_ray(plan, num_cpus)
                try:
                    session = opening.result()
                except BaseException:
                    _stop_ray(started_ray)
                    raise
        else:
            started_ray = _start_ray(plan, num_cpus)
            try:
                from clsweep.sweep.resources import check_joined

                check_joined(plan.spec.resources)  # before anything is written
                lock.acquire()
                server = start_forkserver(plan, before_ray=False)  # imports while the store opens
                session = open_tracking(plan, record)
            except BaseException:
                _stop_ray(started_ray)
                raise
        try:
            if server is None and plan.address is None:  # (with --address: decided above, once joined)
                server = start_forkserver(plan, before_ray=False)
            return _run(plan, record, session, callbacks, display, server.address if server else None)
        finally:
            _stop_ray(started_ray)
    finally:
        if server is not None:
            server.stop()


def _stop_ray(started: bool) -> None:
    if started:
        __import__("ray").shutdown()


def _run(
    plan: Plan,
    record: dict[str, Any],
    session: TrackingSession,
    callbacks: Sequence[Any],
    display: bool | None,
    forkserver: str | None,
) -> Outcome:
    """The stages with the journal's sender on; then what MLflow still lacks is sent (a stopped
    sweep waits a few seconds only: its resume sends the rest)."""
    from clsweep.sweep import signals
    from clsweep.sweep.tune_state import bound_forced_snapshots

    bound_forced_snapshots()  # before Tune runs: its forced snapshots cost O(trials) each
    session.start()
    try:
        outcome = _stages(plan, record, callbacks, display, forkserver)
    finally:
        unsent, rejected = session.finish(plan.spec.tracking.outage_timeout, signals.STATE.stopping)
    outcome.unsent, outcome.lost_records = unsent, outcome.lost_records + rejected
    return outcome


def _stages(
    plan: Plan,
    record: dict[str, Any],
    callbacks: Sequence[Any],
    display: bool | None,
    forkserver: str | None,
) -> Outcome:
    """The search, then its later stage (clsweep.sweep.stages); a search the record says is over
    is not run again."""
    from clsweep.sweep import signals, stages

    outcome, lost = None, 0
    if stages.RECORD_KEY not in record:
        outcome = _fit(plan, record, _tuner(plan, callbacks, display, forkserver))
        lost = outcome.lost_records
        search_over = outcome.summary.done >= plan.spec.num_trials and not signals.STATE.stopping
        if plan.spec.later_stage and search_over:
            stages.begin(plan.spec, record, outcome.rows, plan.paths.record)
    if stages.RECORD_KEY in record and not signals.STATE.stopping:
        tuner = stages.stage_tuner(plan, record[stages.RECORD_KEY], callbacks, display, forkserver)
        outcome = _fit(plan, record, tuner)
        outcome.lost_records += lost
    outcome = outcome or _outcome(plan, record, lost)  # a stop came before the stage's trials
    record["complete"] = outcome.complete
    write_json(plan.paths.record, record)
    return outcome


def _fit(plan: Plan, record: dict[str, Any], tuner: Any) -> Outcome:
    from clsweep.sweep import signals
    from clsweep.sweep.progress import lost_records

    with ray_logs_to(plan.paths.sweep_dir / "driver.log"), signals.fitting():
        if not signals.STATE.stopping:  # else a signal came while Ray started: no trial starts
            tuner.fit()
    outcome = _outcome(plan, record, lost_records(tuner))
    if signals.STATE.stopping:
        outcome.signal, outcome.stopped = signals.STATE.signum, signals.STATE.reason
        try:
            from clsweep.tracking.journal import live

            live(plan.paths.sweep_dir).append("kill_running")
        except Exception:  # noqa: BLE001 - a lost record, as in the callbacks
            logger.warning("could not record that the interrupted runs are KILLED", exc_info=True)
            outcome.lost_records += 1
    return outcome
