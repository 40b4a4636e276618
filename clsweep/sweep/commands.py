"""The sweep sub-commands: ``validate``, ``run``, ``resume``, ``status``, ``sync``.

Registered on the main parser by :func:`add_sweep_commands`; each sets ``func`` to its command,
which returns the exit status (0 ok, 1 some trial failed or tracking records were lost, 2 bad
input: SpecError, raised to ``clsweep.cli.main``, 130 / 143 stopped by SIGINT / SIGTERM). Importing this module imports neither torch nor Ray; ``run`` and ``resume``
import them when they start trials, after every check has passed.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
import time
from pathlib import Path
from typing import Any

from clsweep.common import DEFAULT_STORAGE
from clsweep.spec.errors import Problem, SpecError

__all__ = [
    "add_sweep_commands",
    "cmd_resume",
    "cmd_run",
    "cmd_status",
    "cmd_sync",
    "cmd_validate",
    "run_sweep",
]

EXIT_OK, EXIT_FAILED = 0, 1

_RUN_EPILOG = """\
exit status: 0 every trial finished or was pruned and every tracking record was written; 1 the
sweep ran but at least one trial failed (after `retries` re-runs from its last task checkpoint;
its traceback is an artifact of its MLflow run), or tracking records were lost (MLflow refused
one, or a status-file write failed: the sweep went on without it; the count is printed at the
end), or records are still unsent (see below); 2 bad input (sweep file, --set, storage folder of another
sweep, unreachable tracking store, a sweep whose driver is running, resources that no node
has): nothing was started or written; 130 / 143 stopped by SIGINT (Ctrl-C) / SIGTERM.

Ctrl-C or SIGTERM stops the sweep cleanly: no new trial starts, running trials stop at once
(keeping their last task checkpoint), their MLflow runs and the sweep's parent run are marked
KILLED, and the process exits within 30 s; a second Ctrl-C exits at once. The sweep can then be
resumed. One driver per sweep: STORAGE/NAME/clsweep_driver.lock names its host and pid; a second
`run` or `resume` exits 2 while that driver lives. A lock whose driver is gone (its pid no longer
runs on this host; on another host, a heartbeat older than 120 s: the driver refreshes it every
30 s) is taken over. A trial asking for more CPUs or GPUs than this machine has (local Ray) or
than any node has (--address, no autoscaler) exits 2; with an autoscaler the trials wait for a
node for at most `resources.pending_timeout` seconds (default 600), then the sweep stops
(resumable, exit status 1).

Every MLflow record is first appended to STORAGE/NAME/tracking_journal.jsonl and sent from there
in order, so a tracking server that stops answering delays records and loses none: the sweep goes
on and the records are sent when the server answers again. When the trials are done and it still
does not answer after `tracking.outage_timeout` seconds (default 60), the records stay in the
journal, the count is printed, no report is written and the exit status is 1; `clsweep sync NAME`
(or `clsweep resume NAME`) sends them once it answers. A record sent twice is stored once.

Running the same command again (or `clsweep resume NAME`) continues an interrupted sweep:
finished trials are kept, unfinished ones restart from their last task checkpoint, and every
trial keeps its MLflow run. Without --address (or RAY_ADDRESS), clsweep starts a local Ray for the
sweep (token authentication off: that cluster lives only as long as this command), and its CPU
trials train in processes forked from one server that imported torch once (Linux; the environment
variable CLSWEEP_FORKSERVER=0 turns that off). Ray's own log lines go to STORAGE/NAME/driver.log."""


def _storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        metavar="DIR",
        help=f"root folder of sweeps (default: ./{DEFAULT_STORAGE}); the sweep lives in DIR/NAME "
        "and the default MLflow store is DIR/mlflow.db",
    )


def _launch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (default: the sweep file's tracking.uri, else sqlite in --storage)",
    )
    parser.add_argument(
        "--address",
        metavar="ADDR",
        help="Ray cluster to join: auto, host:port or ray://host:port (default: RAY_ADDRESS, else a "
        "local Ray)",
    )
    parser.add_argument("--no-report", action="store_true", help="do not write a report at the end")
    _storage(parser)


