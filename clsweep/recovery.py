"""What a sweep leaves on disk to recover from, and the rules for reading it back.

A trial's folder ``<sweep_dir>/<trial id>/`` holds Tune's copy of the trial's config
(:data:`TUNE_PARAMS_FILE`) and one folder per reported task, ``checkpoint_*``
(:data:`CHECKPOINT_PATTERN`). Each checkpoint folder holds:

- :data:`STATE_FILE`: the task loop's full state after that task (clsweep.experiment writes it,
  atomically: see :func:`write_atomically`);
- :data:`RESULT_FILE`: the Tune result reported with that checkpoint (clsweep.sweep.trial).

A checkpoint is complete when both are there and the state file is a whole archive; anything
else (a copy cut short by a killed process) is ignored. A trial created after Tune's last
experiment snapshot is lost when the driver dies: Tune no longer knows its id. When a new trial
with the same config appears, the driver writes :data:`ADOPT_FILE` into the new trial's folder,
naming the lost trial, whose checkpoints then count as the new trial's. MLflow runs of trials Tune
does not know and nobody adopted are orphans (:func:`orphan_runs`).

Only the standard library: the task loop (no Ray, no MLflow), the trial function, the driver's
callbacks and the tracking store all import their file names and rules from here.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ADOPT_FILE",
    "CHECKPOINT_PATTERN",
    "REPLAYED",
    "RESULT_FILE",
    "STATE_FILE",
    "TUNE_PARAMS_FILE",
    "Resume",
    "complete_checkpoints",
    "foreign_checkpoint",
    "orphan_runs",
    "orphan_trial",
    "read_adoption",
    "resume_point",
    "save_result",
    "saved_result",
    "trial_checkpoints",
    "trial_folder_name",
    "unknown_folders",
    "write_adoption",
    "write_atomically",
]

STATE_FILE = "state.pt"
"""In a checkpoint folder: the task loop's state (a torch.save archive)."""
RESULT_FILE = "clsweep_result.json"
"""In a checkpoint folder: the Tune result reported with that checkpoint."""
ADOPT_FILE = "clsweep_adopts.json"
"""In a trial's folder: ``{"trial_id": ...}``, the lost trial whose checkpoints are this trial's."""
TUNE_PARAMS_FILE = "params.json"
"""In a trial's folder: Tune's copy of the trial's config."""
CHECKPOINT_PATTERN = "checkpoint_*"
"""Tune's checkpoint folders in a trial's folder (their names sort in the order they were made)."""
REPLAYED = "replayed"
"""Key of a stored result that a trial sends again (set to True): it was logged, or Tune missed it."""


