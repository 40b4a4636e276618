"""The experiment config: one CL run = benchmark + backbone + heads + algorithm + training.

It is the ``experiment`` section of a sweep file and the whole of a ``clsweep experiment`` config.
Parsed once, at the boundary, into typed objects; every problem is reported with its dotted path
(and line, when read from a file). Torch-free.

YAML form::

    seed: 0                 # trial seed: initialisation and shuffling
    device: cpu             # cpu | cuda | cuda:N (never "auto")
    paradigm: til           # til | cil | dil
    benchmark: {name: permuted, source: digits, num_tasks: 5}
    backbone: {name: hat_mask_mlp, hidden_dims: [256, 256]}
    heads: {name: til}      # optional: defaults to the paradigm's heads
    algorithm: {name: hat, s_max: 400}
    train: {epochs: 10, batch_size: 64, optimizer: sgd, lr: 0.05}
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clsweep import registry
from clsweep.spec.errors import Problem, SpecError

__all__ = ["Component", "ExperimentConfig", "TrainConfig", "flatten", "parse_experiment"]

Paradigm = Literal["til", "cil", "dil"]
DEFAULT_HEADS = {"til": "til", "cil": "cil", "dil": "dil"}
_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+)$")


class FixedSchedule(BaseModel):
    """Every task trains ``train.epochs`` epochs at ``train.lr`` (no early stopping)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Literal["fixed"] = "fixed"


class PlateauSchedule(BaseModel):
    """The HAT paper code's per-task protocol (joansj/hat src/approaches/hat.py, also GEM, FACIL):
    a fresh optimiser at ``train.lr`` for each task; after every epoch the current task's
    validation loss; ``patience`` epochs without improvement divide the learning rate by
    ``factor`` (a fresh optimiser, patience reset); the task stops when the learning rate falls
    below ``min_lr`` or after ``max_epochs``; the weights of the best validation epoch are then
    restored. Only the current task's validation split is read: the test splits never are."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Literal["plateau"]
    max_epochs: int = Field(200, ge=1, le=100_000)  # joansj/hat src/run.py passes nepochs=200
    patience: int = Field(5, ge=1)  # joansj/hat hat.py lr_patience=5
    factor: float = Field(3.0, gt=1.0)  # joansj/hat hat.py lr_factor=3
    min_lr: float = Field(1.0e-4, gt=0.0)  # joansj/hat hat.py lr_min=1e-4
    restore_best: bool = True  # joansj/hat hat.py restores the best-validation model at task end


Schedule = Annotated[FixedSchedule | PlateauSchedule, Field(discriminator="name")]


class TrainConfig(BaseModel):
    """How each task is trained. A fresh optimiser is built at every task start."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    epochs: int = Field(10, ge=1, le=100_000)
    """Epochs per task under the fixed schedule (the plateau schedule uses its max_epochs)."""
    schedule: Schedule = Field(default_factory=FixedSchedule)
    batch_size: int = Field(64, ge=1)  # HAT paper code: 64
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"  # HAT paper: plain SGD
    lr: float = Field(0.05, gt=0.0)  # HAT paper code: 0.05
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    eval_batch_size: int = Field(1024, ge=1)

    @model_validator(mode="after")
    def _epochs_or_plateau(self) -> TrainConfig:
        if self.schedule.name == "plateau" and "epochs" in self.model_fields_set:
            raise ValueError(
                "epochs applies to schedule fixed; the plateau schedule stops by itself "
                "(set schedule.max_epochs instead)"
            )
        return self

    @property
    def max_epochs(self) -> int:
        """The most epochs a task trains."""
        return self.schedule.max_epochs if isinstance(self.schedule, PlateauSchedule) else self.epochs


