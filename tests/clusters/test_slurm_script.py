"""clusters/slurm/clsweep.sbatch run for real on this machine, with `srun` and `scontrol` replaced
by shims that run the command here: a one-node "allocation" whose Ray node carries SLURM_*
variables, the sweep on it, the sqlite store copied to the storage folder, Ray stopped."""

from __future__ import annotations

import getpass
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "clusters" / "slurm" / "clsweep.sbatch"
VENV = Path(sys.prefix)

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SHIMS = {
    "scontrol": "#!/bin/bash\n# test shim: every allocated node is this machine\necho localhost\n",
    "srun": textwrap.dedent("""\
        #!/bin/bash
        # test shim: drop srun's options, run the command on this machine
        while [[ $# -gt 0 && $1 == -* ]]; do
            if [[ $1 == -w || $1 == --nodelist ]]; then shift 2; else shift; fi
        done
        exec "$@"
    """),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pids_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(
    not (VENV / "bin" / "activate").exists(), reason="the script sources a virtual environment"
)
def test_sbatch_script_runs_a_sweep_and_stops_ray(tmp_path: Path, make_sweep: Callable[..., Path]) -> None:
    shims = tmp_path / "shims"
    shims.mkdir()
    for name, text in SHIMS.items():
        (shims / name).write_text(text)
        (shims / name).chmod(0o755)
    space = make_sweep("slurmsweep")
    storage = tmp_path / "storage"
    job_id = str(random.randrange(10**6, 10**7))
    user = getpass.getuser()
    ray_tmp = f"/tmp/ray-{user}-{job_id}"
    # Ports of their own: other Ray instances may run on this machine (the defaults are fixed numbers).
    ports = " ".join(
        f"--{name}={free_port()}"
        for name in (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
            "metrics-export-port",
            "ray-client-server-port",
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_", "MLFLOW_TRACKING"))}
    env.update(
        {
            "PATH": f"{shims}:{VENV / 'bin'}:{env.get('PATH', '')}",
            "USER": user,
            "SLURM_JOB_NODELIST": "localhost",
            "SLURM_JOB_ID": job_id,
            "SLURM_CPUS_PER_TASK": "2",
            "SLURM_NTASKS": "4",
            "SLURM_PROCID": "0",
            "SLURM_JOB_NAME": "clsweep",  # as srun exports them
            "CLSWEEP_STORAGE": str(storage),
            "CLSWEEP_VENV": str(VENV),
            "RAY_PORT": str(free_port()),
            "RAY_START_ARGS": f"{ports} --object-store-memory=80000000",
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        }
    )
    try:
        done = subprocess.run(
            ["bash", str(SCRIPT), str(space), "--set", "searcher.samples=2"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert pids_mentioning(ray_tmp) == []  # the script stopped its Ray
        assert not Path(ray_tmp).exists()
        local_key = hashlib.md5(str(storage).encode()).hexdigest()[:12]
        assert not Path(f"/tmp/{user}-clsweep/{local_key}").exists()  # the head-local sqlite went to storage
    finally:
        for pid in pids_mentioning(ray_tmp):
            os.kill(pid, signal.SIGKILL)

    from mlflow import MlflowClient

    db = storage / "mlflow-slurmsweep.db"  # copied from the head's local disk at the end of the job
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("slurmsweep")
    trials = [
        r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("clsweep.role") == "trial"
    ]
    assert sorted(r.info.status for r in trials) == [
        "FINISHED",
        "FINISHED",
    ]  # despite SLURM_NTASKS=4 on the node
    record = (storage / "slurmsweep" / "clsweep_sweep.json").read_text()
    assert '"complete": true' in record
