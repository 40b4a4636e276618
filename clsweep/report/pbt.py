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

from clsweep.report.blocks import Block, Section, Table, fmt

if TYPE_CHECKING:
    from clsweep.report.analysis import Analysis
    from clsweep.report.blocks import Figure

__all__ = ["LINEAGE_ARTIFACT", "best_lineage", "knobs", "lineage_rows", "lineage_section"]

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


def knobs(rows: list[dict[str, Any]]) -> list[str]:
    return [k for k in rows[0] if k not in ("task", "trial")] if rows else []


def lineage_section(a: Analysis, figs: dict[str, Figure]) -> Section | None:
    """The section of a PBT sweep's report; None for other sweeps."""
    rows = best_lineage(a)
    if not rows:
        return None
    names = knobs(rows)
    table = Table(
        ["task", "trained by trial"] + [k.removeprefix("experiment.") for k in names],
        [
            [str(r["task"]), r["trial"]]
            + [fmt(r.get(k)) if isinstance(r.get(k), float) else str(r.get(k)) for k in names]
            for r in rows
        ],
        caption=f"The best trial's lineage (artifact {LINEAGE_ARTIFACT}): who trained each task, with "
        "which knob values.",
    )
    blocks: list[Block] = [figs["pbt_lineage"]] if "pbt_lineage" in figs else []
    return Section("pbt_lineage", "Best lineage (population-based training)", [*blocks, table])
