"""The later stage of a sweep in the report: the search ranking beside the stage's ranking.

A sweep with ``confirm: {top_k, seeds}`` re-ran its best configurations on new seeds; one under
protocol first_task ran its best configuration on the whole stream (clsweep.sweep.stages). Both
are child runs of the sweep's parent tagged ``clsweep.stage``; everything here is read from those
runs, so ``summary.json``'s ``confirmation`` section is MLflow's numbers. The winner is the best
mean over the stage's runs, not over the search's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["STAGES", "confirmation_summary", "ranking_rows"]

STAGES = ("confirm", "final")
"""Stage tags of the runs after the search."""


def _key(config: Mapping[str, Any]) -> str:
    import json

    return json.dumps(dict(config), sort_keys=True, default=str)


def _entry(group: Mapping[str, Any], metric: str) -> dict[str, Any]:
    return {
        "config": group["config"],
        "rank": group.get("rank"),
        "seeds": group["seeds"],
        "run_ids": group["run_ids"],
        "objective": group["objectives"][metric],
        "metrics": group["metrics"],
    }


def confirmation_summary(
    stage: str, search: Sequence[Mapping[str, Any]], confirmed: Sequence[Mapping[str, Any]], metric: str
) -> dict[str, Any]:
    """The ``confirmation`` section: the stage, its configurations and seeds, the search ranking
    (mean and 95% CI over the search seeds) and the stage's ranking (the same over the new seeds),
    each stage entry with its search rank, and the winner with its test metrics. ``search`` and
    ``confirmed``: ranked configuration groups (clsweep.report.analysis), best first."""
    search_rank = {_key(g["config"]): g.get("rank") for g in search}
    ranking = []
    for g in confirmed:
        entry = _entry(g, metric)
        entry["search_rank"] = search_rank.get(_key(g["config"]))
        ranking.append(entry)
    seeds = sorted({int(s) for g in confirmed for s in g["seeds"]})
    winner = None
    if ranking:
        best = ranking[0]
        winner = {
            "config": best["config"],
            "objective": best["objective"],
            "search_rank": best["search_rank"],
            "test_metrics": best["metrics"],
            "seeds": best["seeds"],
            "run_ids": best["run_ids"],
        }
    return {
        "stage": stage,
        "metric": metric,
        "configs": [g["config"] for g in confirmed],
        "seeds": seeds,
        "search_ranking": [_entry(g, metric) for g in search],
        "ranking": ranking,
        "winner": winner,
    }


def _interval(stats: Mapping[str, Any] | None) -> str:
    if not stats or stats.get("mean") is None:
        return "-"
    ci = stats.get("ci95")
    text = f"{stats['mean']:.4f}"
    return f"{text} [{ci[0]:.4f}, {ci[1]:.4f}] (n={stats['n']})" if ci else f"{text} (n={stats['n']})"


def ranking_rows(section: Mapping[str, Any], config_text: Any) -> tuple[list[str], list[list[str]]]:
    """A table: each stage configuration with its search rank and mean [95% CI], and its stage rank
    and mean [95% CI] over the new seeds, then the test metrics' means."""
    metric = section["metric"]
    search = {_key(e["config"]): e for e in section["search_ranking"]}
    extra = sorted({m for e in section["ranking"] for m in e["metrics"]})
    header = [
        "configuration",
        "search rank",
        f"search {metric} [95% CI]",
        f"{section['stage']} rank",
        f"{section['stage']} {metric} [95% CI]",
        *[f"{m} [95% CI]" for m in extra],
    ]
    rows = []
    for e in section["ranking"]:
        before = search.get(_key(e["config"]))
        rows.append(
            [
                config_text(e["config"]),
                str(e["search_rank"] or "-"),
                _interval(before["objective"] if before else None),
                str(e["rank"]),
                _interval(e["objective"]),
                *[_interval(e["metrics"].get(m)) for m in extra],
            ]
        )
    return header, rows
