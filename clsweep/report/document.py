"""The report as a renderer-neutral document: sections of paragraphs, fact lists, tables and figures.

:func:`build_document` lays out an :class:`~clsweep.report.analysis.Analysis`; the HTML and
Markdown renderers (:mod:`clsweep.report.render`) only format it, so both pages carry the same
numbers, and those numbers are the ones in ``summary.json``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import yaml

from clsweep.common import format_duration
from clsweep.report.analysis import Analysis, config_text
from clsweep.report.blocks import Block, Code, Document, Facts, Figure, Section, Table, fmt, spread_text
from clsweep.report.confirmation import ranking_rows
from clsweep.report.sections_benchmark import benchmark_section
from clsweep.report.sections_trust import honesty_section, importance_section
from clsweep.report.setup import seed_scope

__all__ = ["build_document"]


def _ci(stats: dict[str, Any] | None) -> str:
    if not stats or not stats.get("ci95"):
        return "-"
    low, high = stats["ci95"]
    return f"[{low:.4f}, {high:.4f}]"


def _scheduler_text(scheduler: dict[str, Any]) -> str:
    """The scheduler's name and the settings that apply to it (time axis: tasks done)."""
    used = {"asha": ("grace_period", "reduction_factor"), "median": ("grace_period", "min_samples_required")}
    name = scheduler.get("name", "?")
    settings = [f"{k}={scheduler[k]}" for k in used.get(name, ()) if scheduler.get(k) is not None]
    return name + (f" ({', '.join(settings)}; time axis: tasks done)" if settings else "")


def _setup(a: Analysis) -> Section:
    s, d, c = a.setup, a.data, a.counts
    exp = s.experiment or {}
    component = {
        k: (v.get("name") if isinstance(v, dict) else v)
        for k, v in exp.items()
        if k in ("benchmark", "backbone", "algorithm", "heads")
    }
    facts = [
        ("sweep", f"{d.name}" + (f": {s.description}" if s.description else "")),
        ("experiment", ", ".join(f"{k} {v}" for k, v in component.items()) or "-"),
        ("protocol", f"{s.protocol}: {s.protocol_note}"),
        ("objective", ", ".join(f"{m} ({mode})" for m, mode in s.objectives)),
        ("searcher", ", ".join(f"{k}={v}" for k, v in s.searcher.items() if v is not None) or "-"),
        ("scheduler", _scheduler_text(s.scheduler)),
        ("budget", f"{s.budget} trials planned" if s.budget is not None else "unknown"),
        ("seeds", ", ".join(map(str, s.seeds)) or "-"),
        ("seed varies", seed_scope(exp)),
        (
            "trials",
            f"{c['runs']} runs: {c['finished']} finished, {c['pruned']} pruned, {c['failed']} failed"
            + (f", {c['other']} not ended" if c["other"] else ""),
        ),
        (
            "compute",
            f"{format_duration(a.compute['trial_compute_s'])} training in trials "
            f"({a.compute['trial_compute_s']:.1f} s); {format_duration(a.compute['trial_wall_s'])} trial wall "
            f"time; sweep wall time {format_duration(a.compute['sweep_wall_s'])}",
        ),
        (
            "tracking",
            f"{d.tracking_uri}, experiment {d.experiment!r}, parent run {d.parent['run_id']} "
            f"({d.parent['status']})",
        ),
    ]
    for who, libs in (
        ("versions (sweep)", a.versions.get("sweep")),
        ("versions (report)", a.versions.get("report")),
    ):
        if libs:
            facts.append((who, ", ".join(f"{k} {v}" for k, v in libs.items())))
    blocks: list[Block] = [Facts(facts)]
    if s.params:
        blocks.append(
            Table(
                ["searched parameter", "distribution", "range / values"],
                [
                    [
                        p.label,
                        p.kind + (" (log)" if p.log and p.kind != "log_uniform" else ""),
                        ", ".join(map(str, p.values))
                        if p.categorical
                        else f"{p.low:g} .. {p.high:g}"
                        if p.low is not None and p.high is not None
                        else "-",
                    ]
                    for p in s.params
                ],
            )
        )
    else:
        blocks.append("No parameter was searched: every trial runs the fixed experiment (seeds repeat it).")
    blocks.append(
        Code(
            yaml.safe_dump(d.plan["sweep"], sort_keys=False), "the sweep file (sweep.yaml of the parent run)"
        )
    )
    return Section("setup", "What was run", blocks)


