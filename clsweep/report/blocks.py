"""The building blocks of a report page (tables, facts, code, sections), rendered to HTML and
Markdown by clsweep.report.render; every section builder of the report composes these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Block", "Code", "Document", "Facts", "Figure", "Section", "Table", "fmt", "spread_text"]


@dataclass(frozen=True)
class Figure:
    name: str
    """File stem: the PNG is ``figures/<name>.png``."""
    title: str
    caption: str
    png: bytes


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    caption: str = ""


@dataclass
class Facts:
    items: list[tuple[str, str]]


@dataclass
class Code:
    text: str
    title: str


Block = str | Table | Facts | Code | Figure


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    subtitle: str
    warning: str | None
    sections: list[Section]


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if value == value else "-"
    return str(value)


def spread_text(stats: dict[str, Any] | None, digits: int = 4) -> str:
    """'mean ± std (n=3)' or just the value for one seed."""
    if not stats or stats.get("mean") is None:
        return "-"
    if stats["n"] == 1:
        return fmt(stats["mean"], digits)
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f} (n={stats['n']})"
