"""One generic registry for every component chosen by name: the four parts of an experiment
(benchmarks, backbones, heads, algorithms) and the data sources the benchmarks read.

An entry is declared without importing its implementation: it names the class (or loader
function) by import path (``"clsweep.algorithms.hat:HAT"``) and carries a pydantic model of its
hyperparameters, plus what the component supports (paradigms, tags) and, for a source, what the
validator needs to know about its data (:class:`SourceInfo`). So the spec layer (``clsweep
validate``) checks a config completely without importing torch.

:func:`create` is the only way a component is built, and every component is called the same way::

    implementation(*structural, **fixed, params=<validated params model instance>)

``structural`` are what the caller knows at build time (see :data:`STRUCTURAL`); ``fixed`` are
keyword arguments the entry itself binds (a ResNet's depth); ``params`` is the entry's params
model, validated by :func:`create`. Defaults live only in the params models. The registry
contract test (tests/core/test_registry_contract.py) checks every implementation's signature
against this convention.

Out-of-tree components come in through an explicit import list in the config (``imports:``): the
listed modules call :func:`register` themselves. Folders are never scanned.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from clsweep.common import EXPERIMENT_COMPONENTS, PARADIGMS

__all__ = [
    "KINDS",
    "STRUCTURAL",
    "Entry",
    "NoParams",
    "ParamsError",
    "RegistryError",
    "SourceInfo",
    "create",
    "entries",
    "get",
    "import_plugins",
    "list_names",
    "load",
    "register",
    "validate_params",
]

KINDS: tuple[str, ...] = (*EXPERIMENT_COMPONENTS, "source")

STRUCTURAL: dict[str, tuple[str, ...]] = {
    "benchmark": ("paradigm",),
    "backbone": ("input_shape",),
    "heads": ("input_dim",),
    "algorithm": ("backbone", "heads"),
    "source": (),
}
"""The positional arguments each kind's implementation takes before ``params``, in order."""


class NoParams(BaseModel):
    """Params model of a component that takes no hyperparameters."""

    model_config = ConfigDict(extra="forbid")


class RegistryError(LookupError):
    """An unknown kind, an unknown name, a duplicate name or a broken declaration."""


class ParamsError(ValueError):
    """Hyperparameters that do not fit a component's params model (each problem on its own line)."""


@dataclass(frozen=True)
class SourceInfo:
    """What the validator knows about a data source without reading it.

    Attributes:
        input_shape: ``(C, H, W)`` of every image.
        num_classes: labels are ``0 .. num_classes - 1``.
        needs_root: the loader reads files from the benchmark's ``root``.
    """

    input_shape: tuple[int, int, int]
    num_classes: int
    needs_root: bool = False


@dataclass(frozen=True)
class Entry:
    """What the registry knows about one component.

    Attributes:
        kind: one of :data:`KINDS`.
        name: the short name used in configs (``hat``, ``resnet18``, ``permuted``, ``digits``).
        target: ``"module.path:Attribute"`` of the implementation, imported lazily.
        params: pydantic model of the hyperparameters (``extra="forbid"``).
        summary: one line for ``clsweep ls``.
        paradigms: the CL paradigms supported (``til``, ``cil``, ``dil``).
        tags: free-form capabilities, e.g. ``{"hat_family"}`` for algorithms that need a HAT-mask
            backbone, ``{"hat_mask"}`` for such backbones.
        fixed: keyword arguments the entry binds (not hyperparameters), as ``(name, value)`` pairs.
        preload: modules the implementation imports when it first runs (a source's dataset
            library); the sweeper's fork server imports them up front.
        source: for a data source, its :class:`SourceInfo`.
    """

    kind: str
    name: str
    target: str
    params: type[BaseModel] = NoParams
    summary: str = ""
    paradigms: frozenset[str] = field(default_factory=lambda: frozenset(PARADIGMS))
    tags: frozenset[str] = frozenset()
    fixed: tuple[tuple[str, Any], ...] = ()
    preload: tuple[str, ...] = ()
    source: SourceInfo | None = None

    @property
    def module(self) -> str:
        """The module that holds the implementation."""
        return self.target.partition(":")[0]

    def load(self) -> Any:
        """Import and return the implementing class (or factory function)."""
        module_name, _, attr = self.target.partition(":")
        module = importlib.import_module(module_name)
        try:
            return getattr(module, attr)
        except AttributeError as err:  # a broken declaration is a bug, say so plainly
            raise RegistryError(
                f"{self.kind} {self.name!r}: {module_name} has no attribute {attr!r}"
            ) from err

    def supported_paradigms(self) -> str:
        """The supported paradigms, in the order of :data:`~clsweep.common.PARADIGMS`."""
        return ", ".join(p for p in PARADIGMS if p in self.paradigms)


