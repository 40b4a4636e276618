"""Every registered component: its declared params model matches its constructor exactly."""

from __future__ import annotations

import inspect

import pytest

from clsweep import registry

# context arguments the builder passes besides the declared hyperparameters
CONTEXT = {
    "benchmark": {"paradigm"},
    "backbone": {"input_shape"},
    "heads": {"input_dim"},
    "algorithm": {"backbone", "heads"},
}

ALL = [(kind, name) for kind in registry.KINDS for name in registry.list_names(kind)]


@pytest.mark.parametrize(("kind", "name"), ALL, ids=[f"{k}:{n}" for k, n in ALL])
def test_constructor_matches_params_model(kind: str, name: str) -> None:
    entry = registry.get(kind, name)
    target = entry.load()
    signature = inspect.signature(target)
    accepted = {p.name for p in signature.parameters.values()
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    declared = set(entry.params.model_fields)
    assert accepted - CONTEXT[kind] == declared, f"{entry.target} takes {sorted(accepted)}, declared {sorted(declared)}"
    assert not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()), "no **kwargs: names are checked"


def test_duplicate_name_is_an_error() -> None:
    with pytest.raises(registry.RegistryError, match="duplicate"):
        registry.register("algorithm", "hat", "x:y")


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(registry.RegistryError, match="known: .*finetuning"):
        registry.get("algorithm", "nope")


def test_list_names_pattern() -> None:
    assert registry.list_names("backbone", "resnet*") == ["resnet101", "resnet152", "resnet18", "resnet34", "resnet50"]
    assert set(registry.list_names("algorithm")) >= {"finetuning", "fix", "hat", "adahat"}
