"""Real sweeps for the report tests, run once per session (in this process, on one local Ray).

- ``main``: the quickstart sweep shrunk (2 tasks, 3 epochs, 3 samples x 2 seeds = 6 trials);
- ``faults``: a grid over the learning rate whose trials end finished, pruned (ASHA after task 1)
  and failed (NaN loss);
- ``single``: one trial, nothing searched; run without --no-report from a scratch working
  directory, so ``clsweep run`` writes its report to ./reports/single itself;
- ``bench``: a benchmark sweep, 2 methods x 2 benchmarks x 2 seeds.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "search_spaces" / "quickstart.yaml"
SHRINK = [
    "experiment.benchmark.num_tasks=2",
    "experiment.train.epochs=3",
    "experiment.backbone.hidden_dims=[32,32]",
    "searcher.samples=3",
    "seeds=2",
    "resources.max_concurrent=2",
]

FAULTS = """
name: faults
experiment:
  benchmark: {name: permuted, source: digits, num_tasks: 3, seed: 0}
  backbone: {name: mlp, hidden_dims: [32]}
  algorithm: {name: finetuning}
  train: {epochs: 2, lr: 0.05}
search:
  experiment.train.lr: {grid: [0.05, 1.0e-5, 1.0e30]}   # learns; hopeless (pruned after task 1); NaN loss
searcher: {name: grid}
scheduler: {name: asha, grace_period: 1, reduction_factor: 2}
resources: {max_concurrent: 1}
retries: 0
"""

SINGLE = """
name: single
experiment:
  seed: 3
  benchmark: {name: permuted, source: digits, num_tasks: 2, seed: 0}
  backbone: {name: mlp, hidden_dims: [32]}
  algorithm: {name: finetuning}
  train: {epochs: 1, lr: 0.05}
"""

BENCH = """
name: bench
experiment:
  seed: 0
  paradigm: til
  benchmark: {name: permuted, source: digits, num_tasks: 2, seed: 0}
  backbone: {name: mlp, hidden_dims: [32]}
  algorithm: {name: finetuning}
  train: {epochs: 2, lr: 0.05}
variants:
  method:
    finetuning: {}
    hat:
      algorithm: {name: hat, s_max: 400, sparsity_strength: 0.75}
      backbone: {name: hat_mask_mlp, hidden_dims: [32]}
  benchmark:
    permuted: {}
    split: {benchmark: {name: split, source: digits, num_tasks: 2, classes_per_task: 5, seed: 0}}
searcher: {name: grid}
seeds: 2
resources: {max_concurrent: 2}
"""


@dataclass(frozen=True)
class Sweep:
    name: str
    storage: Path
    exit_code: int

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.storage / 'mlflow.db'}"


@pytest.fixture(scope="session")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sweep]:
    """Run the four sweeps once. Ray lives only while they run (started here unless a session Ray
    of another test folder is already up), so it never collides with another folder's fixture."""
    os.environ.setdefault(
        "RAY_AUTH_MODE", "disabled"
    )  # no ~/.ray/auth_token; the cluster dies with the fixture
    import ray

    from clsweep.cli import main

    root = tmp_path_factory.mktemp("report-sweeps")
    files = {}
    for name, text in (("faults", FAULTS), ("single", SINGLE), ("bench", BENCH)):
        files[name] = root / f"{name}.yaml"
        files[name].write_text(textwrap.dedent(text).lstrip())
    started = not ray.is_initialized()
    if started:
        # "local": a fresh instance, never a `ray start` cluster of another test on this machine
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=200_000_000,
            logging_level="ERROR",
        )
    out: dict[str, Sweep] = {}
    try:
        storage = root / "main"
        sets = [a for s in SHRINK for a in ("--set", s)]
        out["main"] = Sweep(
            "quickstart",
            storage,
            main(["run", str(QUICKSTART), "--storage", str(storage), "--no-report", *sets]),
        )
        for name in ("faults", "bench"):
            storage = root / name
            out[name] = Sweep(
                name, storage, main(["run", str(files[name]), "--storage", str(storage), "--no-report"])
            )
        storage = root / "single"
        workdir = root / "single-cwd"
        workdir.mkdir()
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(workdir)  # `clsweep run` writes its report to ./reports/NAME
            out["single"] = Sweep(
                "single", storage, main(["run", str(files["single"]), "--storage", str(storage)])
            )
    finally:
        if started:
            ray.shutdown()
    return out


@pytest.fixture(scope="session")
def main_report(sweeps: dict[str, Sweep], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the main sweep (folder)."""
    from clsweep.report import report_sweep

    sweep = sweeps["main"]
    out = tmp_path_factory.mktemp("report-main")
    index = report_sweep(sweep.name, storage=sweep.storage, out=out)
    assert index == out / "index.html"
    return out
