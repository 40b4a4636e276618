"""``report_sweep``: read a sweep from MLflow, analyse it, write ``reports/NAME/``.

Files written (all in one folder, nothing else touched):

- ``index.html``: the whole report in one page that opens offline (figures embedded);
- ``README.md`` with its figures as PNG in ``figures/``;
- ``summary.json``: every number the pages show, machine-readable;
- ``benchmark_table.tex``: for benchmark sweeps (several algorithms), the paper-style tables.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from clsweep.spec.errors import Problem, SpecError

__all__ = ["FIGURE_NAMES", "report_sweep", "resolve_store"]

FIGURE_NAMES = (
    "objective_vs_params",
    "importance",
    "history",
    "objective_curves",
    "accuracy_matrix",
    "task_curves",
    "capacity",
    "pbt_lineage",
)


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No artifact-download progress bars on the terminal while the report reads artifacts."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def resolve_store(
    name: str,
    *,
    tracking_uri: str | None,
    experiment: str | None,
    parent_run_id: str | None,
    storage: str | Path | None,
) -> tuple[str, str | None, str | None]:
    """Where the sweep's runs are: (tracking URI, experiment, parent run id).

    The sweep folder ``STORAGE/NAME`` (when it exists) records all three; otherwise the default is
    the sweeper's: the sqlite store ``STORAGE/mlflow.db`` (STORAGE defaults to ./clsweep_runs)."""
    from clsweep.common import DEFAULT_STORAGE
    from clsweep.storage import SweepPaths, read_json

    paths = SweepPaths.at(storage if storage is not None else DEFAULT_STORAGE, name)
    record = read_json(paths.record) or {}
    if storage is not None and not record and tracking_uri is None:
        raise SpecError([Problem(("name",), f"no sweep {name!r} under {paths.storage}")])
    same_store = tracking_uri is None or record.get("tracking_uri") == tracking_uri
    uri = tracking_uri or record.get("tracking_uri") or paths.default_tracking_uri
    exp = experiment or (record.get("experiment") if same_store else None)
    parent = parent_run_id or (record.get("parent_run_id") if same_store else None)
    return uri, exp, parent


def report_sweep(
    name: str,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    parent_run_id: str | None = None,
    storage: str | Path | None = None,
    out: str | Path | None = None,
    top_k: int = 5,
) -> Path:
    """Write the report of sweep ``name`` to ``out`` (default ``reports/NAME``); returns its
    ``index.html``. Raises SpecError when the sweep cannot be found."""
    from clsweep.report.analysis import analyze
    from clsweep.report.document import build_document
    from clsweep.report.figures import all_figures
    from clsweep.report.load import load_sweep_runs
    from clsweep.report.render import to_html, to_latex, to_markdown
    from clsweep.report.sections_benchmark import benchmark_tables

    uri, exp, parent = resolve_store(
        name, tracking_uri=tracking_uri, experiment=experiment, parent_run_id=parent_run_id, storage=storage
    )
    folder = Path(out) if out is not None else Path("reports") / name
    if folder.exists() and not folder.is_dir():
        raise SpecError([Problem(("--out",), f"{folder} exists and is not a folder")])
    with _quiet_downloads():
        data = load_sweep_runs(name, tracking_uri=uri, experiment=exp, parent_run_id=parent)
        analysis = analyze(data, top_k=top_k)
    figures = all_figures(analysis)
    document = build_document(analysis, figures)

    figure_dir = folder / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    for stale in FIGURE_NAMES:  # a figure of an earlier report that this one no longer has
        (figure_dir / f"{stale}.png").unlink(missing_ok=True)
    for fig in figures.values():
        (figure_dir / f"{fig.name}.png").write_bytes(fig.png)
    (folder / "index.html").write_text(to_html(document), encoding="utf-8")
    (folder / "README.md").write_text(to_markdown(document), encoding="utf-8")
    (folder / "summary.json").write_text(
        json.dumps(analysis.summary(), indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    tables = benchmark_tables(analysis)
    latex = folder / "benchmark_table.tex"
    if tables:
        latex.write_text(to_latex(tables, name), encoding="utf-8")
    else:
        latex.unlink(missing_ok=True)
    return folder / "index.html"
