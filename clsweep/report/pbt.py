"""The best trial's lineage in a population-based sweep (``scheduler: pbt``).

Under PBT a trial's weights and knobs can be replaced by another trial's at a task boundary, so
"the best trial's hyperparameters" is a sequence: for each task, the trial that trained it and the
knob values it used. The sweeper stores that sequence with every trial (the artifact
``pbt_lineage.json``, clsweep.sweep.pbt); this module reads it back for the best trial and shows it
as a table and a step plot of each knob per task.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clsweep.report.analysis import Analysis
    from clsweep.report.document import Section
    from clsweep.report.figures import Figure

__all__ = ["LINEAGE_ARTIFACT", "best_lineage", "lineage_figure", "lineage_rows", "lineage_section"]

LINEAGE_ARTIFACT = "pbt_lineage.json"


def lineage_rows(text: str | None) -> list[dict[str, Any]]:
    """The stored lineage as rows ``{"task", "trial", <knob>: value, ...}`` in task order."""
    if not text:
        return []
    entries = json.loads(text)
    rows = [
        {"task": int(e["task"]), "trial": str(e.get("trial")), **dict(e.get("knobs") or {})} for e in entries
    ]
    return sorted(rows, key=lambda r: r["task"])


def best_lineage(a: Analysis) -> list[dict[str, Any]]:
    """The lineage of the analysis' best trial; empty when the sweep is not a PBT sweep."""
    best = a.best or {}
    if not best.get("run_id"):
        return []
    return lineage_rows(a.data.artifact_text(best["run_id"], LINEAGE_ARTIFACT))


def _knobs(rows: list[dict[str, Any]]) -> list[str]:
    return [k for k in rows[0] if k not in ("task", "trial")] if rows else []


def lineage_figure(a: Analysis) -> Figure | None:
    """Each mutated knob of the best lineage per task; a marker where the lineage changes trial
    (an exploit copied another trial's checkpoint there)."""
    from clsweep.report.figures import Figure, _new, _png, _whole_numbers

    rows = best_lineage(a)
    knobs = [k for k in _knobs(rows) if all(isinstance(r.get(k), (int, float)) for r in rows)]
    if not knobs:
        return None
    fig, axes = _new(3.4 * len(knobs), 3.0, 1, len(knobs))
    tasks = [r["task"] for r in rows]
    copied = [r["task"] for prev, r in zip(rows, rows[1:], strict=False) if r["trial"] != prev["trial"]]
    for ax, knob in zip(axes[0], knobs, strict=True):
        values = [float(r[knob]) for r in rows]
        ax.step(tasks, values, where="mid", color="C0")
        ax.plot(tasks, values, "o", ms=3, color="C0")
        for t in copied:
            ax.axvline(t - 0.5, color="#d62728", lw=0.8, ls=":")
        if min(values) > 0 and max(values) / min(values) > 5:
            ax.set_yscale("log")
        ax.set_title(knob.removeprefix("experiment."), fontsize=9)
        ax.set_xlabel("task", fontsize=8)
        ax.tick_params(labelsize=7)
        _whole_numbers(ax)
    return Figure(
        "pbt_lineage",
        "Knob values of the best lineage, per task",
        "The value each mutated knob had while the best trial's lineage trained each task; a red "
        "dotted line where the lineage continues from another trial's checkpoint (a PBT exploit).",
        _png(fig),
    )


def lineage_section(a: Analysis, figs: dict[str, Figure]) -> Section | None:
    """The section of a PBT sweep's report; None for other sweeps."""
    from clsweep.report.document import Block, Section, Table, fmt

    rows = best_lineage(a)
    if not rows:
        return None
    knobs = _knobs(rows)
    table = Table(
        ["task", "trained by trial"] + [k.removeprefix("experiment.") for k in knobs],
        [
            [str(r["task"]), r["trial"]]
            + [fmt(r.get(k)) if isinstance(r.get(k), float) else str(r.get(k)) for k in knobs]
            for r in rows
        ],
        caption=f"The best trial's lineage (artifact {LINEAGE_ARTIFACT}): who trained each task, with "
        "which knob values.",
    )
    blocks: list[Block] = [figs["pbt_lineage"]] if "pbt_lineage" in figs else []
    return Section("pbt_lineage", "Best lineage (population-based training)", [*blocks, table])
