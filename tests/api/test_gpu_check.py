"""benchmarks/gpu_check.sh is never run by CI on a GPU: here it must pass shellcheck and, on a
machine without an NVIDIA GPU, exit 3 at once with a message saying so (nothing run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_gpu_check_passes_shellcheck():
    done = subprocess.run(["shellcheck", "--shell=bash", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_gpu_check_exits_clearly_without_a_gpu(tmp_path):
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 3
    assert "no usable NVIDIA GPU" in done.stderr and "Nothing was run" in done.stderr
    assert list(tmp_path.iterdir()) == []  # no work folder made
