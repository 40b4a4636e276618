"""Every registered component follows the one calling convention of ``registry.create``:
``implementation(*structural, **fixed, params=<validated params model>)``."""

from __future__ import annotations

import importlib.util
import inspect

import pytest
from pydantic import BaseModel

from clsweep import registry
from clsweep.benchmarks import load_source
from clsweep.spec.components import SourceParams

ALL = [(kind, e.name) for kind in registry.KINDS for e in registry.entries(kind) if "test_only" not in e.tags]
SOURCES = registry.list_names("source")
OFFLINE = [n for n in SOURCES if not registry.get("source", n).source.needs_root]  # type: ignore[union-attr]


@pytest.mark.parametrize(("kind", "name"), ALL, ids=[f"{k}:{n}" for k, n in ALL])
def test_constructor_follows_the_calling_convention(kind: str, name: str) -> None:
    entry = registry.get(kind, name)
    signature = inspect.signature(entry.load())
    parameters = list(signature.parameters.values())
    positional = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    keywords = {p.name for p in parameters if p.kind is p.KEYWORD_ONLY}
    assert positional == list(registry.STRUCTURAL[kind]), f"{entry.target} takes {positional} positionally"
    assert keywords == {"params", *dict(entry.fixed)}, f"{entry.target} takes keywords {sorted(keywords)}"
    assert signature.parameters["params"].default is inspect.Parameter.empty, (
        "defaults live in the params model"
    )
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in parameters), "no *args / **kwargs"
    assert issubclass(entry.params, BaseModel)
    entry.params()  # every hyperparameter has a default


@pytest.mark.parametrize("name", SOURCES)
def test_source_declares_what_the_validator_needs(name: str) -> None:
    entry = registry.get("source", name)
    assert entry.source is not None and len(entry.source.input_shape) == 3 and entry.source.num_classes >= 2
    assert issubclass(entry.params, SourceParams)
    for module in (*entry.preload, entry.module):
        assert importlib.util.find_spec(module) is not None, module


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_source_loads_as_declared(name: str) -> None:
    info = registry.get("source", name).source
    assert info is not None
    data = load_source(name)  # raises when the data do not match the declaration
    assert data.input_shape == info.input_shape and data.num_classes == info.num_classes
    assert set(data.train_y.unique().tolist()) <= set(range(info.num_classes))


def test_create_passes_the_validated_params_model() -> None:
    heads = registry.create("heads", "til", 4)
    assert type(heads.params) is registry.NoParams
    backbone = registry.create("backbone", "hat_mask_mlp", (1, 2, 2), hidden_dims=[3])
    algorithm = registry.create("algorithm", "adahat", backbone, heads, alpha=0.5)
    assert type(algorithm.params).__name__ == "AdaHATParams"
    assert algorithm.params.alpha == 0.5 and algorithm.params.s_max == 400.0  # the rest from the model


def test_create_rejects_bad_params_clearly() -> None:
    with pytest.raises(
        registry.ParamsError, match=r"algorithm 'hat'.*\n  s_max: Input should be greater than 0"
    ):
        registry.create("algorithm", "hat", None, None, s_max=0)
    with pytest.raises(registry.ParamsError, match="nope: Extra inputs are not permitted"):
        registry.create("heads", "til", 4, nope=1)
    with pytest.raises(ValueError, match="supports paradigms til, cil, got 'dil'"):
        registry.create("benchmark", "split", "dil")


def test_a_source_entry_needs_its_source_info() -> None:
    with pytest.raises(registry.RegistryError, match="SourceInfo"):
        registry.register("source", "no_info", "x:y")
    with pytest.raises(registry.RegistryError, match="SourceInfo"):
        registry.register("backbone", "with_info", "x:y", source=registry.SourceInfo((1, 2, 2), 2))


def test_duplicate_name_is_an_error() -> None:
    with pytest.raises(registry.RegistryError, match="duplicate"):
        registry.register("algorithm", "hat", "x:y")
    with pytest.raises(registry.RegistryError, match="duplicate"):
        registry.register("source", "digits", "x:y", source=registry.SourceInfo((1, 8, 8), 10))


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(registry.RegistryError, match="known: .*finetuning"):
        registry.get("algorithm", "nope")


def test_list_names_pattern() -> None:
    assert registry.list_names("backbone", "resnet*") == [
        "resnet101",
        "resnet152",
        "resnet18",
        "resnet34",
        "resnet50",
    ]
    assert set(registry.list_names("algorithm")) >= {"finetuning", "fix", "hat", "adahat"}
    assert set(registry.list_names("source")) >= {
        "digits",
        "synthetic",
        "mnist",
        "fashion_mnist",
        "cifar10",
        "cifar100",
    }
