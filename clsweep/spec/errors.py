"""Errors of the spec layer: every problem names the field (dotted path) and, where known, the line."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Problem", "SpecError", "dotted"]


def dotted(path: Iterable[object]) -> str:
    """``("experiment", "train", "lr")`` -> ``experiment.train.lr``; list indices as ``[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top level>"


@dataclass(frozen=True)
class Problem:
    path: tuple[object, ...]
    message: str
    line: int | None = None

    def format(self, source: str | None = None) -> str:
        where = ""
        if source and self.line:
            where = f"{source}:{self.line}: "
        elif source:
            where = f"{source}: "
        elif self.line:
            where = f"line {self.line}: "
        field = f"{dotted(self.path)}: " if self.path else ""
        return f"{where}{field}{self.message}"


class SpecError(ValueError):
    """A config, sweep file or command-line override that cannot be used as it is."""

    def __init__(self, problems: Sequence[Problem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(self.format())

    def format(self) -> str:
        return "\n".join(p.format(self.source) for p in self.problems)

    def with_lines(self, locate: object) -> SpecError:
        """A copy whose problems carry line numbers found by ``locate(path) -> int | None``."""
        problems = [p if p.line else Problem(p.path, p.message, locate(p.path)) for p in self.problems]  # type: ignore[operator]
        return SpecError(problems, self.source)