_ENTRIES: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
_BUILTINS_LOADED = False


def register(
    kind: str,
    name: str,
    target: str,
    *,
    params: type[BaseModel] = NoParams,
    summary: str = "",
    paradigms: Iterable[str] = PARADIGMS,
    tags: Iterable[str] = (),
    fixed: Mapping[str, Any] | None = None,
    preload: Iterable[str] = (),
    source: SourceInfo | None = None,
) -> Entry:
    """Declare a component. A name already taken for that kind is an error; a source must say
    what its data look like (``source=SourceInfo(...)``), no other kind may."""
    _check_kind(kind)
    if name in _ENTRIES[kind]:
        raise RegistryError(
            f"duplicate {kind} name {name!r} (already registered as {_ENTRIES[kind][name].target})"
        )
    if (kind == "source") != (source is not None):
        raise RegistryError(f"{kind} {name!r}: pass source=SourceInfo(...) for a source, and only for one")
    unknown = set(paradigms) - set(PARADIGMS)
    if unknown:
        raise RegistryError(
            f"{kind} {name!r}: unknown paradigms {sorted(unknown)}; expected {', '.join(PARADIGMS)}"
        )
    entry = Entry(
        kind,
        name,
        target,
        params,
        summary,
        frozenset(paradigms),
        frozenset(tags),
        tuple((fixed or {}).items()),
        tuple(preload),
        source,
    )
    _ENTRIES[kind][name] = entry
    return entry


def _check_kind(kind: str) -> None:
    if kind not in _ENTRIES:
        raise RegistryError(f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}")


def _ensure_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("clsweep.spec.components")
        importlib.import_module("clsweep.spec.methods").load()


def get(kind: str, name: str) -> Entry:
    """The entry for ``name``; an unknown name raises with the list of known ones."""
    _ensure_builtins()
    _check_kind(kind)
    try:
        return _ENTRIES[kind][name]
    except KeyError:
        known = ", ".join(sorted(_ENTRIES[kind]))
        raise RegistryError(f"unknown {kind} {name!r}; known: {known}") from None


def list_names(kind: str, pattern: str = "*") -> list[str]:
    """Registered names of a kind matching a shell-style pattern (``resnet*``), sorted."""
    _ensure_builtins()
    _check_kind(kind)
    return sorted(n for n in _ENTRIES[kind] if fnmatch.fnmatchcase(n, pattern))


def entries(kind: str) -> list[Entry]:
    """Every entry of a kind, sorted by name."""
    _ensure_builtins()
    _check_kind(kind)
    return [_ENTRIES[kind][n] for n in sorted(_ENTRIES[kind])]


def load(kind: str, name: str) -> Callable[..., Any]:
    """Import the implementation of a registered component (build it with :func:`create`)."""
    return get(kind, name).load()


def validate_params(kind: str, name: str, values: Mapping[str, Any] | BaseModel) -> BaseModel:
    """``values`` checked against (and completed from the defaults of) the entry's params model;
    an instance of exactly that model is returned as it is. Raises :class:`ParamsError`."""
    entry = get(kind, name)
    if type(values) is entry.params:  # a subclass instance would smuggle in fields of another model
        return values
    if isinstance(values, BaseModel):
        values = values.model_dump()
    try:
        return entry.params.model_validate(dict(values))
    except ValidationError as err:
        lines = [
            f"{'.'.join(str(p) for p in e['loc']) or '(params)'}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        ]
        raise ParamsError(
            f"{kind} {name!r}: bad params ({entry.params.__name__}):\n  " + "\n  ".join(lines)
        ) from None


def create(kind: str, name: str, *args: Any, params: BaseModel | None = None, **values: Any) -> Any:
    """Build the registered component ``name``: ``implementation(*args, **fixed, params=...)``.

    The hyperparameters are ``values`` (keywords) or an already built ``params`` model, validated
    against the entry's params model either way. A benchmark's first argument is the paradigm, which
    must be one the entry declares.
    """
    entry = get(kind, name)
    if params is not None and values:
        raise TypeError("give the hyperparameters either as keywords or as `params`, not both")
    validated = validate_params(kind, name, params if params is not None else values)
    if kind == "benchmark" and args and args[0] not in entry.paradigms:
        raise ValueError(
            f"benchmark {name!r} supports paradigms {entry.supported_paradigms()}, got {args[0]!r}"
        )
    return entry.load()(*args, **dict(entry.fixed), params=validated)


def import_plugins(modules: Iterable[str]) -> None:
    """Import out-of-tree modules named in a config's ``imports:`` list; they register themselves."""
    _ensure_builtins()
    for module in modules:
        importlib.import_module(module)
