"""The benchmark scripts run as a user runs them (shrunk): they print their tables. No timing
assertion: speed is measured by running them, not by tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_scheduler_prints_the_compute_and_regret_of_each_scheduler(tmp_path):
    shrink = [
        "experiment.benchmark.num_tasks=3",
        "experiment.train.epochs=1",
        "experiment.backbone.hidden_dims=[16]",
    ]
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench_scheduler.py",
            "--samples",
            "3",
            "--seeds",
            "0",
            "--storage",
            str(tmp_path / "runs"),
            *[a for s in shrink for a in ("--set", s)],
        ],
        cwd=REPO,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("scheduler seed"))
    rows = [line.split() for line in lines[header + 1 : header + 4]]
    assert [r[0] for r in rows] == ["none", "asha", "median"]
    assert rows[0][2:5] == ["1.00x", "1.00x", "same"] and float(rows[0][5]) == 0.0  # the reference itself
    summary = [line for line in lines if " compute " in line and "same top-1 in" in line]
    assert [s.split()[0] for s in summary] == ["none", "asha", "median"]
