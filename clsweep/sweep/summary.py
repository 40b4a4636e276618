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

from clsweep.common import better, dominates, format_duration

__all__ = [
    "STATES",
    "Best",
    "RunningSummary",
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


def _finished_values(row: Mapping[str, Any]) -> list[float] | None:
    """The objective values of a finished trial's row; None for any other row (pruned trials
    saw fewer tasks; a missing or non-finite value cannot be compared)."""
    values = row.get("objective")
    if row.get("state", "pending") != "finished" or not values:
        return None
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return list(values)


class RunningSummary:
    """:func:`summarize` kept up to date one row at a time (the live display of a long sweep).
    Rows of ended trials are added once (:meth:`add`); the few open ones (running, pending,
    paused) are passed at each look (:meth:`summary`). A look costs O(open rows), not O(all rows).

    Each configuration with a finished trial is a candidate, in the order of its first finished
    row, with its mean over seeds. One objective: the best candidate (the first of equal ones) is
    kept up to date as rows come; two: the Pareto front is recomputed at the next look after a
    change, in O(candidates x front)."""

    def __init__(self, modes: Sequence[str], total: int) -> None:
        self.modes = [str(m) for m in modes]
        self.total = total
        self.counts = dict.fromkeys(STATES, 0)
        self._index: dict[str, int] = {}
        self._runs: list[list[tuple[int, list[float]]]] = []
        self._candidates: list[Best] = []
        self._best: list[int] | None = []
        """Indices of the best candidate (one objective) or of the front; None: to recompute."""

    def add(self, row: Mapping[str, Any]) -> None:
        state = row.get("state", "pending")
        self.counts[state] = self.counts.get(state, 0) + 1
        values = _finished_values(row)
        if values is None:
            return
        config = dict(row.get("config") or {})
        i = self._index.setdefault(_key(config), len(self._runs))
        if i == len(self._runs):
            self._runs.append([])
            self._candidates.append(Best(config, (), ()))
        runs = self._runs[i]
        runs.append((int(row.get("seed", 0)), values))
        n = len(self.modes)
        self._candidates[i] = Best(
            self._candidates[i].config,
            tuple(sum(v[k] for _, v in runs) / len(runs) for k in range(n)),
            tuple(sorted(s for s, _ in runs)),
        )
        self._update_best(i, new=len(runs) == 1)

    def _update_best(self, i: int, *, new: bool) -> None:
        if self._best is None:
            return
        if len(self.modes) > 1:  # a new candidate joins the front, or not; a changed one: recompute
            if not new:
                self._best = None
            elif self._on_front(i):
                self._best.append(i)
            return
        if not self._best:
            self._best = [i]
            return
        b = self._best[0]
        if i == b:  # the best's mean moved: it may no longer be the best
            self._best = None
            return
        x, y = self._candidates[i].values[0], self._candidates[b].values[0]
        if better(x, y, self.modes[0]) or (x == y and i < b):
            self._best = [i]

    def _on_front(self, i: int) -> bool:
        """Whether new candidate ``i`` joins the front (which then drops what it dominates)."""
        assert self._best is not None
        values = self._candidates[i].values
        if any(dominates(self._candidates[f].values, values, self.modes) for f in self._best):
            return False
        self._best = [f for f in self._best if not dominates(values, self._candidates[f].values, self.modes)]
        return True

    def _recompute(self) -> list[int]:
        if len(self.modes) == 1:
            pick = max if self.modes[0] == "max" else min
            return [pick(range(len(self._candidates)), key=lambda k: self._candidates[k].values[0])]
        self._best = []
        for i in range(len(self._candidates)):
            if self._on_front(i):
                self._best.append(i)
        return sorted(self._best)

    def summary(self, open_rows: Iterable[Mapping[str, Any]] = ()) -> Summary:
        """The summary over the rows added and ``open_rows`` (counted only: an open trial has
        not finished, so it is no candidate)."""
        counts = dict(self.counts)
        for row in open_rows:
            state = row.get("state", "pending")
            counts[state] = counts.get(state, 0) + 1
        if self._best is None:
            self._best = self._recompute() if self._candidates else []
        return Summary(counts, self.total, [self._candidates[i] for i in sorted(self._best)])


def _candidates(rows: Iterable[Mapping[str, Any]], n: int) -> list[Best]:
    """Each configuration with a finished trial: its mean objective values over those trials."""
    running = RunningSummary(["max"] * n, 0)
    for row in rows:
        running.add(row)
    return list(running._candidates)


def ranking(rows: Iterable[Mapping[str, Any]], mode: str) -> list[Best]:
    """One objective: every configuration with a finished trial, best mean first (ties keep the
    order of the rows, so the first is :func:`summarize`'s best)."""
    return sorted(_candidates(rows, 1), key=lambda b: b.values[0], reverse=mode == "max")


def summarize(rows: Iterable[Mapping[str, Any]], modes: Sequence[str], total: int) -> Summary:
    running = RunningSummary(modes, total)
    for row in rows:
        running.add(row)
    return running.summary()


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
