"""The benchmark scripts run as a user runs them (shrunk): they print their tables. No timing
assertion: speed is measured by running them, not by tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def bench(script: str, *args: str, timeout: float = 600) -> list[str]:
    """Run ``benchmarks/SCRIPT ARGS`` as a user runs it; its printed lines (exit status 0)."""
    done = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=REPO,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_bench_scheduler_prints_the_compute_and_regret_of_each_scheduler(tmp_path):
    shrink = [
        "experiment.benchmark.num_tasks=2",
        "experiment.train.epochs=1",
        "experiment.backbone.hidden_dims=[16]",
    ]
    lines = bench(
        "bench_scheduler.py",
        *("--samples", "2", "--seeds", "0", "--storage", str(tmp_path / "runs")),
        *[a for s in shrink for a in ("--set", s)],
    )
    header = next(i for i, line in enumerate(lines) if line.startswith("scheduler seed"))
    rows = [line.split() for line in lines[header + 1 : header + 4]]
    assert [r[0] for r in rows] == ["none", "asha", "median"]
    assert rows[0][2:5] == ["1.00x", "1.00x", "same"] and float(rows[0][5]) == 0.0  # the reference itself
    summary = [line for line in lines if " compute " in line and "same top-1 in" in line]
    assert [s.split()[0] for s in summary] == ["none", "asha", "median"]


def test_bench_scale_prints_the_per_window_curve_memory_and_profile(tmp_path):
    printed = bench(
        "bench_scale.py", "--trials", "30", "--every", "10", "--storage", str(tmp_path / "runs"), timeout=900
    )
    lines = [line.split() for line in printed]
    curve = [line for line in lines if line[:1] == ["trials"] and line[-1].endswith("x")]
    assert [c[1] for c in curve] == ["1-", "11-", "21-"]
    assert [(c[5], c[-1]) for c in curve][1] == ("1.00x", "1.00x")  # the reference: trials 11-20
    assert all(float(c[3]) > 0 and float(c[-3]) > 0 for c in curve)  # wall and CPU seconds per window
    assert any(line[:2] == ["growth", "after"] and "MB/trial" in line for line in lines)
    buckets = {" ".join(line[:3]) for line in lines}
    assert {"Tune experiment snapshot", "progress display, status", "waiting for trial"} <= buckets
    assert (tmp_path / "runs" / "bench_scale" / "clsweep_status.json").exists()


def test_bench_loop_prints_each_ratio_against_finetuning():
    printed = bench(
        "bench_loop.py", "--epochs", "1", "--repeats", "1", "--algorithms", "finetuning", "--baselines", "er",
        "--hidden", "32,32",
    )  # fmt: skip
    lines = [line for line in printed if " ratio " in line]
    rows = {re.split(r"\s{2,}", line)[0]: line.split() for line in lines}
    # against the plain PyTorch loop, then through clsweep's loop against Finetuning
    assert list(rows) == ["finetuning", "er", "finetuning 2x rows", "plateau schedule"]
    for words in rows.values():
        assert float(words[words.index("ratio") + 1]) > 0
    assert all("MLP 64-32-32" in line for line in lines[1:])  # --hidden reaches the same-loop rows


def test_bench_loop_refuses_bad_hidden_widths():
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_loop.py", "--hidden", "16,0"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines()[-1] == (
        "bench_loop.py: error: --hidden: comma-separated positive integers, got '16,0'"
    )


def test_bench_er_step_prints_er_beside_each_ablation_of_its_step():
    printed = bench("bench_er_step.py", "--epochs", "1", "--repeats", "1", "--hidden", "16,16")
    rows = {re.split(r"\s{2,}", line)[0]: line.split() for line in printed if " ratio " in line}
    assert list(rows) == [
        "er",
        "er, heads' own parameters",
        "er, replay batch drawn once per task",
        "er, one head",
        "finetuning 2x rows",
    ]
    for words in rows.values():
        assert float(words[words.index("ratio") + 1]) > 0 and "64-16-16;" in words
