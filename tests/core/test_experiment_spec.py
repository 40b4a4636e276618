"""Bad experiment configs: one clear message naming the field and line, exit status 2, nothing run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clsweep.spec import SpecError, load_experiment

GOOD = """\
seed: 0
benchmark: {name: permuted, source: synthetic, num_tasks: 2}
backbone: {name: mlp, hidden_dims: [16]}
algorithm: {name: finetuning}
train: {epochs: 1, batch_size: 32, lr: 0.1}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _problems(tmp_path: Path, text: str, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_experiment(_write(tmp_path, text), overrides or [])
    return info.value.format().splitlines()


def test_good_config_resolves_defaults(tmp_path: Path) -> None:
    cfg = load_experiment(_write(tmp_path, GOOD))
    data = cfg.to_dict()
    assert data["heads"] == {"name": "til"}  # paradigm's default heads
    assert data["benchmark"]["validation_fraction"] == 0.1
    assert data["train"]["optimizer"] == "sgd"


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ("seed: 0", "seed: 0\nsed: 1", "sed: unknown key"),
        ("epochs: 1", "epochs: one", "train.epochs: Input should be a valid integer"),
        ("{name: finetuning}", "{name: hat, s_max: 0}", "algorithm.s_max: Input should be greater than 0"),
        ("{name: finetuning}", "{name: sgdx}", "algorithm.name: unknown algorithm 'sgdx'"),
        ("{name: mlp, hidden_dims: [16]}", "{name: vit}", "backbone.name: unknown backbone 'vit'"),
        ("{name: permuted,", "{name: shuffled,", "benchmark.name: unknown benchmark 'shuffled'"),
        ("{name: finetuning}", "{name: hat, init_mode: N02}", "algorithm.init_mode"),
        ("{name: finetuning}", "{name: hat, aggregation: mean}", "algorithm.aggregation"),
        ("{name: finetuning}", "{name: hat}", "algorithm 'hat' needs a HAT-mask backbone"),
        ("{name: finetuning}", "{name: finetuning, s_max: 400}", "algorithm.s_max: unknown key"),
        ("seed: 0", "seed: 0\nparadigm: cil\nheads: {name: cil}\n", None),  # valid: finetuning supports CIL
        (
            "{name: mlp, hidden_dims: [16]}",
            "{name: hat_mask_mlp, gate: tanh}",
            "backbone.gate: gate 'tanh' is not supported",
        ),
        ("{name: mlp, hidden_dims: [16]}", "{name: mlp, hidden_dims: [0]}", "backbone.hidden_dims"),
        ("seed: 0", "seed: 0\ndevice: gpu", "device: expected cpu, cuda or cuda:N"),
    ],
)
def test_bad_field_is_named(tmp_path: Path, replace: str, by: str, expected: str | None) -> None:
    text = GOOD.replace(replace, by)
    if expected is None:
        load_experiment(_write(tmp_path, text))
        return
    problems = _problems(tmp_path, text)
    assert any(expected in p for p in problems), problems


def test_paradigm_the_algorithm_does_not_support(tmp_path: Path) -> None:
    text = GOOD.replace("{name: mlp, hidden_dims: [16]}", "{name: hat_mask_mlp, hidden_dims: [16]}")
    text = text.replace("{name: finetuning}", "{name: hat}") + "paradigm: cil\n"
    problems = _problems(tmp_path, text)
    assert any(
        "paradigm" in p and "algorithm 'hat' does not support paradigm 'cil'" in p for p in problems
    ), problems


def test_hat_with_weight_decay_is_rejected(tmp_path: Path) -> None:
    text = GOOD.replace("{name: mlp, hidden_dims: [16]}", "{name: hat_mask_mlp, hidden_dims: [16]}")
    text = text.replace("{name: finetuning}", "{name: hat}").replace(
        "lr: 0.1}", "lr: 0.1, weight_decay: 0.01}"
    )
    assert any("train.weight_decay" in p for p in _problems(tmp_path, text))


def test_errors_carry_line_numbers_and_all_problems_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("{name: finetuning}", "{name: hat, s_max: -1}").replace("epochs: 1", "epochs: 0")
    problems = _problems(tmp_path, text)
    assert any(p.startswith(f"{tmp_path / 'config.yaml'}:4: algorithm.s_max") for p in problems), problems
    assert any(":5: train.epochs" in p for p in problems), problems


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    problems = _problems(tmp_path, GOOD + "train: [unclosed\n")
    assert any("YAML syntax error" in p and "started on line 6" in p for p in problems), problems