class _Shape(BaseModel):
    """The static shape of the section; components are checked against the registry afterwards."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    imports: list[str] = Field(default_factory=list)
    seed: int = 0
    device: str = "cpu"
    paradigm: Paradigm = "til"
    benchmark: dict[str, Any]
    backbone: dict[str, Any]
    heads: dict[str, Any] | None = None
    algorithm: dict[str, Any]
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate_future: bool = False


@dataclass(frozen=True)
class Component:
    """A registered component chosen by name, with its validated hyperparameters."""

    kind: str
    name: str
    params: BaseModel

    @property
    def entry(self) -> registry.Entry:
        return registry.get(self.kind, self.name)

    def kwargs(self) -> dict[str, Any]:
        return self.params.model_dump()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params.model_dump(mode="json")}


@dataclass(frozen=True)
class ExperimentConfig:
    benchmark: Component
    backbone: Component
    heads: Component
    algorithm: Component
    train: TrainConfig
    paradigm: str = "til"
    seed: int = 0
    device: str = "cpu"
    evaluate_future: bool = False
    imports: tuple[str, ...] = field(default_factory=tuple)

    @property
    def num_tasks(self) -> int:
        return int(self.benchmark.params.num_tasks)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved config (every default filled in), as plain JSON-able data."""
        return {
            "imports": list(self.imports),
            "seed": self.seed,
            "device": self.device,
            "paradigm": self.paradigm,
            "benchmark": self.benchmark.to_dict(),
            "backbone": self.backbone.to_dict(),
            "heads": self.heads.to_dict(),
            "algorithm": self.algorithm.to_dict(),
            # the plateau schedule refuses `epochs`, so the resolved config leaves it out
            "train": self.train.model_dump(
                mode="json", exclude={"epochs"} if self.train.schedule.name != "fixed" else None
            ),
            "evaluate_future": self.evaluate_future,
        }


_UNION_TAGS = {"schedule": ("fixed", "plateau")}
"""Tagged unions: pydantic puts the tag into an error's location (train.schedule.plateau.patience)."""


def _without_union_tags(loc: tuple[object, ...]) -> tuple[object, ...]:
    out: list[object] = []
    for part in loc:
        if out and part in _UNION_TAGS.get(str(out[-1]), ()):
            continue
        out.append(part)
    return tuple(out)


