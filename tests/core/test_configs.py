"""Every shipped experiment config in configs/ loads through the same path as `clsweep experiment`."""

from __future__ import annotations

from pathlib import Path

import pytest

from clsweep.spec import load_experiment

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_there_are_shipped_configs() -> None:
    names = {p.stem for p in CONFIGS}
    assert {
        "finetuning_digits",
        "fix_digits",
        "hat_digits",
        "adahat_digits",
        "hat_pmnist",
        "hat_cifar100",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_is_valid(path: Path) -> None:
    cfg = load_experiment(path)
    assert cfg.num_tasks >= 2
    if "digits" in path.stem:  # offline configs run here; the others need a GPU and dataset files
        assert cfg.benchmark.params.source == "digits" and cfg.device == "cpu"  # type: ignore[attr-defined]
    else:
        assert cfg.device == "cuda"
