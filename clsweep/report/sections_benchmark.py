"""The benchmark sweep's headline section: paper-style tables of methods x benchmarks (also
written as LaTeX), and the hyperparameters each cell ran with."""

from __future__ import annotations

from typing import Any

from clsweep.report.analysis import Analysis, config_text
from clsweep.report.blocks import Block, Section, Table

__all__ = ["benchmark_section", "benchmark_tables"]


def _cell(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "-"
    if stats["n"] > 1 and stats.get("ci95"):
        low, high = stats["ci95"]
        return f"{100 * stats['mean']:.1f} ± {100 * (high - low) / 2:.1f}"
    return f"{100 * stats['mean']:.1f}"


def benchmark_tables(a: Analysis) -> list[tuple[str, Table]]:
    """One paper-style table per metric: rows x columns, mean ± 95% CI half-width over seeds in %,
    best per column bold, the upper reference (joint) in the last rows, apart."""
    bench = a.benchmark
    out: list[tuple[str, Table]] = []
    if not bench:
        return out
    references = bench.get("references", [])
    order = [r for r in bench["rows"] if r not in references] + [r for r in bench["rows"] if r in references]
    for metric in bench["metrics"]:
        rows, bold = [], set()
        for i, row in enumerate(order):
            cells = bench["cells"][metric].get(row, {})
            line = [f"{row} (upper reference)" if row in references else row]
            for j, col in enumerate(bench["columns"]):
                line.append(_cell(cells.get(col)))
                if bench["best"][metric].get(col) == row:
                    bold.add((i, j + 1))
            rows.append(line)
        mode = bench["modes"].get(metric)
        caption = (
            f"{metric} in % (mean ± 95% CI half-width over seeds; {'higher' if mode == 'max' else 'lower'} "
            f"is better, best per column in bold; an upper reference, which sees every past task's data, "
            f"is listed last and never marked). Each cell is the best configuration of its "
            f"{bench['row_axis']} and {bench['col_axis']} by the objective."
        )
        out.append(
            (
                metric,
                Table(
                    [f"{bench['row_axis']} \\ {bench['col_axis']}"] + bench["columns"], rows, bold, caption
                ),
            )
        )
    return out


def benchmark_section(a: Analysis) -> Section | None:
    tables = benchmark_tables(a)
    if not tables:
        return None
    blocks: list[Block] = [t for _, t in tables]
    bench = a.benchmark or {}
    first = bench["metrics"][0]
    hyper = [
        [row, col, config_text(cell["config"])]
        for row in bench["rows"]
        for col, cell in bench["cells"][first].get(row, {}).items()
    ]
    blocks.append(
        Table(
            [bench["row_axis"], bench["col_axis"], "hyperparameters it ran with"],
            hyper,
            caption="The searched values of each cell's configuration (the rest: the sweep file's "
            "experiment and each method's cited defaults).",
        )
    )
    blocks.append("The same tables as LaTeX (booktabs): benchmark_table.tex.")
    return Section("benchmark", "Algorithms x benchmarks", blocks)