def trial_folder_name(trial: Any) -> str:
    """A trial's folder is named by its Tune trial id only (short, filesystem- and S3-friendly)."""
    return str(trial.trial_id)


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` fill a temporary file next to ``path``, then move it into place: a reader (or
    a copy of the folder) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_result(checkpoint_dir: Path, result: Mapping[str, Any]) -> None:
    """Store the result a checkpoint is reported with, inside that checkpoint."""
    text = json.dumps(dict(result))
    write_atomically(checkpoint_dir / RESULT_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def saved_result(directory: Path) -> dict[str, Any] | None:
    """The result a checkpoint folder was reported with, or None when the folder is not a complete
    checkpoint (no result file, or a state file cut short by a killed copy)."""
    try:
        result = json.loads((directory / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(result, dict)
        or "tasks_done" not in result
        or not zipfile.is_zipfile(directory / STATE_FILE)
    ):
        return None  # torch.save writes a zip archive: a truncated one has no central directory
    return result


def complete_checkpoints(candidates: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """The complete checkpoints among ``candidates`` with their results, by tasks done; for a count
    reached by several, the first candidate."""
    found: dict[int, tuple[Path, dict[str, Any]]] = {}
    for directory in candidates:
        result = saved_result(directory) if directory.is_dir() else None
        if result is not None:
            found.setdefault(int(result["tasks_done"]), (directory, result))
    return [found[k] for k in sorted(found)]


def read_adoption(trial_dir: Path) -> str | None:
    """The id of the lost trial that the trial in ``trial_dir`` adopts, if any."""
    try:
        found = json.loads((trial_dir / ADOPT_FILE).read_text(encoding="utf-8")).get("trial_id")
    except (OSError, ValueError, AttributeError):
        return None
    return str(found) if found else None


def write_adoption(trial_dir: Path, lost: str) -> None:
    """Record that the trial in ``trial_dir`` adopts the lost trial ``lost``."""
    text = json.dumps({"trial_id": lost})
    write_atomically(trial_dir / ADOPT_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def trial_checkpoints(sweep_dir: Path, trial_id: str) -> list[Path]:
    """The checkpoint folders of a trial: its own, then those of the lost trial it adopts."""
    own = sorted((sweep_dir / trial_id).glob(CHECKPOINT_PATTERN))
    adopted = read_adoption(sweep_dir / trial_id)
    return own + (sorted((sweep_dir / adopted).glob(CHECKPOINT_PATTERN)) if adopted else [])


def foreign_checkpoint(given: Path | None, sweep_dir: Path, trial_id: str) -> bool:
    """Whether the checkpoint a trial is handed lies in another trial's folder than its own or the
    one it adopts: population-based training handed it a donor's checkpoint (with the donor's
    config), which then wins over the trial's own stored checkpoints, newer or not."""
    if given is None:
        return False
    owners = {trial_id, read_adoption(sweep_dir / trial_id)}
    return Path(given).parent.name not in owners


def unknown_folders(sweep_dir: Path, known: Iterable[str]) -> list[str]:
    """The names of the folders in ``sweep_dir`` that are not named in ``known``, sorted."""
    if not sweep_dir.is_dir():
        return []
    skip = set(known)
    return sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name not in skip)


def orphan_trial(
    sweep_dir: Path, config: Mapping[str, Any], known: Iterable[str], *, among: Iterable[str] | None = None
) -> str | None:
    """A trial folder in ``sweep_dir`` whose trial ran with ``config``, that Tune no longer knows and
    that holds at least one complete checkpoint; None if there is none. ``known``: the trial ids
    Tune knows, and those adopted already. ``among``: the folder names to look at (default: every
    folder of ``sweep_dir``; a driver lists those Tune does not know once, see
    :func:`unknown_folders`)."""
    wanted = json.loads(json.dumps(dict(config), sort_keys=True, default=str))
    skip = set(known)
    names = unknown_folders(sweep_dir, skip) if among is None else [n for n in among if n not in skip]
    for folder in (sweep_dir / name for name in names):
        try:
            params = json.loads((folder / TUNE_PARAMS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if params == wanted and complete_checkpoints(folder.glob(CHECKPOINT_PATTERN)):
            return folder.name
    return None


def orphan_runs(runs: Iterable[tuple[str, str | None]], known: Iterable[str]) -> list[str]:
    """The ids of the tracking runs, given as (run id, trial id), whose trial is not in ``known``
    (the trials Tune knows at the end of a sweep; an adopted run carries its adopter's id)."""
    keep = set(known)
    return [run_id for run_id, trial_id in runs if trial_id not in keep]


@dataclass(frozen=True)
class Resume:
    """Where a trial that starts (again) stands."""

    replay: list[dict[str, Any]] = field(default_factory=list)
    """Stored results newer than the checkpoint the trial was handed, to send again (marked
    :data:`REPLAYED`): Tune's snapshot may have missed them."""
    start_from: Path | None = None
    """The newest complete checkpoint, to train on from; None: from the first task."""
    done: bool = False
    """The newest complete checkpoint holds every task of the trial: nothing to train."""


def resume_point(given: Path | None, stored: Iterable[Path], tasks_total: int) -> Resume:
    """The rule a trial starts by: ``given`` is the checkpoint Tune hands back (if any), ``stored``
    the checkpoint folders kept for the trial (see :func:`trial_checkpoints`)."""
    handed = [given] if given is not None else []
    known = max((int(r["tasks_done"]) for _, r in complete_checkpoints(handed)), default=0)
    usable = complete_checkpoints([*handed, *stored])
    replay = [{**result, REPLAYED: True} for _, result in usable if int(result["tasks_done"]) > known]
    if not usable:
        return Resume(replay)
    return Resume(replay, usable[-1][0], int(usable[-1][1]["tasks_done"]) >= tasks_total)
