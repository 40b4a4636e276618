"""Does the driver's cost per trial stay flat as a sweep grows? Many tiny trials, one sweep.

A sweep file of ``--trials`` tiny trials (default 2000: synthetic 8x8 data, 2 tasks, 1 epoch, an
MLP of 16 units, finetuning, random search over the learning rate, 2 trials at a time, 1 CPU each)
is written to a temporary folder and run in this process as ``clsweep run --no-report`` runs it
(load_sweep, then the driver's prepare and execute: a local Ray with 2 CPUs, the fork server,
MLflow on sqlite, the status file, Tune's experiment snapshots and loggers), with one more Tune
callback that timestamps every trial's end and reads the driver's resident memory.

Printed (one run: every ratio is measured within it; the cores are shared, so expect noise):
- the per-100 curve: the seconds from the end of trial k-1 to the end of trial k+99, and the
  driver process's CPU seconds over the same trials, each with its ratio to trials 101-200
  (trials 1-100 hold the warm-up: Ray's start, the trial actors' start). Target (issue 14): the
  last 100 cost at most 1.2x. CPU time is the less noisy of the two where other processes load
  the machine; wall time is what a user waits;
- the driver's resident memory at every 100th trial and its growth per trial after the first 100
  (least squares; target at most 0.05 MB per trial);
- where the driver's main thread spends its wall time: its stack sampled every ``--sample-ms``
  and put in buckets (Tune's experiment snapshots, the searcher, MLflow writes and look-ups, the
  progress display and status file, ...), over the whole run, over trials 101-200 and over the
  last 100, then the functions whose time per 100 trials grew most.

    .venv/bin/python benchmarks/bench_scale.py [--trials 2000] [--every 100] [--sample-ms 10]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO

SWEEP = """\
name: bench_scale
experiment:
  seed: 0
  benchmark: {{name: permuted, source: synthetic, num_tasks: 2, seed: 0}}
  backbone: {{name: mlp, hidden_dims: [16]}}
  algorithm: {{name: finetuning}}
  train: {{epochs: 1, batch_size: 64, lr: 0.05}}
search:
  experiment.train.lr: {{log_uniform: [0.001, 0.3]}}
searcher: {{name: random, samples: {trials}, seed: 0}}
resources: {{cpus: 1, max_concurrent: {concurrent}}}
"""

# (bucket, path fragments): a sample goes to the first bucket any frame of its stack matches.
# Snapshots come first: they pickle the searcher and the callbacks, which are theirs then;
# guarded callbacks (progress, adoption) run inside tracking_callback.py's wrapper.
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("Tune experiment snapshot", ("ray/tune/execution/experiment_state.py", "tune_controller.py:checkpoint")),
    ("progress display, status file", ("clsweep/sweep/progress.py", "clsweep/sweep/summary.py")),
    ("adoption of lost trials", ("clsweep/sweep/adoption.py",)),
    ("MLflow look-ups (find_trial, logged_steps)", ("store.py:find_trial", "store.py:logged_steps")),
    (
        "MLflow writes",
        ("/mlflow/", "clsweep/tracking/", "tracking_callback.py:on_", "tracking_callback.py:_finish"),
    ),
    ("searcher", ("ray/tune/search/", "/optuna/", "clsweep/sweep/searcher.py")),
    ("Tune loggers (result.json, progress.csv)", ("ray/tune/logger/",)),
    ("stop callback", ("clsweep/sweep/stopping.py",)),
    ("this benchmark's callback", ("bench_scale.py:_ended",)),
    ("other Tune and Ray", ("/ray/",)),
]
WAITING = "waiting for trial events (ray.wait)"  # the innermost frame: Tune's event loop is idle
OTHER = "other"
_SITES = ("clsweep/", "ray/tune/", "ray/train/", "ray/air/", "/mlflow/", "/optuna/", "worker.py:wait")


def rss_mb() -> float:
    """The resident memory of this process (the driver), from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Profile:
    """Samples the main thread's stack every ``interval`` s and adds the wall time since the last
    sample to its bucket and to its site (the innermost frame in clsweep, Tune or MLflow), per
    window of ``every`` trial ends. Counters only, so that the memory it keeps stays flat."""

    def __init__(self, interval: float, every: int) -> None:
        self.interval, self.every = interval, every
        self.ended = 0  # trial ends so far (set by the callback)
        self.buckets: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.sites: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self._stop = threading.Event()
        self._main = threading.main_thread().ident
        self._thread = threading.Thread(target=self._run, name="bench-scale-profile", daemon=True)

    def __enter__(self) -> Profile:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(self.interval):
            frame = sys._current_frames().get(self._main or 0)
            now = time.perf_counter()
            if frame is None:
                continue
            stack = []
            while frame is not None:
                code = frame.f_code
                stack.append(f"{code.co_filename}:{code.co_name}")
                frame = frame.f_back
            window = self.ended // self.every
            self.buckets[window][classify(stack)] += now - last
            site = next((s for s in stack if any(p in s for p in _SITES)), stack[0])
            self.sites[window][_short(site)] += now - last
            last = now


