"""How the driver sets Ray up around a sweep: the environment Ray must see before it is imported,
and where Ray's own console logging goes while the sweep runs.

Importing this module imports neither Ray nor torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["ray_environment", "ray_logs_to"]


def ray_environment(*, embedded: bool) -> None:
    """Set before Ray is imported. ``embedded``: the sweep starts its own local Ray (no address)."""
    if embedded:
        # Ray >= 2.59 turns token auth on for a local ray.init() and writes ~/.ray/auth_token; the
        # embedded cluster lives and dies with this process, so it runs without. A cluster keeps
        # whatever RAY_AUTH_MODE / RAY_AUTH_TOKEN its operator set (clusters/README.md).
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # SIGINT is clsweep's (clsweep.sweep.signals), which stops Tune through its SIGUSR1 handler
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the new output engine prints boxes even at verbose=0
    # per-task checkpoints with num_to_keep=2 force frequent snapshots; they are small, do not warn
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's default loggers include TensorBoard's, whose import pulls torch into the driver (~3 s);
    # the JSON and CSV loggers (result.json, progress.csv) are added explicitly by the driver.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    cap_malloc_arenas()


M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def cap_malloc_arenas(arenas: int = 2) -> bool:
    """Let the driver's threads share ``arenas`` glibc heaps. By default glibc gives a thread that
    allocates under contention its own arena (up to 8 per core); Ray's, Tune's and the tracking
    sender's threads each keep one, and their fragmentation made the driver's memory grow by 0.13
    MB per trial over a long sweep, against 0.06 with two (benchmarks/bench_scale.py, 600 trials
    each). Applies to arenas created from now on; a
    MALLOC_ARENA_MAX the user set wins. False where it does not apply (not glibc)."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def ray_logs_to(path: Path) -> Iterator[None]:
    """Ray's and Tune's console logging (trial tracebacks, snapshot notes) goes to a file in the
    sweep folder while the progress display owns the terminal."""
    logger = logging.getLogger("ray")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    streams = [
        h
        for h in logger.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    levels = [h.level for h in streams]
    for h in streams:
        h.setLevel(logging.CRITICAL + 1)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        for h, level in zip(streams, levels, strict=True):
            h.setLevel(level)