def _top(a: Analysis) -> Section:
    if not a.top:
        return Section(
            "top", "Best configurations", ["No trial finished, so no configuration can be ranked."]
        )
    objectives = [m for m, _ in a.setup.objectives]
    extra = [m for m in a.top[0]["metrics"]]
    header = (
        ["rank", "configuration", "seeds"]
        + [f"{m} mean ± std" for m in objectives]
        + [f"{m} 95% CI" for m in objectives]
        + [f"{m} (mean)" for m in extra]
    )
    rows = []
    for g in a.top:
        rows.append(
            [
                str(g["rank"]) + (" (Pareto)" if g.get("pareto") else ""),
                config_text(g["config"]),
                ", ".join(map(str, g["seeds"])),
            ]
            + [spread_text(g["objectives"][m]) for m in objectives]
            + [_ci(g["objectives"][m]) for m in objectives]
            + [fmt(g["metrics"][m]["mean"]) for m in extra]
        )
    multi = len(a.setup.seeds) > 1
    note = (
        "Mean and sample standard deviation over seeds; the 95% interval is Student's t interval of the mean."
        if multi
        else "One seed per configuration: no spread over seeds."
    )
    return Section(
        "top",
        "Best configurations",
        [
            f"The {len(a.top)} best configurations by {', '.join(objectives)}, ranked on the mean over their finished "
            f"seeds (pruned trials saw fewer tasks and are not ranked). {note} Test metrics are shown for information; "
            f"they were not used to choose.",
            Table(header, rows, bold={(0, i) for i in range(len(header))}),
        ],
    )


def _params(a: Analysis, figs: dict[str, Figure]) -> Section:
    blocks: list[Block] = (
        [figs["objective_vs_params"]]
        if "objective_vs_params" in figs
        else ["No searched parameter has a finished or pruned trial to plot."]
    )
    return Section("parameters", "Objective against each searched parameter", blocks)


def _history(figs: dict[str, Figure]) -> Section:
    blocks: list[Block] = [figs[k] for k in ("history", "objective_curves") if k in figs]
    return Section("history", "Optimisation history", blocks or ["No trial reported a result."])


def _best(a: Analysis, figs: dict[str, Figure]) -> Section:
    b = a.best
    if not b:
        return Section("best", "Best trial", ["No trial finished."])
    facts = [
        ("trial", f"{b['trial_id']} (MLflow run {b['run_id']})"),
        ("configuration", config_text(b["config"])),
        ("seed", str(b["seed"])),
        ("algorithm / benchmark", f"{b['algorithm']} / {b['benchmark']}"),
    ]
    facts += [(m, fmt(v)) for m, v in b["objectives"].items()]
    blocks: list[Block] = [Facts(facts)]
    blocks += [figs[k] for k in ("accuracy_matrix", "task_curves") if k in figs]
    keys = [
        k
        for k in (
            "avg_acc_test",
            "bwt_test",
            "forgetting_test",
            "avg_acc_val",
            "bwt_val",
            "forgetting_val",
            "epochs_run",
        )
        if k in b["per_task"]
    ]
    steps = sorted({p[0] for k in keys for p in b["per_task"][k]})
    if steps:
        lookup = {k: dict((int(s), v) for s, v in b["per_task"][k]) for k in keys}
        blocks.append(
            Table(
                ["after task"] + keys,
                [[str(s)] + [fmt(lookup[k].get(s)) for k in keys] for s in steps],
                caption="Metrics after each task (MLflow metric histories, step = tasks done; "
                "epochs_run: the epochs task t trained under its schedule).",
            )
        )
    matrix = (b.get("matrices") or {}).get("test")
    if matrix:
        blocks.append(
            Table(
                ["after task \\ on task"] + [str(j + 1) for j in range(len(matrix[0]))],
                [[str(t + 1)] + [fmt(v) for v in row] for t, row in enumerate(matrix)],
                caption="Test accuracy matrix R[t, j] (artifact acc_matrix_test.csv).",
            )
        )
    return Section("best", "Best trial", blocks)


def _capacity(a: Analysis, figs: dict[str, Figure]) -> Section:
    cap = a.capacity
    if not cap or not cap["layers"]:
        return Section(
            "capacity", "Capacity used per layer", ["No HAT-family trial reported capacity metrics."]
        )
    steps = sorted({p[0] for pts in cap["layers"].values() for p in pts})
    lookup = {layer: dict((int(s), v) for s, v in pts) for layer, pts in cap["layers"].items()}
    table = Table(
        ["layer"] + [f"after task {s}" for s in steps],
        [[layer] + [fmt(lookup[layer].get(s), 3) for s in steps] for layer in lookup],
        caption="Metrics capacity/<layer> of the trial.",
    )
    blocks: list[Block] = [figs["capacity"]] if "capacity" in figs else []
    return Section("capacity", "Capacity used per layer", [*blocks, table])


