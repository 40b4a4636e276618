"""The ``clsweep`` command line. Sub-commands import heavy libraries only when they run, so that
``clsweep --help`` and ``clsweep validate`` stay instant (no torch, no Ray).

Exit status: 0 success; 1 the run finished but something failed (e.g. a sweep trial);
2 bad input (config, sweep file or arguments), nothing started.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from clsweep import __version__
from clsweep.common import EXPERIMENT_COMPONENTS
from clsweep.spec.errors import Problem, SpecError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 already; keep its message short
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"error: {message}\n")


def _format_matrix(title: str, rows: list[list[float | None]]) -> str:
    T = len(rows[0]) if rows else 0
    header = "after \\ on  " + "".join(f"{f'task {j + 1}':>9}" for j in range(T))
    lines = [title, header]
    for t, row in enumerate(rows):
        cells = "".join(f"{'-' if v is None else f'{v:.4f}':>9}" for v in row)
        lines.append(f"task {t + 1:<7}" + cells)
    return "\n".join(lines)


def cmd_experiment(args: argparse.Namespace) -> int:
    from clsweep.spec import load_experiment

    cfg = load_experiment(args.config, args.set or [])
    out = Path(args.out).resolve()
    if out.exists() and not out.is_dir():
        raise SpecError([Problem(("--out",), f"{out} exists and is not a folder")])

    from clsweep.experiment import run_experiment  # heavy: torch, lightning

    def progress(report) -> None:  # type: ignore[no-untyped-def]
        m = report.metrics
        print(
            f"task {report.task}/{report.num_tasks}: avg acc (val) {m['avg_acc_val']:.4f}, "
            f"avg acc (test) {m['avg_acc_test']:.4f}, BWT (test) {m['bwt_test']:+.4f}  [{report.seconds:.1f}s]",
            flush=True,
        )

    from clsweep.training import NonFiniteLossError

    try:
        result = run_experiment(
            cfg, on_task_end=progress, checkpoint_dir=out / "checkpoint" if args.checkpoint else None
        )
    except NonFiniteLossError as err:  # diverged: keep what the completed tasks measured
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(
            json.dumps({**err.result.to_dict(), "diverged": str(err)}, indent=2)
        )
        print(
            f"error: diverged: {err} ({err.task - 1} task(s) completed; their results: "
            f"{out / 'results.json'})",
            file=sys.stderr,
        )
        return EXIT_FAILED
    data = result.to_dict()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=2))
    print()
    print(
        _format_matrix("test accuracy R[t, j] (after training task t, on task j):", data["test_acc_matrix"])
    )
    print()
    print(
        f"ACC {data['acc']:.4f}   BWT {data['bwt']:+.4f}   forgetting {data['forgetting']:.4f}   "
        f"({data['seconds']:.1f}s on {data['device']})"
    )
    print(f"results: {out / 'results.json'}")
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    from clsweep import registry

    kinds = [args.kind] if args.kind else list(registry.KINDS)
    for kind in kinds:
        print(f"{kind}:" if kind.endswith("s") else f"{kind}s:")
        for entry in registry.entries(kind):
            if args.pattern and not fnmatch.fnmatchcase(entry.name, args.pattern):
                continue
            extra = ""
            if kind in ("algorithm", "heads", "benchmark"):
                extra = f"  [{entry.supported_paradigms()}]"
            elif entry.source is not None:
                info = entry.source
                shape = "x".join(map(str, info.input_shape))
                extra = f"  [{shape}, {info.num_classes} classes{', needs root' if info.needs_root else ''}]"
            print(f"  {entry.name:<22}{entry.summary}{extra}")
    return EXIT_OK


def _where(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="sweep name")
    p.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (default: the one the sweep recorded, else sqlite in --storage)",
    )
    p.add_argument("--storage", metavar="DIR", help="root folder of sweeps (default: ./clsweep_runs)")


def cmd_best(args: argparse.Namespace) -> int:
    from clsweep.api import best_config_text, best_experiment, open_sweep

    best = best_experiment(open_sweep(args.name, tracking_uri=args.tracking_uri, storage=args.storage))
    text = best_config_text(best)
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return EXIT_OK
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(
        f"{out}: trial {best.trial_id}, {best.objective} = {best.value:.4f}; run it with "
        f"`clsweep experiment {out}`",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from clsweep.api import open_sweep
    from clsweep.export import export_optuna

    sweep = open_sweep(args.name, tracking_uri=args.tracking_uri, storage=args.storage)
    study, written, skipped = export_optuna(sweep, args.optuna_storage, study_name=args.study)
    left = f" ({skipped} running or pending left out)" if skipped else ""
    print(
        f"study {study!r} in {args.optuna_storage}: {written} trials{left}; view it with "
        f"`optuna-dashboard {args.optuna_storage}`"
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="clsweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"clsweep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "experiment",
        help="run one CL experiment (no Ray) and write results.json",
        description="Run one continual-learning experiment from a config file (an experiment "
        "mapping, or a sweep file's `experiment` section) and write OUT/results.json.",
    )
    p.add_argument("config", help="experiment config YAML")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=1 (repeatable; value read as YAML)",
    )
    p.add_argument("--out", default="out/experiment", help="output folder (default: out/experiment)")
    p.add_argument(
        "--checkpoint", action="store_true", help="also write the per-task checkpoint under OUT/checkpoint"
    )
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("ls", help="list registered benchmarks, backbones, heads, algorithms and data sources")
    p.add_argument("kind", nargs="?", choices=[*EXPERIMENT_COMPONENTS, "source"])
    p.add_argument("pattern", nargs="?", help="shell-style name pattern, e.g. 'resnet*'")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser(
        "best",
        help="the winning configuration of a sweep as an experiment config",
        description="Write the best trial's experiment (the confirmed winner when a confirm "
        "stage ran), read back from MLflow, as a config `clsweep experiment` runs.",
    )
    _where(p)
    p.add_argument("-o", "--output", metavar="FILE", help="write the config here (default: stdout)")
    p.set_defaults(func=cmd_best)

    p = sub.add_parser(
        "export",
        help="write a sweep's trials as an Optuna study (for optuna-dashboard)",
        description="Copy the sweep's trials, read back from MLflow, into a new Optuna study: "
        "states, parameters, objective values, per-task intermediate values.",
    )
    _where(p)
    p.add_argument(
        "--optuna-storage",
        required=True,
        metavar="URL",
        help="Optuna RDB storage, e.g. sqlite:////abs/path/study.db",
    )
    p.add_argument("--study", metavar="NAME", help="study name (default: the sweep name)")
    p.set_defaults(func=cmd_export)

    from clsweep.report.cli import add_report_command  # nothing heavy at import
    from clsweep.sweep.commands import add_sweep_commands  # Ray-free at import

    add_sweep_commands(sub)
    add_report_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except SpecError as err:
        print(f"error: {err.format()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # `clsweep ... | head`: the reader left, nothing more to say
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
