"""One generic registry for every component chosen by name (backbones, heads, algorithms, benchmarks).

An entry is declared without importing its implementation: it names the class by import path
(``"clsweep.algorithms.hat:HAT"``) and carries a pydantic model of the hyperparameters the
class's constructor takes, plus what the component supports (paradigms, needs). So the spec layer
(``clsweep validate``) can check a config completely without importing torch, and the class itself
is imported only when an experiment is built.

A contract test (tests/test_registry_contract.py) imports every entry's target and checks that its
constructor accepts exactly the fields of the entry's params model, so the two cannot drift apart.

Out-of-tree components come in through an explicit import list in the config (``imports:``): the
listed modules call :func:`register` themselves. Folders are never scanned.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["KINDS", "Entry", "NoParams", "RegistryError", "get", "list_names", "load", "register"]

KINDS = ("benchmark", "backbone", "heads", "algorithm")


class NoParams(BaseModel):
    """Params model of a component that takes no hyperparameters."""

    model_config = ConfigDict(extra="forbid")


class RegistryError(LookupError):
    """An unknown kind, an unknown name or a duplicate name."""


@dataclass(frozen=True)
class Entry:
    """What the registry knows about one component.

    Attributes:
        kind: one of :data:`KINDS`.
        name: the short name used in configs (``hat``, ``resnet18``, ``permuted``).
        target: ``"module.path:ClassName"`` of the implementation, imported lazily.
        params: pydantic model of the constructor's hyperparameters (``extra="forbid"``).
        summary: one line for ``clsweep ls``.
        paradigms: for algorithms and heads, the CL paradigms supported (``til``, ``cil``, ``dil``).
        tags: free-form capabilities, e.g. ``{"hat_family"}`` for algorithms that need a HAT-mask
            backbone, ``{"hat_mask"}`` for such backbones.
    """

    kind: str
    name: str
    target: str
    params: type[BaseModel] = NoParams
    summary: str = ""
    paradigms: frozenset[str] = field(default_factory=lambda: frozenset({"til", "cil", "dil"}))
    tags: frozenset[str] = frozenset()

    def load(self) -> Any:
        """Import and return the implementing class (or factory function)."""
        module_name, _, attr = self.target.partition(":")
        module = importlib.import_module(module_name)
        try:
            return getattr(module, attr)
        except AttributeError as err:  # a broken declaration is a bug, say so plainly
            raise RegistryError(f"{self.kind} {self.name!r}: {module_name} has no attribute {attr!r}") from err


_ENTRIES: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
_BUILTINS_LOADED = False


def register(
    kind: str,
    name: str,
    target: str,
    *,
    params: type[BaseModel] = NoParams,
    summary: str = "",
    paradigms: Iterable[str] = ("til", "cil", "dil"),
    tags: Iterable[str] = (),
) -> Entry:
    """Declare a component. A name already taken for that kind is an error."""
    if kind not in _ENTRIES:
        raise RegistryError(f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}")
    if name in _ENTRIES[kind]:
        raise RegistryError(f"duplicate {kind} name {name!r} (already registered as {_ENTRIES[kind][name].target})")
    entry = Entry(kind, name, target, params, summary, frozenset(paradigms), frozenset(tags))
    _ENTRIES[kind][name] = entry
    return entry


def _ensure_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("clsweep.spec.components")


def get(kind: str, name: str) -> Entry:
    """The entry for ``name``; an unknown name raises with the list of known ones."""
    _ensure_builtins()
    if kind not in _ENTRIES:
        raise RegistryError(f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}")
    try:
        return _ENTRIES[kind][name]
    except KeyError:
        known = ", ".join(sorted(_ENTRIES[kind]))
        raise RegistryError(f"unknown {kind} {name!r}; known: {known}") from None


def list_names(kind: str, pattern: str = "*") -> list[str]:
    """Registered names of a kind matching a shell-style pattern (``resnet*``), sorted."""
    _ensure_builtins()
    return sorted(n for n in _ENTRIES[kind] if fnmatch.fnmatchcase(n, pattern))


def entries(kind: str) -> list[Entry]:
    _ensure_builtins()
    return [_ENTRIES[kind][n] for n in sorted(_ENTRIES[kind])]


def load(kind: str, name: str) -> Callable[..., Any]:
    """Import the implementation of a registered component."""
    return get(kind, name).load()


def import_plugins(modules: Iterable[str]) -> None:
    """Import out-of-tree modules named in a config's ``imports:`` list; they register themselves."""
    _ensure_builtins()
    for module in modules:
        importlib.import_module(module)
