"""A data source from a plugin module runs through the whole experiment; unknown sources are named."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from clsweep import registry
from clsweep.experiment import run_experiment
from clsweep.spec import SpecError, load_experiment, parse_experiment

PLUGIN = "tests.core.plugin_source"


def blobs_config(**benchmark: object) -> dict[str, object]:
    return {
        "imports": [PLUGIN],
        "paradigm": "cil",
        "benchmark": {"name": "split", "source": "blobs", "num_tasks": 2, "classes_per_task": 2, **benchmark},
        "backbone": {"name": "mlp", "hidden_dims": [16]},
        "algorithm": {"name": "finetuning"},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.1},
    }


def test_a_plugin_source_runs_a_two_task_experiment(tmp_path: Path) -> None:
    path = tmp_path / "blobs.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        imports: [{PLUGIN}]
        paradigm: cil
        benchmark: {{name: split, source: blobs, num_tasks: 2, classes_per_task: 2}}
        backbone: {{name: mlp, hidden_dims: [16]}}
        algorithm: {{name: finetuning}}
        train: {{epochs: 2, batch_size: 16, lr: 0.1}}
        """)
    )
    cfg = load_experiment(path)
    assert "blobs" in registry.list_names("source")
    result = run_experiment(cfg)
    R = result.test_acc_matrix
    assert len(R) == 2 and R[0][0] is not None and R[1][0] is not None and R[1][1] is not None
    assert R[0][1] is None  # not evaluated above the diagonal
    assert all(0.0 <= v <= 1.0 for row in R for v in row if v is not None)
    assert result.config["benchmark"]["source"] == "blobs"


def test_the_plugin_source_declaration_does_not_import_torch() -> None:
    """`clsweep validate` on a config with the plugin stays torch-free (checked in a fresh interpreter)."""
    import subprocess

    code = (
        f"import sys; from clsweep.spec import parse_experiment; parse_experiment({blobs_config()!r}); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr


def test_split_class_count_comes_from_the_plugin_declaration() -> None:
    with pytest.raises(SpecError) as info:
        parse_experiment(blobs_config(num_tasks=3))
    assert any(
        p.path == ("benchmark", "num_tasks") and "source 'blobs' has 4" in p.message
        for p in info.value.problems
    ), info.value.format()


def test_unknown_source_is_named_with_the_known_ones() -> None:
    config = blobs_config(source="nope")
    config["imports"] = []
    with pytest.raises(SpecError) as info:
        parse_experiment(config)
    [problem] = info.value.problems
    assert problem.path == ("benchmark", "source")
    assert (
        "unknown source 'nope'" in problem.message
        and "digits" in problem.message
        and "mnist" in problem.message
    )
    assert info.value.format().startswith("benchmark.source: unknown source 'nope'")


def test_a_source_that_reads_files_needs_a_root() -> None:
    config = blobs_config(source="mnist", classes_per_task=2)
    config["imports"] = []
    with pytest.raises(SpecError) as info:
        parse_experiment(config)
    assert [p.path for p in info.value.problems] == [("benchmark", "root")]
