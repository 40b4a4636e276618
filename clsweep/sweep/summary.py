"""Where a sweep stands: trial counts and the best configuration so far, from plain trial rows.

A row is a dict: ``trial_id``, ``state`` (pending / running / paused / finished / pruned /
failed), ``config`` (the values the sweep varies, seed excluded), ``seed``, ``tasks_done``,
``tasks_total``, ``objective`` (list of values, one per objective, or null). Rows come from the
live Tune trials (progress display) or from ``clsweep_status.json`` (``clsweep status``), so this
module is Ray-free. Configurations are compared by the mean over their seeds of the finished
trials' final objective values; pruned trials never count (they saw fewer tasks).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clsweep.common import dominates, format_duration

__all__ = [
    "STATES",
    "Best",
    "StoredSweep",
    "Summary",
    "format_summary",
    "ranking",
    "stored_sweep",
    "summarize",
]

STATES = ("finished", "running", "pending", "paused", "pruned", "failed")


@dataclass(frozen=True)
class Best:
    config: dict[str, Any]
    values: tuple[float, ...]
    """Mean over seeds of each objective."""
    seeds: tuple[int, ...]


@dataclass
class Summary:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    total: int = 0
    best: list[Best] = field(default_factory=list)
    """Single objective: the best configuration. Two objectives: the Pareto front."""

    @property
    def done(self) -> int:
        return self.counts["finished"] + self.counts["pruned"] + self.counts["failed"]


def _key(config: Mapping[str, Any]) -> str:
    return json.dumps(dict(config), sort_keys=True, default=str)


def _candidates(rows: Iterable[Mapping[str, Any]], n: int, summary: Summary | None = None) -> list[Best]:
    """Each configuration with a finished trial: its mean objective values over those trials."""
    groups: dict[str, tuple[dict[str, Any], list[tuple[int, list[float]]]]] = {}
    for row in rows:
        state = row.get("state", "pending")
        if summary is not None:
            summary.counts[state] = summary.counts.get(state, 0) + 1
        values = row.get("objective")
        if state != "finished" or not values or any(v is None or not math.isfinite(v) for v in values):
            continue
        config = dict(row.get("config") or {})
        groups.setdefault(_key(config), (config, []))[1].append((int(row.get("seed", 0)), list(values)))
    return [
        Best(
            config,
            tuple(sum(v[i] for _, v in runs) / len(runs) for i in range(n)),
            tuple(sorted(s for s, _ in runs)),
        )
        for config, runs in groups.values()
    ]


def ranking(rows: Iterable[Mapping[str, Any]], mode: str) -> list[Best]:
    """One objective: every configuration with a finished trial, best mean first (ties keep the
    order of the rows, so the first is :func:`summarize`'s best)."""
    return sorted(_candidates(rows, 1), key=lambda b: b.values[0], reverse=mode == "max")


def summarize(rows: Iterable[Mapping[str, Any]], modes: Sequence[str], total: int) -> Summary:
    summary = Summary(total=total)
    candidates = _candidates(rows, len(modes), summary)
    if len(modes) == 1 and candidates:
        pick = max if modes[0] == "max" else min
        summary.best = [pick(candidates, key=lambda b: b.values[0])]
    elif candidates:
        summary.best = [
            c for c in candidates if not any(dominates(o.values, c.values, modes) for o in candidates)
        ]
    return summary


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def format_summary(
    summary: Summary,
    objectives: Sequence[Mapping[str, str]],
    *,
    elapsed: float | None = None,
    name: str = "",
    max_front: int = 5,
) -> list[str]:
    """Lines for the progress display, the end of ``clsweep run`` and ``clsweep status``."""
    c = summary.counts
    waiting = max(0, summary.total - c["finished"] - c["pruned"] - c["failed"] - c["running"] - c["paused"])
    head = f"sweep {name}: " if name else ""
    lines = [
        f"{head}{summary.done}/{summary.total} trials done - finished {c['finished']}, running {c['running']}, "
        f"pruned {c['pruned']}, failed {c['failed']}, waiting {waiting}"
        + (f"   [{format_duration(elapsed)}]" if elapsed is not None else "")
    ]
    names = " / ".join(f"{o['metric']} ({o['mode']})" for o in objectives)
    if not summary.best:
        lines.append(f"best {names}: none yet")
        return lines
    if len(objectives) > 1:
        lines.append(f"Pareto front of {names}: {len(summary.best)} configuration(s)")
    for best in summary.best[:max_front]:
        values = " / ".join(f"{v:.4f}" for v in best.values)
        seeds = f"mean of {len(best.seeds)} seeds" if len(best.seeds) > 1 else f"seed {best.seeds[0]}"
        lines.append(f"best {names}: {values} ({seeds})" if len(objectives) == 1 else f"  {values} ({seeds})")
        for key, value in best.config.items():
            lines.append(f"    {key} = {_value(value)}")
        if not best.config:
            lines.append("    (no searched values: the fixed experiment)")
    return lines


@dataclass
class StoredSweep:
    """A sweep read back from its folder (``clsweep status``)."""

    record: dict[str, Any]
    summary: Summary
    objectives: list[dict[str, str]]
    state: str
    """complete / ended (incomplete) / running / interrupted / driver on another host"""
    stage: str = "search"
    """The stage the sweep is in (or ended with): search, confirm or final."""
    search: Summary | None = None
    """Once a later stage began: the search's summary (``summary`` is then the stage's)."""


def stored_sweep(storage: Any, name: str) -> StoredSweep:
    """Read ``<storage>/<name>``; SpecError when there is no such sweep. Trials a dead driver left
    "running" count as waiting (they resume with the sweep). Once a later stage began (its entry in
    the record, clsweep.sweep.stages), the summary and state are the stage's."""
    from clsweep.spec.errors import Problem, SpecError
    from clsweep.storage import STATUS_FILE, SweepPaths, read_json

    paths = SweepPaths.at(storage, name)
    record = read_json(paths.record)
    if record is None:
        raise SpecError([Problem(("name",), f"no sweep {name!r} under {paths.storage}")])
    searched = read_json(paths.status) or {}
    search = _stored(record, searched)
    stage = record.get("stage")
    if not isinstance(stage, dict):
        return search
    status = read_json(paths.sweep_dir / str(stage["name"]) / STATUS_FILE) or {}
    total = len(stage.get("configs", [])) * len(stage.get("seeds", []))
    found = _stored(
        record, {"objectives": search.objectives, "total": total, "driver": searched.get("driver"), **status}
    )
    found.stage, found.search = str(stage["name"]), search.summary
    return found


def _stored(record: Mapping[str, Any], status: Mapping[str, Any]) -> StoredSweep:
    from clsweep.storage import driver_alive

    objectives = status.get("objectives") or [{"metric": "?", "mode": "max"}]
    rows = status.get("trials", [])
    alive = driver_alive(status.get("driver"))
    if not status.get("ended") and alive is False:
        rows = [{**r, "state": "pending"} if r.get("state") in ("running", "paused") else r for r in rows]
    summary = summarize(rows, [o["mode"] for o in objectives], int(status.get("total", 0)))
    state = (
        "complete"
        if record.get("complete")
        else "ended (incomplete)"
        if status.get("ended")
        else "running"
        if alive
        else "interrupted"
        if alive is False
        else "driver on another host"
    )
    return StoredSweep(dict(record), summary, objectives, state)