def add_sweep_commands(subparsers: Any) -> None:
    """Register validate, run, resume and status on the ``clsweep`` sub-command parser."""
    p = subparsers.add_parser(
        "validate",
        help="check a sweep file (or experiment config) without running anything",
        description="Validate a sweep file completely (every configuration the searcher can "
        "produce) or an experiment config. Imports neither torch nor Ray.",
    )
    p.add_argument("file", help="sweep file (has an `experiment` section) or experiment config")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a value (repeatable)"
    )
    p.set_defaults(func=cmd_validate)

    p = subparsers.add_parser(
        "run",
        help="run a sweep (Ray Tune + Optuna, MLflow tracking)",
        description="Run the sweep described by SPACE.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("space", help="sweep file, e.g. search_spaces/quickstart.yaml")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value, e.g. --set experiment.train.epochs=1 --set searcher.samples=4; "
        "search entries by their dotted key: --set search.experiment.train.lr.uniform=[0.01,0.1]",
    )
    p.add_argument("--name", help="sweep name (default: the file's `name`)")
    _launch(p)
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser(
        "resume",
        help="continue an interrupted sweep by name (no file needed)",
        description="Continue the sweep stored in STORAGE/NAME.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="sweep name")
    _launch(p)
    p.set_defaults(func=cmd_resume)

    p = subparsers.add_parser(
        "status",
        help="trials finished / running / pruned / failed and the best so far",
        description="Show where a sweep stands, from its storage folder (no Ray needed).",
    )
    p.add_argument("name", help="sweep name")
    _storage(p)
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser(
        "sync",
        help="send a sweep's tracking records that MLflow does not have yet",
        description="Send the records of sweep NAME that its tracking journal "
        "(STORAGE/NAME/tracking_journal.jsonl) holds and MLflow lacks (the tracking server did not "
        "answer before the sweep ended), in order; a record sent twice is stored once. Exit status: "
        "0 MLflow has every record; 1 some are still unsent (the server does not answer) or MLflow "
        "refused some (their reasons are in STORAGE/NAME/tracking_sent.jsonl); 2 no such sweep, or "
        "its driver is running (it sends them itself).",
    )
    p.add_argument("name", help="sweep name")
    _storage(p)
    p.set_defaults(func=cmd_sync)


def cmd_validate(args: argparse.Namespace) -> int:
    from clsweep.spec.loading import load_yaml

    raw = load_yaml(args.file)
    if isinstance(raw, dict) and "experiment" in raw:
        from clsweep.spec.sweep import load_sweep

        spec = load_sweep(args.file, args.set)
        grid = sum(1 for p in spec.params if p.kind == "grid")
        how = (
            f"{len(spec.grid_points)} grid points"
            if spec.searcher.name == "grid"
            else f"{spec.samples} samples"
            + (f" x {grid} grid entr{'y' if grid == 1 else 'ies'}" if grid else "")
        )
        print(
            f"ok: sweep {spec.name!r}: {spec.num_trials} trials ({spec.searcher.name}, {how}, "
            f"{len(spec.seeds)} seed(s)); objective {', '.join(f'{o.metric} ({o.mode})' for o in spec.objectives)}; "
            f"protocol {spec.protocol.name}; scheduler {spec.scheduler.name}"
        )
        print(f"  stages: {spec.stages_text}")
        for p in spec.params:
            print(
                f"  {p.name}: {p.kind} {list(p.values) if p.finite else [p.low, p.high]}"
                + (f" when {dict((k, list(v)) for k, v in p.when)}" if p.when else "")
            )
        sched = spec.scheduler
        if sched.name == "pbt":  # clsweep.sweep.pbt
            print(
                f"  scheduler pbt: at every task boundary the bottom {sched.quantile:g} copy a top trial's "
                f"checkpoint and perturb {', '.join(sched.mutate)} "
                f"(resampled with p={sched.resample_probability:g}, else x0.8 or x1.2)"
            )
        return EXIT_OK
    from clsweep.spec import load_experiment

    cfg = load_experiment(args.file, args.set)
    print(
        f"ok: experiment {cfg.algorithm.name} on {cfg.benchmark.name} ({cfg.num_tasks} tasks, {cfg.paradigm})"
    )
    return EXIT_OK


def run_sweep(
    spec: Any,
    *,
    storage: str | Path,
    tracking_uri: str | None = None,
    address: str | None = None,
    source: str | None = None,
    no_report: bool = False,
    started: float | None = None,
) -> tuple[int, Any, Path | None]:
    """Run (or continue) the validated sweep ``spec`` (a SweepPlan) as ``clsweep run`` does, print
    its summary, write its report; returns (exit status, the driver's Outcome, the report's index
    or None). Shared by ``run``, ``resume`` and :func:`clsweep.run`. Raises SpecError."""
    from clsweep.sweep.driver import execute, prepare

    started = time.monotonic() if started is None else started
    plan = prepare(spec, storage=storage, tracking_uri=tracking_uri, address=address, source=source)
    outcome = execute(plan, started=started)
    code, index = _finish_sweep(outcome, no_report, started)
    return code, outcome, index


def _finish(outcome: Any, no_report: bool, started: float) -> int:
    return _finish_sweep(outcome, no_report, started)[0]


def _finish_sweep(outcome: Any, no_report: bool, started: float) -> tuple[int, Path | None]:
    """Print the summary, write the report; (exit status, the report's index or None)."""
    from clsweep.sweep.summary import format_summary
    from clsweep.tracking.store import ui_command

    plan = outcome.plan
    objectives = [{"metric": o.metric, "mode": str(o.mode)} for o in plan.spec.objectives]
    print()
    for line in format_summary(
        outcome.summary, objectives, elapsed=time.monotonic() - started, name=plan.spec.name
    ):
        print(line)
    if outcome.signal is not None or outcome.stopped:
        why = outcome.stopped or f"stopped by {signal.Signals(outcome.signal).name}"
        print(f"stopped:   {why}; running trials were stopped and marked KILLED", file=sys.stderr)
    if outcome.stage:
        print(
            f"winner:    the best mean over the {outcome.stage} runs (the search: `clsweep status {plan.spec.name} --storage {plan.paths.storage}`)"
        )
    if not outcome.complete:
        print(f"not complete: continue with `clsweep resume {plan.spec.name} --storage {plan.paths.storage}`")
    print(f"runs:      {plan.paths.sweep_dir}")
    print(
        f"tracking:  {plan.tracking_uri} (experiment {plan.experiment!r}, parent run {outcome.parent_run_id})"
    )
    print(f"view:      {ui_command(plan.tracking_uri)}")
    index = None
    if outcome.lost_records:
        print(
            f"lost:      {outcome.lost_records} tracking record(s): refused by MLflow (reasons in "
            f"{plan.paths.sweep_dir / 'tracking_sent.jsonl'}) or a journal or status-file write that "
            "failed (warnings above); the runs in MLflow are incomplete",
            file=sys.stderr,
        )
    unsent = getattr(outcome, "unsent", 0)
    if unsent:
        where = f"{plan.spec.name} --storage {plan.paths.storage}"
        print(
            f"unsent:    {unsent} tracking record(s) wait in {plan.paths.sweep_dir / 'tracking_journal.jsonl'}: "
            f"{plan.tracking_uri} did not answer; send them with `clsweep sync {where}` once it does",
            file=sys.stderr,
        )
        if not no_report and outcome.complete:
            print(f"report:    not written (MLflow lacks records); after the sync: `clsweep report {where}`")
    elif not no_report and outcome.complete and importlib.util.find_spec("clsweep.report") is not None:
        from clsweep.report import report_sweep

        try:
            index = report_sweep(
                plan.spec.name,
                tracking_uri=plan.tracking_uri,
                experiment=plan.experiment,
                parent_run_id=outcome.parent_run_id,
                storage=plan.paths.storage,
            )
            print(f"report:    {index}")
        except Exception as err:  # noqa: BLE001 - the sweep itself is done; say why the report is missing
            print(
                f"report:    not written ({type(err).__name__}: {err}); retry with `clsweep report {plan.spec.name}`",
                file=sys.stderr,
            )
    if outcome.signal is not None:
        return 128 + int(outcome.signal), index
    failed = outcome.failed or outcome.lost_records or outcome.stopped or unsent
    return (EXIT_FAILED if failed else EXIT_OK), index


def cmd_run(args: argparse.Namespace) -> int:
    from clsweep.spec.sweep import load_sweep

    started = time.monotonic()
    spec = load_sweep(args.space, args.set, name=args.name)
    source = str(Path(args.space).resolve())
    return run_sweep(
        spec,
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        address=args.address,
        source=source,
        no_report=args.no_report,
        started=started,
    )[0]


def cmd_resume(args: argparse.Namespace) -> int:
    from clsweep.spec.sweep import parse_sweep
    from clsweep.storage import SweepPaths, read_json

    started = time.monotonic()
    paths = SweepPaths.at(args.storage, args.name)
    record = read_json(paths.record)
    if record is None:
        raise SpecError([Problem(("name",), f"no sweep {args.name!r} under {paths.storage}")])
    spec = parse_sweep(record["spec"], source=str(paths.record))
    return run_sweep(
        spec,
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        address=args.address,
        source=record.get("source"),
        no_report=args.no_report,
        started=started,
    )[0]


def cmd_status(args: argparse.Namespace) -> int:
    from clsweep.storage import SweepPaths
    from clsweep.sweep.summary import format_summary, stored_sweep
    from clsweep.tracking.store import ui_command

    sweep = stored_sweep(args.storage, args.name)
    if sweep.search is not None:
        for line in format_summary(sweep.search, sweep.objectives, name=f"{args.name} (search)"):
            print(line)
    label = args.name if sweep.search is None else f"{args.name} ({sweep.stage})"
    for line in format_summary(sweep.summary, sweep.objectives, name=label):
        print(line)
    print(f"stage:     {sweep.stage}")
    hint = ": run `clsweep resume` to continue" if sweep.state == "interrupted" else ""
    print(f"state:     {sweep.state}{hint}")
    print(f"runs:      {SweepPaths.at(args.storage, args.name).sweep_dir}")
    print(f"view:      {ui_command(sweep.record.get('tracking_uri', ''))}")
    from clsweep.tracking.journal import pending_in

    waiting = pending_in(SweepPaths.at(args.storage, args.name).sweep_dir)
    if waiting:
        print(f"tracking:  {waiting} record(s) not yet in MLflow: `clsweep sync {args.name}` sends them")
    return EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    from clsweep.storage import SweepPaths, read_json
    from clsweep.sweep import lock
    from clsweep.tracking.journal import pending_in

    paths = SweepPaths.at(args.storage, args.name)
    record = read_json(paths.record)
    if record is None:
        raise SpecError([Problem(("name",), f"no sweep {args.name!r} under {paths.storage}")])
    uri = str(record.get("tracking_uri"))
    if not record.get("parent_run_id") or pending_in(paths.sweep_dir) == 0:
        print(f"sync:      nothing to send: {uri} has every record of sweep {args.name!r}")
        return EXIT_OK
    from clsweep.sweep.tracking_session import sync_journal

    with lock.holding(paths):  # SpecError while the sweep's driver runs
        try:
            sent, left, refused = sync_journal(
                paths, uri, str(record.get("experiment") or args.name), str(record["parent_run_id"])
            )
        except LookupError as err:  # the experiment was deleted: nowhere to send them
            raise SpecError([Problem(("name",), f"{err}; the records stay in the journal")]) from None
    print(f"sync:      sent {sent} record(s) of sweep {args.name!r} to {uri}")
    if refused:
        print(
            f"lost:      MLflow refused {refused} record(s); the reasons are in {paths.sweep_dir / 'tracking_sent.jsonl'}",
            file=sys.stderr,
        )
    if left:
        print(
            f"unsent:    {left} record(s) still wait: {uri} does not answer; run `clsweep sync` again when it does",
            file=sys.stderr,
        )
    return EXIT_FAILED if left or refused else EXIT_OK
