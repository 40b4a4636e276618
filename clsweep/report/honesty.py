"""How far a sweep's claims can be trusted: rung fidelity and the leak gap.

- **Rung fidelity** (schedulers that prune after a task: ASHA, median stopping): for every task k
  before the last, Spearman's rank correlation between the objective after task k and the final
  objective, over the trials that finished. Pruning at k assumes the ranking after k predicts the
  final one; below :data:`WEAK` it does not, and the report says so.
- **Leak gap**: every trial logs validation and test metrics, so the report can show, at no extra
  compute, the test score of the configuration a test-tuned search would have picked beside the
  one the sweep's objective picked, and the gap between the two. Only the honest number (chosen
  without test data) is publishable; the gap is what tuning on test would have claimed on top.
  In benchmark mode the same is done per method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from clsweep.report.grouping import final
from clsweep.report.importance import rung_importance
from clsweep.report.setup import Setup

__all__ = ["WEAK", "honesty_of", "leak_gap", "rung_fidelity", "spearman", "test_counterpart"]

WEAK = 0.5
"""Below this rank correlation, pruning at that rung is called unreliable."""


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (Pearson correlation of the ranks); None when undefined (n < 3, or a constant)."""
    if len(x) != len(y) or len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def scheduler_rungs(scheduler: dict[str, Any], max_tasks: int) -> list[int]:
    """The tasks after which the scheduler may stop a trial."""
    grace = int(scheduler.get("grace_period") or 1)
    if scheduler.get("name") == "asha":
        rungs, k, factor = [], grace, float(scheduler.get("reduction_factor") or 2.0)
        while k < max_tasks:
            rungs.append(k)
            k = int(math.ceil(k * factor))
        return rungs
    return list(range(grace, max_tasks))


def rung_fidelity(
    curves: dict[str, dict[int, float]], finished: Sequence[str], scheduler: dict[str, Any], max_tasks: int
) -> dict[str, Any]:
    """``curves[run_id][k]``: the objective after task k. ``finished``: runs that completed every task."""
    if scheduler.get("name") not in ("asha", "median"):
        return {"available": False, "reason": "no scheduler pruned trials in this sweep", "rungs": []}
    rungs = set(scheduler_rungs(scheduler, max_tasks))
    out: list[dict[str, Any]] = []
    for k in range(1, max_tasks):
        pairs = [
            (curves[r][k], curves[r][max_tasks])
            for r in finished
            if k in curves.get(r, {}) and max_tasks in curves.get(r, {})
        ]
        rho = spearman([a for a, _ in pairs], [b for _, b in pairs])
        out.append(
            {
                "after_task": int(k),
                "trials": len(pairs),
                "spearman": rho,
                "scheduler_rung": k in rungs,
                "weak": rho is not None and rho < WEAK,
            }
        )
    warnings = [
        f"after task {r['after_task']} the ranking predicts the final one poorly (Spearman "
        f"{r['spearman']:.2f} over {r['trials']} finished trials): pruning there is unreliable for this "
        f"sweep; a grace period of at least {r['after_task'] + 1} tasks would avoid it"
        for r in out
        if r["scheduler_rung"] and r["weak"]
    ]
    return {"available": True, "reason": None, "rungs": out, "warnings": warnings, "threshold": WEAK}


def test_counterpart(metric: str) -> tuple[str, str]:
    """The test metric that matches a validation objective (``avg_acc_val`` -> ``avg_acc_test``)."""
    if metric.endswith("_val"):
        base = metric[: -len("_val")]
        return base + "_test", "min" if base == "forgetting" else "max"
    return "avg_acc_test", "max"


def _pick(groups: list[dict[str, Any]], key: Any, mode: str) -> dict[str, Any] | None:
    usable = [g for g in groups if key(g) is not None]
    if not usable:
        return None
    return (max if mode == "max" else min)(usable, key=key)


