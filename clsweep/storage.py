"""The sweep folder ``<storage>/<name>/``: who owns it, and the record that lets a sweep resume.

Ray Tune keeps its experiment state there; clsweep adds two files:

- ``clsweep_sweep.json``: the validated sweep file (after ``--set``), its fingerprint, the
  tracking URI and the MLflow parent run, written once before any trial starts. A second sweep
  with another fingerprint cannot take the folder over, and ``clsweep resume NAME`` needs no file.
- ``clsweep_status.json``: trials and their state, rewritten by the driver while it runs
  (read by ``clsweep status`` without Ray).
- ``clsweep_driver.lock``: the driver running the sweep now (clsweep.sweep.lock).

Ray-free and MLflow-free.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clsweep.recovery import write_atomically
from clsweep.spec.errors import Problem, SpecError

__all__ = ["LOCK_FILE", "SPEC_FILE", "STATUS_FILE", "SweepPaths", "check_owner", "read_json", "write_json"]

SPEC_FILE = "clsweep_sweep.json"
STATUS_FILE = "clsweep_status.json"
LOCK_FILE = "clsweep_driver.lock"
EARLY_FILES = frozenset({LOCK_FILE, "forkserver.log"})
"""What a driver writes in the folder before the record: a folder holding only these is free."""
FORMAT = 1


@dataclass(frozen=True)
class SweepPaths:
    storage: Path
    """The storage root (absolute): every sweep's folder, and the default MLflow store."""
    name: str

    @property
    def sweep_dir(self) -> Path:
        return self.storage / self.name

    @property
    def record(self) -> Path:
        return self.sweep_dir / SPEC_FILE

    @property
    def status(self) -> Path:
        return self.sweep_dir / STATUS_FILE

    @property
    def default_tracking_uri(self) -> str:
        return f"sqlite:///{self.storage / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.storage / "mlartifacts"

    @classmethod
    def at(cls, storage: str | Path, name: str) -> SweepPaths:
        return cls(Path(storage).expanduser().resolve(), name)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        raise SpecError([Problem((), f"cannot read {path}: {err}")]) from None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file)."""
    text = json.dumps(data, indent=1, sort_keys=True, default=str)
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def check_owner(paths: SweepPaths, fingerprint: str) -> dict[str, Any] | None:
    """The stored record when ``paths.sweep_dir`` belongs to this sweep, None when the folder is
    free (missing or empty). Raises SpecError (bad input) for another sweep's folder. Writes nothing."""
    folder = paths.sweep_dir
    if paths.storage.exists() and not paths.storage.is_dir():
        raise SpecError([Problem(("--storage",), f"{paths.storage} exists and is not a folder")])
    if not folder.exists():
        return None
    if not folder.is_dir():
        raise SpecError([Problem(("name",), f"{folder} exists and is not a folder")])
    record = read_json(paths.record)
    if record is None:
        if any(p.name not in EARLY_FILES for p in folder.iterdir()):
            raise SpecError(
                [
                    Problem(
                        ("name",),
                        f"{folder} is not empty and holds no clsweep sweep; "
                        "choose another --name or --storage",
                    )
                ]
            )
        return None
    if record.get("fingerprint") != fingerprint:
        raise SpecError(
            [
                Problem(
                    ("name",),
                    f"{folder} holds another sweep named {paths.name!r} (a different sweep "
                    f"file or --set: fingerprint {record.get('fingerprint')} != {fingerprint}); "
                    "choose another --name or --storage, or `clsweep resume` it",
                )
            ]
        )
    return record


def new_record(
    spec_data: dict[str, Any], fingerprint: str, *, source: str | None, tracking_uri: str, experiment: str
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "name": spec_data.get("name"),
        "fingerprint": fingerprint,
        "spec": spec_data,
        "source": source,
        "tracking_uri": tracking_uri,
        "experiment": experiment,
        "parent_run_id": None,
        "complete": False,
        "created": time.time(),
    }


def driver_identity() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def driver_alive(info: dict[str, Any] | None) -> bool | None:
    """Whether the driver recorded in a status file still runs (None: another host, cannot tell)."""
    if not info or info.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return None
    return True
