"""Bad input beyond the schema: a corpus of mutations of every shipped sweep file, and files that
are not sweep files at all. Each ends in a SpecError (exit 2, one message per problem, the field
named) within seconds, or validates: never another exception, never a hang."""

from __future__ import annotations

import copy
import math
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from clsweep.spec.errors import SpecError
from clsweep.spec.sweep import parse_sweep

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "search_spaces").glob("*.yaml"))
ODD_VALUES: list[Any] = [
    None,
    "x",
    [],
    {},
    -1,
    0,
    10**12,
    math.inf,
    -math.inf,
    math.nan,
    1.5,
    True,
    [1, "a"],
    {"name": "x"},
]


def _mutations(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(what changed, mutated copy) for every key of the file and of its experiment and search."""
    for key in list(data):
        gone = copy.deepcopy(data)
        del gone[key]
        yield f"drop {key}", gone
        for value in ODD_VALUES:
            odd = copy.deepcopy(data)
            odd[key] = value
            yield f"{key}={value!r}", odd
    for section in ("experiment", "searcher", "scheduler", "resources", "protocol", "objective"):
        if not isinstance(data.get(section), dict):
            continue
        for key in list(data[section]):
            for value in ODD_VALUES:
                odd = copy.deepcopy(data)
                odd[section][key] = value
                yield f"{section}.{key}={value!r}", odd
    for part in ("benchmark", "backbone", "algorithm", "train"):
        component = data["experiment"].get(part)
        if not isinstance(component, dict):
            continue
        for key in list(component):
            for value in ODD_VALUES:
                odd = copy.deepcopy(data)
                odd["experiment"][part][key] = value
                yield f"experiment.{part}.{key}={value!r}", odd
    for path in list(data.get("search") or {}):
        for entry in (
            {"uniform": [math.nan, 1]},
            {"log_uniform": [0, 1]},
            {"choice": []},
            {"grid": "x"},
            {"int": [5, 1]},
            {"uniform": [0, 1], "grid": [1]},
            {"nope": 1},
            {"choice": [math.inf]},
            {"grid": list(range(1001))},
            None,
            "x",
        ):
            odd = copy.deepcopy(data)
            odd["search"][path] = entry
            yield f"search.{path}={str(entry)[:40]}", odd


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_mutation_of_a_shipped_sweep_file_is_valid_or_one_clear_spec_error(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    parse_sweep(copy.deepcopy(data))  # the file itself is valid
    count = refused = 0
    for what, mutated in _mutations(data):
        started = time.perf_counter()
        try:
            parse_sweep(mutated)
        except SpecError as err:
            refused += 1
            assert err.problems and all(p.message for p in err.problems), what
            assert "Traceback" not in err.format(), what
        elapsed = time.perf_counter() - started
        assert elapsed < 5.0, f"{what}: validation took {elapsed:.1f} s"
        count += 1
    assert count > 100 and refused > count // 2  # most mutations are bad input


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\x00bad", "not UTF-8"),
        (b"name: x\x00\n", "NUL"),
        (b"", "empty"),
        (b"- a\n- b\n", "mapping"),
        (b"name: [unclosed\n", "YAML syntax error"),
        (
            b"a: &a [x,x,x,x,x,x,x,x,x,x]\n"
            + b"".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n".encode()
                for i in range(8)
            ),
            "expands",
        ),
        (b"name: x\n" + b"#" * (1 << 20) + b"\n", "bytes"),
    ],
    ids=["binary", "nul", "empty", "list", "syntax", "alias-bomb", "too-big"],
)
def test_files_that_are_not_sweep_files(cli, tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_bytes(content)
    started = time.perf_counter()
    code, out, err = cli("validate", str(path))
    assert code == 2 and message in err and "Traceback" not in err
    assert time.perf_counter() - started < 5.0
    code, _, err = cli("run", str(path), "--storage", str(tmp_path / "runs"))
    assert code == 2 and not (tmp_path / "runs").exists()


def test_what_a_sweep_file_points_at(cli, write_yaml, tmp_path: Path) -> None:
    base = """
    name: points
    experiment:
      {imports}
      benchmark: {{name: permuted, source: synthetic, num_tasks: 2}}
      backbone: {{name: mlp}}
      algorithm: {{name: finetuning}}
    {tracking}
    """
    cases = [
        (
            "imports: [no_such_plugin.module]",
            "",
            "experiment.imports[0]: cannot import 'no_such_plugin.module'",
        ),
        ("", "tracking: {uri: 'postgresql://user@db.invalid/mlflow'}", "needs the psycopg2 driver"),
        ("", "tracking: {uri: 'mysql+pymysql://user@db.invalid/mlflow'}", "needs the pymysql driver"),
        ("", "tracking: {uri: 'databricks'}", "Databricks"),
        ("", "tracking: {uri: 'file:///tmp/mlruns'}", "refuses file stores"),
        ("", "tracking: {uri: 'sqlite:///relative.db'}", "absolute path"),
    ]
    for imports, tracking, message in cases:
        path = write_yaml(base.format(imports=imports, tracking=tracking))
        code, _, err = cli("run", str(path), "--storage", str(tmp_path / "runs"))
        assert code == 2 and message in err and "Traceback" not in err, (message, err)
        assert not (tmp_path / "runs").exists()
    (tmp_path / "folder.yaml").mkdir()
    code, _, err = cli("validate", str(tmp_path / "folder.yaml"))
    assert code == 2 and "folder" in err


def test_absurd_counts_are_refused_quickly(write_yaml) -> None:
    base = textwrap.dedent("""
    name: absurd
    experiment:
      benchmark: {name: permuted, source: synthetic, num_tasks: 2}
      backbone: {name: mlp}
      algorithm: {name: finetuning}
    """)
    for extra, field in [
        ("seeds: 100000", "seeds"),
        ("searcher: {samples: 10000000}", "searcher.samples"),
        ("retries: 1000", "retries"),
    ]:
        started = time.perf_counter()
        with pytest.raises(SpecError) as info:
            parse_sweep(yaml.safe_load(base + extra))
        assert field in info.value.format() and time.perf_counter() - started < 2.0
    grid = (
        base
        + "search:\n"
        + "".join(
            f"  experiment.train.{k}: {{grid: {list(range(1, 60))}}}\n"
            for k in ("epochs", "batch_size", "eval_batch_size")
        )
        + "searcher: {name: grid}\n"
    )
    started = time.perf_counter()
    with pytest.raises(SpecError, match="the grid has up to"):
        parse_sweep(yaml.safe_load(grid))
    assert time.perf_counter() - started < 2.0