def classify(stack: list[str]) -> str:
    if stack[0].endswith("ray/_private/worker.py:wait"):
        return WAITING
    for bucket, fragments in BUCKETS:
        if any(fragment in entry for entry in stack for fragment in fragments):
            return bucket
    return OTHER


def _short(site: str) -> str:
    path, _, function = site.rpartition(":")
    parts = Path(path).parts
    return "/".join(parts[-3:]) + ":" + function


def make_callback(profile: Profile, every: int, out: TextIO) -> Any:
    from ray.tune import Callback

    class Ends(Callback):
        """Timestamps each trial end; reads the driver's memory at every ``every``-th. Its live
        state is held by the instance, not by a closure: Tune pickles its callbacks (tuner.pkl)."""

        def __init__(self, profile: Profile, every: int, out: TextIO) -> None:
            self.profile, self.every, self.out = profile, every, out
            self.start = (time.perf_counter(), time.process_time())
            self.marks: list[tuple[float, float]] = []  # (wall, driver CPU) at trial end every, 2 every, ..
            self.rss: list[tuple[int, float]] = [(0, rss_mb())]

        def __getstate__(self) -> dict[str, Any]:
            return {}  # the copy in tuner.pkl is never used: this one lives in this process only

        def setup(self, **info: Any) -> None:  # type: ignore[override]
            self.start = (time.perf_counter(), time.process_time())  # the curve begins at Tune's start

        def _ended(self) -> None:
            self.profile.ended += 1
            n, every = self.profile.ended, self.every
            if n % every == 0:
                self.marks.append((time.perf_counter(), time.process_time()))
                self.rss.append((n, rss_mb()))
                took = self.marks[-1][0] - (self.marks[-2] if len(self.marks) > 1 else self.start)[0]
                print(
                    f"  ... trials {n - every + 1}-{n}: {took:6.1f} s, rss {self.rss[-1][1]:.0f} MB",
                    file=self.out,
                )
                self.out.flush()

        def on_trial_complete(self, iteration, trials, trial, **info):  # type: ignore[no-untyped-def]
            self._ended()

        def on_trial_error(self, iteration, trials, trial, **info):  # type: ignore[no-untyped-def]
            self._ended()

    return Ends(profile, every, out)


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of y over x."""
    if len(points) < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else float("nan")


def report(ends: Any, profile: Profile, every: int, wall: float, out: TextIO) -> None:
    marks = [ends.start, *ends.marks]
    spans = [b[0] - a[0] for a, b in zip(marks, marks[1:], strict=False)]
    cpus = [b[1] - a[1] for a, b in zip(marks, marks[1:], strict=False)]
    at = 1 if len(spans) > 1 else 0
    ref, cpu_ref = (spans[at], cpus[at]) if spans else (float("nan"), float("nan"))
    print(
        f"\nper-{every} curve: wall seconds between trial ends and the driver process's CPU seconds, "
        f"each with its ratio to trials {every + 1}-{2 * every} (CPU time is less disturbed by other "
        "load on the machine):",
        file=out,
    )
    for i, (span, cpu) in enumerate(zip(spans, cpus, strict=True)):
        print(
            f"  trials {i * every + 1:5d}-{(i + 1) * every:5d}: {span:7.1f} s {span / ref:5.2f}x   "
            f"driver cpu {cpu:6.1f} s {cpu / cpu_ref:5.2f}x",
            file=out,
        )
    if len(spans) > 2:
        print(
            f"last {every} / trials {every + 1}-{2 * every}: wall {spans[-1] / ref:.2f}x, driver cpu "
            f"{cpus[-1] / cpu_ref:.2f}x (target <= 1.2x)",
            file=out,
        )
    print(f"wall time of the sweep: {wall:.1f} s for {profile.ended} trials", file=out)

    print("\ndriver resident memory (MB):", file=out)
    print("  " + ", ".join(f"{n}: {mb:.0f}" for n, mb in ends.rss), file=out)
    after = [(n, mb) for n, mb in ends.rss if n >= every]
    print(
        f"growth after trial {every}: {slope(after):.4f} MB/trial (least squares; target <= 0.05); "
        f"peak {max(mb for _, mb in ends.rss):.0f} MB",
        file=out,
    )

    windows = sorted(profile.buckets)
    if not windows:
        return
    total: collections.Counter[str] = collections.Counter()
    for w in windows:
        total.update(profile.buckets[w])
    first, last = min(1, len(spans) - 1), max(len(spans) - 1, 0)  # window w: span w of the curve
    names = [b for b, _ in BUCKETS] + [WAITING, OTHER]
    head = (
        f"trials {first * every + 1}-{(first + 1) * every}",
        f"trials {last * every + 1}-{(last + 1) * every}",
    )
    print("\ndriver main thread, sampled (seconds; % of the run):", file=out)
    print(f"  {'bucket':44s} {'whole run':>15s} {head[0]:>16s} {head[1]:>16s}", file=out)
    whole = sum(total.values()) or 1.0
    for name in names:
        a, b = profile.buckets[first][name], profile.buckets[last][name]
        print(
            f"  {name:44s} {total[name]:8.1f} {100 * total[name] / whole:5.1f}% {a:16.2f} {b:16.2f}", file=out
        )
    grown = collections.Counter(profile.sites[last])
    grown.subtract(profile.sites[first])
    print(f"\nfunctions whose time grew most (seconds in {head[0]} -> {head[1]}):", file=out)
    for site, delta in grown.most_common(12):
        if delta <= 0:
            break
        print(f"  {profile.sites[first][site]:7.2f} -> {profile.sites[last][site]:7.2f}  {site}", file=out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100, help="trials per point of the curve (default 100)")
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--sample-ms", type=float, default=10.0, help="profiler period; 0: no profile")
    parser.add_argument("--storage", type=Path, help="sweep storage root (default: a temporary folder)")
    args = parser.parse_args()
    out = sys.stdout
    print(f"load average before: {os.getloadavg()}  (cpus: {os.cpu_count()})", file=out)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from clsweep.spec.sweep import load_sweep
    from clsweep.sweep.driver import execute, prepare

    with tempfile.TemporaryDirectory(prefix="bench_scale-") as tmp:
        root = args.storage or Path(tmp)
        space = Path(tmp) / "space.yaml"
        space.write_text(SWEEP.format(trials=args.trials, concurrent=args.concurrent), encoding="utf-8")
        spec = load_sweep(space, [])
        profile = Profile(args.sample_ms / 1000 if args.sample_ms > 0 else 3600.0, args.every)
        ends = make_callback(profile, args.every, out)
        started = time.monotonic()
        log = Path(tmp) / "clsweep_run.log"  # the per-trial lines `clsweep run` prints off a terminal
        with open(log, "w", encoding="utf-8") as lines, contextlib.redirect_stdout(lines), profile:
            outcome = execute(
                prepare(spec, storage=root, source=str(space)),
                callbacks=[ends],
                display=False,
                num_cpus=2,
                started=started,
            )
        wall = time.monotonic() - started
        print(f"sweep: {outcome.summary.counts} (complete: {outcome.complete})", file=out)
        if args.sample_ms <= 0:
            profile.buckets.clear()
        report(ends, profile, args.every, wall, out)
    print(f"\nload average after: {os.getloadavg()}", file=out)


if __name__ == "__main__":
    main()
