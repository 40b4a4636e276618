"""The ``clsweep report`` sub-command. Importing this module imports nothing heavy; MLflow, pandas
and matplotlib load when the command runs."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_report_command", "cmd_report"]

_EPILOG = """\
The runs are read from MLflow: by default from the store the sweeper used (STORAGE/NAME records
the tracking URI, experiment and parent run; without that folder, sqlite in STORAGE/mlflow.db).
Writes OUT/index.html (one page, opens offline), OUT/README.md with figures/*.png, OUT/summary.json
(every number of the pages) and, for benchmark sweeps, OUT/benchmark_table.tex.

exit status: 0 written; 2 no such sweep in the store, or a bad --out."""


def add_report_command(subparsers: Any) -> None:
    """Register ``report NAME [--tracking-uri URI] [--storage DIR] [--out DIR]`` on the ``clsweep``
    sub-command parser."""
    p = subparsers.add_parser(
        "report",
        help="write a sweep's report (HTML, Markdown, PNG, summary.json)",
        description="Read sweep NAME back from MLflow and write its report.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help="sweep name")
    p.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (default: the one the sweep recorded, else sqlite in --storage)",
    )
    p.add_argument(
        "--storage",
        metavar="DIR",
        help="root folder of sweeps, as given to `clsweep run` (default: ./clsweep_runs)",
    )
    p.add_argument("--experiment", metavar="NAME", help="MLflow experiment (default: the sweep's)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: reports/NAME)")
    p.add_argument("--top", type=int, default=5, metavar="K", help="best configurations to list (default: 5)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from clsweep.report.build import report_sweep
    from clsweep.spec.errors import Problem, SpecError

    if args.top < 1:
        raise SpecError([Problem(("--top",), "must be >= 1")])
    index = report_sweep(
        args.name,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        storage=args.storage,
        out=args.out,
        top_k=args.top,
    )
    print(f"report: {index}")
    print(f"        {index.parent / 'README.md'}")
    print(f"        {index.parent / 'summary.json'}")
    return 0