def _pruned_failed(a: Analysis) -> list[Section]:
    metric = a.objective[0]
    sched = a.setup.scheduler.get("name", "?")
    if a.pruned:
        pruned: list[Block] = [
            Table(
                ["trial", "seed", "configuration", "stopped after", f"{metric} at stop"],
                [
                    [
                        p["trial_id"],
                        str(p["seed"]),
                        config_text(p["config"]),
                        f"{p['stopped_after']} of {p['tasks_total']} tasks",
                        fmt(p["value_at_stop"]),
                    ]
                    for p in a.pruned
                ],
            )
        ]
    else:
        pruned = [f"No trial was pruned (scheduler: {sched})."]
    if a.failed:
        failed: list[Block] = [
            Table(
                ["trial", "seed", "configuration", "tasks done", "error"],
                [
                    [
                        f["trial_id"],
                        str(f["seed"]),
                        config_text(f["config"]),
                        str(f["tasks_done"]),
                        f["error"],
                    ]
                    for f in a.failed
                ],
                caption="The full traceback is the artifact traceback.txt of each run.",
            )
        ]
    else:
        failed = ["No trial failed."]
    return [Section("pruned", "Pruned trials", pruned), Section("failed", "Failed trials", failed)]


def _all_trials(a: Analysis) -> Section:
    metric = a.objective[0]
    staged = a.confirmation is not None  # a stage column only when a later stage ran
    rows = [
        [
            t["trial_id"],
            *([t.get("stage", "search")] if staged else []),
            t["state"],
            str(t["seed"]),
            config_text(t["config"]),
            f"{t['tasks_done']}/{t['tasks_total']}",
            fmt(t["metrics"].get(metric)),
            fmt(t["metrics"].get("avg_acc_test")),
            fmt(t["compute_s"], 1),
        ]
        for t in a.trials
    ]
    header = [
        "trial",
        *(["stage"] if staged else []),
        "state",
        "seed",
        "configuration",
        "tasks",
        metric,
        "avg_acc_test",
        "compute s",
    ]
    return Section("trials", "All trials", [Table(header, rows)] if rows else ["No trial ran."])


def _confirmation(a: Analysis) -> Section | None:
    """The search ranking beside the later stage's (clsweep.report.confirmation)."""
    c = a.confirmation
    if c is None:
        return None
    header, rows = ranking_rows(c, config_text)
    what = (
        f"The {len(c['configs'])} best configurations of the search were run again on {len(c['seeds'])} new "
        f"seed(s) ({', '.join(map(str, c['seeds']))}), never used by the search"
        if c["stage"] == "confirm"
        else f"The best configuration of the search (task 1 only) ran the whole stream on seed(s) "
        f"{', '.join(map(str, c['seeds']))}"
    )
    blocks: list[Any] = [
        f"{what}. The winner is the best mean over these runs; means with Student's t 95% "
        "interval over seeds. Test metrics are shown for the record; they chose nothing.",
        Table(header, rows, bold={(0, i) for i in range(len(header))}),
    ]
    if c["winner"]:
        w = c["winner"]
        tests = "; ".join(f"{m} {spread_text(s)}" for m, s in w["test_metrics"].items())
        blocks.append(
            f"Winner: {config_text(w['config'])} (search rank {w['search_rank']}): "
            f"{c['metric']} {spread_text(w['objective'])}; {tests}."
        )
    title = "Confirmation on new seeds" if c["stage"] == "confirm" else "Final runs on the whole stream"
    return Section("confirmation", title, blocks)


def _lineage(a: Analysis, figs: dict[str, Figure]) -> list[Section]:
    from clsweep.report.pbt import lineage_section

    section = lineage_section(a, figs)
    return [section] if section else []


def build_document(a: Analysis, figs: dict[str, Figure]) -> Document:
    bench = benchmark_section(a)  # a benchmark sweep's headline: right after what was run
    confirmation = _confirmation(a)
    sections = [
        _setup(a),
        *([bench] if bench else []),
        *([confirmation] if confirmation else []),
        _top(a),
        _params(a, figs),
        importance_section(a, figs),
        honesty_section(a),
        _history(figs),
        _best(a, figs),
        *_lineage(a, figs),
        _capacity(a, figs),
        *_pruned_failed(a),
        _all_trials(a),
    ]
    warning = None
    if a.setup.leaky:
        warning = "Leaky protocol: the objective reads the test split; test numbers here are optimistic."
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return Document(
        f"Sweep report: {a.data.name}",
        f"protocol {a.setup.protocol}; objective "
        f"{', '.join(f'{m} ({mode})' for m, mode in a.setup.objectives)}; written {stamp}",
        warning,
        sections,
    )