def _gap(groups: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    test_metric, test_mode = test_counterpart(metric)

    def objective(g: dict[str, Any]) -> float | None:
        return g["means"].get(metric)

    def test(g: dict[str, Any]) -> float | None:
        return g["means"].get(test_metric)

    honest, leaky = _pick(groups, objective, mode), _pick(groups, test, test_mode)
    if honest is None or leaky is None or test(honest) is None:
        return None
    gap = test(leaky) - test(honest)  # type: ignore[operator]
    return {
        "test_metric": test_metric,
        "honest": {"config": honest["config"], "test": test(honest), "objective": objective(honest)},
        "test_tuned": {"config": leaky["config"], "test": test(leaky), "objective": objective(leaky)},
        "gap": gap if test_mode == "max" else -gap,
    }


def leak_gap(groups: list[dict[str, Any]], metric: str, mode: str, *, leaky_protocol: bool) -> dict[str, Any]:
    """``groups``: configurations with ``config``, ``method`` and ``means`` {metric: mean over seeds}."""
    overall = _gap(groups, metric, mode)
    methods = sorted({g["method"] for g in groups})
    per_method = (
        {m: _gap([g for g in groups if g["method"] == m], metric, mode) for m in methods}
        if len(methods) > 1
        else {}
    )
    note = (
        "The search itself chose on the test split (protocol test): neither number is publishable."
        if leaky_protocol
        else f"Publishable: the test score of the configuration chosen on {metric} (validation only). The "
        "test-tuned number is what picking on the test split would have claimed; the gap is that optimism."
    )
    return {
        "available": overall is not None,
        "objective": metric,
        "overall": overall,
        "per_method": per_method,
        "note": note,
    }


def honesty_of(
    trials: pd.DataFrame,
    finished: pd.DataFrame,
    ranked: list[dict[str, Any]],
    curves: dict[str, list[tuple[int, float]]],
    setup: Setup,
) -> dict[str, Any]:
    """Importance per rung, rung fidelity and the leak gap (clsweep.report.honesty)."""
    metric, mode = setup.objectives[0]
    by_step = {run: dict(points) for run, points in curves.items()}
    max_tasks = setup.plan.max_tasks
    keys = dict(zip(trials.run_id, trials.config_key, strict=True))
    configs = dict(zip(trials.config_key, trials.config, strict=True))
    rungs: dict[int, tuple[list[dict[str, Any]], list[float]]] = {}
    for k in range(1, max_tasks + 1):
        values: dict[str, list[float]] = {}
        for run, steps in by_step.items():
            if k in steps:
                values.setdefault(keys[run], []).append(steps[k])
        if values:
            rungs[k] = ([configs[c] for c in values], [sum(v) / len(v) for v in values.values()])
    done = [
        r
        for r, total, d in zip(finished.run_id, finished.tasks_total, finished.tasks_done, strict=True)
        if total is None or d >= total
    ]
    test_metric, _ = test_counterpart(metric)
    groups = [
        {
            "config": g["config"],
            "method": g["config"].get("variants.method", g["algorithm"]),
            "means": {
                m: (g["objectives"].get(m) or g["metrics"].get(m) or {}).get("mean")
                for m in (metric, test_metric)
            },
        }
        for g in ranked
    ]
    for g, r in zip(groups, ranked, strict=True):
        if g["means"][test_metric] is None:  # the test counterpart is not an extra metric: average it here
            rows = finished[finished.run_id.isin(r["run_ids"])]
            found = [v for v in (final(row, test_metric) for _, row in rows.iterrows()) if v is not None]
            g["means"][test_metric] = sum(found) / len(found) if found else None
    return {
        "rung_importance": rung_importance(rungs, mode, setup.params) if len(rungs) > 1 else [],
        "rung_fidelity": rung_fidelity(by_step, done, setup.scheduler, max_tasks),
        "leak_gap": leak_gap(groups, metric, mode, leaky_protocol=setup.leaky),
    }