def test_duplicate_key(tmp_path: Path) -> None:
    problems = _problems(tmp_path, GOOD + "seed: 1\n")
    assert any("seed: duplicate key (first given on line 1)" in p for p in problems), problems


def test_overrides_apply_and_are_validated(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    cfg = load_experiment(path, ["train.epochs=3", "experiment.backbone.hidden_dims=[8, 4]"])
    assert cfg.train.epochs == 3 and cfg.backbone.params.hidden_dims == [8, 4]  # type: ignore[attr-defined]
    for bad, expected in [
        ("train.epochs", "not of the form"),
        ("=3", "not of the form"),
        ("train..epochs=1", "empty component"),
        ("train.epochs=-1", "train.epochs"),
        ("seed.x=1", "cannot set a key inside a int"),
    ]:
        with pytest.raises(SpecError, match=expected):
            load_experiment(path, [bad])


def test_cli_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("{name: finetuning}", "{name: hat}"))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "clsweep", "experiment", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "backbone.name" in proc.stderr and proc.stderr.count("\n") <= 3
    assert not out.exists()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="file not found"):
        load_experiment(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.lr=.inf", "train.lr"),
        ("train.lr=.nan", "train.lr"),
        ("backbone.dropout=-.inf", "backbone.dropout"),
        ("benchmark.validation_fraction=.nan", "benchmark.validation_fraction"),
    ],
)
def test_non_finite_numbers_are_refused(tmp_path: Path, override: str, field: str) -> None:
    lines = _problems(tmp_path, GOOD, [override])
    assert len(lines) == 1 and f": {field}: " in lines[0] and "finite" in lines[0]


def test_hat_knobs_refuse_infinity(tmp_path: Path) -> None:
    text = GOOD.replace("{name: mlp, hidden_dims: [16]}", "{name: hat_mask_mlp, hidden_dims: [16]}")
    text = text.replace("{name: finetuning}", "{name: hat, sparsity_strength: .inf}")
    (line,) = _problems(tmp_path, text)
    assert "algorithm.sparsity_strength" in line and "finite" in line and ":4:" in line


def test_plateau_schedule_is_validated(tmp_path: Path) -> None:
    plateau = GOOD.replace("train: {epochs: 1,", "train: {schedule: {name: plateau, patience: 2, factor: 2},")
    cfg = load_experiment(_write(tmp_path, plateau))
    assert cfg.train.schedule.name == "plateau" and cfg.train.max_epochs == 200  # joansj/hat nepochs
    assert "epochs" not in cfg.to_dict()["train"]  # the resolved config runs again as it is
    assert load_experiment(_write(tmp_path, yaml_dump(cfg.to_dict()))).to_dict() == cfg.to_dict()
    (line,) = _problems(tmp_path, plateau, ["train.epochs=3"])
    assert "train: epochs applies to schedule fixed" in line
    (line,) = _problems(tmp_path, plateau, ["train.schedule.factor=1"])
    assert "train.schedule.factor: " in line and "greater than 1" in line
    (line,) = _problems(tmp_path, plateau, ["train.schedule.name=cosine"])
    assert "train.schedule" in line and "'fixed', 'plateau'" in line


def yaml_dump(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data)


def test_packnet_with_weight_decay_is_rejected(tmp_path: Path) -> None:
    text = GOOD.replace("{name: finetuning}", "{name: packnet}").replace(
        "lr: 0.1}", "lr: 0.1, weight_decay: 0.01}"
    )
    (line,) = _problems(tmp_path, text)
    assert "train.weight_decay: must be 0 for packnet" in line


def test_independent_with_one_layer_heads_and_weight_decay_is_rejected(tmp_path: Path) -> None:
    text = GOOD.replace("{name: finetuning}", "{name: independent}\nheads: {name: masked_multihead}")
    load_experiment(_write(tmp_path, text))  # without decay: accepted
    (line,) = _problems(tmp_path, text.replace("lr: 0.1}", "lr: 0.1, weight_decay: 0.01}"))
    assert "train.weight_decay: must be 0 for independent with heads 'masked_multihead'" in line
    # its per-task heads keep the old tasks' rows out of the optimiser: decay is fine there
    load_experiment(
        _write(
            tmp_path,
            text.replace("masked_multihead", "til").replace("lr: 0.1}", "lr: 0.1, weight_decay: 0.01}"),
        )
    )