def pydantic_problems(err: ValidationError, prefix: tuple[object, ...]) -> list[Problem]:
    problems = []
    for e in err.errors():
        loc = _without_union_tags(tuple(e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "literal_error":
            msg = f"{msg}, got {e.get('input')!r}"
        problems.append(Problem(prefix + loc, msg))
    return problems


def _component(
    kind: str, raw: Mapping[str, Any], prefix: tuple[object, ...]
) -> tuple[Component | None, list[Problem]]:
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        return None, [
            Problem(prefix + ("name",), f"required: the {kind}'s registered name (see `clsweep ls`)")
        ]
    try:
        entry = registry.get(kind, name)
    except registry.RegistryError as err:
        return None, [Problem(prefix + ("name",), str(err))]
    values = {k: v for k, v in raw.items() if k != "name"}
    try:
        params = entry.params.model_validate(values)
    except ValidationError as err:
        return None, pydantic_problems(err, prefix)
    bad = [
        Problem(prefix + path, f"must be a finite number, got {value}") for path, value in _non_finite(params)
    ]
    return (None, bad) if bad else (Component(kind, name, params), [])


def _non_finite(value: Any, path: tuple[object, ...] = ()) -> Iterator[tuple[tuple[object, ...], float]]:
    """Every inf/nan inside validated params (a plugin's model may not refuse them itself)."""
    if isinstance(value, BaseModel):
        for key in type(value).model_fields:
            yield from _non_finite(getattr(value, key), path + (key,))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _non_finite(item, path + (key,))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _non_finite(item, path + (i,))
    elif isinstance(value, float) and not math.isfinite(value):
        yield path, value


def _import_plugins(modules: list[str], prefix: tuple[object, ...]) -> list[Problem]:
    """Import the ``imports:`` modules; a module that cannot be imported is bad input."""
    problems = []
    for i, module in enumerate(modules):
        try:
            registry.import_plugins([module])
        except ImportError as err:
            problems.append(Problem(prefix + ("imports", i), f"cannot import {module!r}: {err}"))
        except Exception as err:  # noqa: BLE001 - a plugin that fails while importing is bad input too
            problems.append(
                Problem(prefix + ("imports", i), f"importing {module!r} failed: {type(err).__name__}: {err}")
            )
    return problems


def parse_experiment(raw: Any, *, prefix: tuple[object, ...] = ()) -> ExperimentConfig:
    """Validate an experiment mapping; raises :class:`SpecError` listing every problem found."""
    if not isinstance(raw, Mapping):
        raise SpecError([Problem(prefix, f"expected a mapping, got {type(raw).__name__}")])
    problems: list[Problem] = []
    shape: _Shape | None = None
    try:
        shape = _Shape.model_validate(dict(raw))
    except ValidationError as err:
        problems += pydantic_problems(err, prefix)
    imports = raw.get("imports") if shape is None else shape.imports
    if isinstance(imports, list):
        problems += _import_plugins([str(m) for m in imports], prefix)
    if shape is not None and not _DEVICE.match(shape.device):
        problems.append(Problem(prefix + ("device",), f"expected cpu, cuda or cuda:N, got {shape.device!r}"))

    paradigm = raw.get("paradigm", "til")
    paradigm = paradigm if isinstance(paradigm, str) else "til"  # a wrong type is reported by the shape check
    heads_raw = raw.get("heads") or {"name": DEFAULT_HEADS.get(paradigm, "til")}
    parts: dict[str, Component] = {}
    for kind, value in (
        ("benchmark", raw.get("benchmark")),
        ("backbone", raw.get("backbone")),
        ("heads", heads_raw),
        ("algorithm", raw.get("algorithm")),
    ):
        if not isinstance(value, Mapping):
            continue  # missing or not a mapping: already reported by the shape check
        comp, probs = _component(kind, value, prefix + (kind,))
        problems += probs
        if comp is not None:
            parts[kind] = comp
    if problems or shape is None:
        raise SpecError(problems)

    bench, backbone, heads, algo = parts["benchmark"], parts["backbone"], parts["heads"], parts["algorithm"]
    if getattr(bench.params, "seed", None) == "trial":  # benchmark.seed: trial follows the trial seed
        bench = Component(bench.kind, bench.name, bench.params.model_copy(update={"seed": shape.seed}))
    paradigm = shape.paradigm
    for key, comp in (("benchmark", bench), ("algorithm", algo), ("heads", heads)):
        if paradigm not in comp.entry.paradigms:
            supported = ", ".join(sorted(comp.entry.paradigms))
            problems.append(
                Problem(
                    prefix + ("paradigm",),
                    f"{key} {comp.name!r} does not support paradigm {paradigm!r} (supports: {supported})",
                )
            )
    hat_family = "hat_family" in algo.entry.tags
    hat_backbone = "hat_mask" in backbone.entry.tags
    if hat_family and not hat_backbone:
        problems.append(
            Problem(
                prefix + ("backbone", "name"),
                f"algorithm {algo.name!r} needs a HAT-mask backbone (hat_mask_*), got {backbone.name!r}",
            )
        )
    if hat_backbone and not hat_family:
        problems.append(
            Problem(
                prefix + ("backbone", "name"),
                f"backbone {backbone.name!r} is gated by HAT masks and needs a HAT-family algorithm "
                f"(hat, adahat), got {algo.name!r}; use the plain backbone instead",
            )
        )
    if (hat_family or "frozen_weights" in algo.entry.tags) and shape.train.weight_decay > 0:
        problems.append(
            Problem(
                prefix + ("train", "weight_decay"),
                f"must be 0 for {algo.name}: decay moves the weights old tasks rely on",
            )
        )
    isolated = "isolated" in algo.entry.tags and "shared_layer" in heads.entry.tags
    if isolated and shape.train.weight_decay > 0:
        problems.append(
            Problem(
                prefix + ("train", "weight_decay"),
                f"must be 0 for {algo.name} with heads {heads.name!r}, whose one layer holds every "
                "task's classes: decay would move the rows of tasks already trained (use heads 'til')",
            )
        )
    if shape.evaluate_future and paradigm != "dil":
        problems.append(
            Problem(
                prefix + ("evaluate_future",),
                "future tasks can be evaluated only in paradigm 'dil' (TIL and CIL have no "
                "output units for classes not yet seen)",
            )
        )
    if heads.name == "stl" and getattr(bench.params, "num_tasks", 1) != 1:
        problems.append(
            Problem(prefix + ("heads", "name"), "heads 'stl' serve a single task; set benchmark.num_tasks: 1")
        )
    source = getattr(bench.params, "source", None)  # a registered name: checked by the params model
    info = registry.get("source", source).source if isinstance(source, str) else None
    if info is not None and info.needs_root and getattr(bench.params, "root", None) is None:
        problems.append(
            Problem(
                prefix + ("benchmark", "root"),
                f"source {source!r} reads files: give the folder "
                "that holds them (with `download: true` they are fetched there)",
            )
        )
    if bench.name == "split" and info is not None:
        p: Any = bench.params
        need, have = p.num_tasks * p.classes_per_task, info.num_classes
        if need > have:
            message = f"{p.num_tasks} tasks x {p.classes_per_task} classes need {need} classes; "
            problems.append(
                Problem(prefix + ("benchmark", "num_tasks"), message + f"source {p.source!r} has {have}")
            )
    if problems:
        raise SpecError(problems)
    return ExperimentConfig(
        benchmark=bench,
        backbone=backbone,
        heads=heads,
        algorithm=algo,
        train=shape.train,
        paradigm=paradigm,
        seed=shape.seed,
        device=shape.device,
        evaluate_future=shape.evaluate_future,
        imports=tuple(shape.imports),
    )


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"a.b.c": value}``; lists stay values (for MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
