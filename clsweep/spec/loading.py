"""Reading YAML with line numbers, and applying ``--set dotted.key=value`` overrides.

Two levels of precedence only: the file, then ``--set`` on the command line.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from clsweep.spec.errors import Problem, SpecError

__all__ = ["LineDict", "apply_overrides", "line_of", "load_mapping", "load_yaml", "parse_override"]


class LineDict(dict):  # type: ignore[type-arg]
    """A dict that remembers the source line of each key."""

    lines: dict[Any, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines = {}


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    mapping = LineDict()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise SpecError([Problem((), f"mapping key {key!r} is not a scalar", line)])
        if key in mapping:
            raise SpecError(
                [Problem((key,), f"duplicate key (first given on line {mapping.lines[key]})", line)]
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = line
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)  # type: ignore[arg-type]


MAX_FILE_BYTES = 1 << 20
"""A config or sweep file is a page of YAML; anything above 1 MiB is not one (and YAML's aliases
can make a small file expand enormously: see the node limit below)."""
MAX_NODES = 200_000


class _Bomb(Exception):
    pass


def load_yaml(path: str | Path) -> Any:
    """Parse one YAML document; a syntax error becomes a SpecError with its line. The file must be
    UTF-8 text of at most :data:`MAX_FILE_BYTES`."""
    p = Path(path)
    source = str(path)
    try:
        if p.is_dir():
            raise SpecError([Problem((), "is a folder, not a YAML file")], source)
        if p.stat().st_size > MAX_FILE_BYTES:
            raise SpecError(
                [
                    Problem(
                        (),
                        f"{p.stat().st_size} bytes: a config or sweep file is at most {MAX_FILE_BYTES} bytes",
                    )
                ],
                source,
            )
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SpecError([Problem((), "file not found")], source) from None
    except UnicodeDecodeError as err:
        raise SpecError([Problem((), f"not UTF-8 text (byte {err.start}: {err.reason})")], source) from None
    except OSError as err:
        raise SpecError([Problem((), f"cannot read file: {err.strerror}")], source) from None
    if "\x00" in text:
        raise SpecError([Problem((), "not a text file (it contains NUL bytes)")], source)
    try:
        return _load_bounded(text)
    except _Bomb:
        raise SpecError(
            [Problem((), f"the YAML expands to more than {MAX_NODES} values (aliases?)")], source
        ) from None
    except SpecError as err:
        raise SpecError(err.problems, source) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or str(err)
        context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and context_mark is not None:
            problem += f" ({context} started on line {context_mark.line + 1})"
        raise SpecError([Problem((), f"YAML syntax error: {problem}", line)], source) from None


def _load_bounded(text: str) -> Any:
    """yaml.load with a bound on the number of nodes composed (an alias bomb stops early)."""
    loader = _LineLoader(text)
    count = [0]
    compose = loader.compose_node

    def bounded(parent: Any, index: Any) -> Any:
        count[0] += 1
        if count[0] > MAX_NODES:
            raise _Bomb
        return compose(parent, index)

    loader.compose_node = bounded  # type: ignore[method-assign]
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    _check_expanded(data)
    return data


def _check_expanded(data: Any) -> None:
    """Aliases share one object: a few lines can stand for billions of values once copied."""
    seen, stack = 0, [data]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise _Bomb
        if isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def load_mapping(path: str | Path) -> LineDict:
    """:func:`load_yaml` for files whose top level must be a mapping (configs, sweep files)."""
    raw = load_yaml(path)
    if raw is None:
        raise SpecError([Problem((), "the file is empty")], str(path))
    if not isinstance(raw, dict):
        raise SpecError(
            [Problem((), f"expected a mapping at the top level, got {type(raw).__name__}")], str(path)
        )
    return raw  # type: ignore[return-value]


def line_of(data: Any, path: Iterable[object]) -> int | None:
    """Line of the deepest key along ``path`` that the YAML recorded."""
    line = None
    node = data
    for part in path:
        if isinstance(node, LineDict) and part in node:
            line = node.lines.get(part, line)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
    return line


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], parsed value). The value is read as YAML (``1``, ``0.5``,
    ``[64, 128]``, ``null``, ``true``), so types match what the file would give."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError([Problem(("--set",), f"{text!r} is not of the form dotted.key=value")])
    parts = key.split(".")
    if any(not p for p in parts):
        raise SpecError([Problem(("--set",), f"{text!r}: empty component in key {key!r}")])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise SpecError([Problem(("--set",), f"{text!r}: the value {raw!r} is not valid YAML")]) from None
    return parts, value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A deep copy of ``data`` with each ``--set`` applied in order. Intermediate mappings are
    created; stepping into a non-mapping is an error naming the key."""
    result: dict[str, Any] = copy.deepcopy(dict(data))
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = result
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = LineDict()
                node[part] = child
            elif not isinstance(child, dict):
                raise SpecError(
                    [
                        Problem(
                            tuple(parts[: i + 1]),
                            f"--set {text!r}: cannot set a key inside a {type(child).__name__}",
                        )
                    ]
                )
            node = child
        node[parts[-1]] = value
    return result
