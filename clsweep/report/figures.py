"""The report's figures, drawn with matplotlib's object API (no pyplot state, Agg canvas) as PNG bytes.

Every function takes an :class:`~clsweep.report.analysis.Analysis` and returns a :class:`Figure`
or None when there is nothing to draw (for instance no finished trial).
"""

from __future__ import annotations

import io
import math
import random
from typing import Any

from clsweep.report.analysis import Analysis
from clsweep.report.blocks import Figure
from clsweep.spec.search_space import Param

__all__ = ["DPI", "Figure", "all_figures"]

DPI = 90
FINISHED, PRUNED, BEST = "#1f77b4", "#999999", "#d62728"


def _new(width: float, height: float, rows: int = 1, cols: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _whole_numbers(ax: Any) -> None:
    """Tasks and trials are counted: integer ticks on the x axis."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _values(a: Analysis, param: Param, state: str) -> list[tuple[Any, float]]:
    metric = a.objective[0]
    out = []
    for t in a.trials:
        value = t["metrics"].get(metric)
        if t["state"] == state and param.name in t["config"] and value is not None:
            out.append((t["config"][param.name], value))
    return out


def _log_axis(ax: Any, param: Param) -> None:
    """Log x axis over the searched range, plain-number ticks at 1, 2, 5 x 10^k."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    if param.low is not None and param.high is not None and 0 < param.low < param.high:
        ax.set_xlim(param.low / 1.15, param.high * 1.15)
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def objective_vs_params(a: Analysis) -> Figure | None:
    params = [p for p in a.setup.params if _values(a, p, "finished") or _values(a, p, "pruned")]
    if not params:
        return None
    metric = a.objective[0]
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    fig, axes = _new(4.0 * cols, 3.2 * rows, rows, cols)
    jitter = random.Random(0)
    for i, param in enumerate(params):
        ax = axes[i // cols][i % cols]
        done, stopped = _values(a, param, "finished"), _values(a, param, "pruned")
        if param.categorical:
            labels = [str(v) for v in param.values] or sorted({str(x) for x, _ in done + stopped})
            labels += sorted({str(x) for x, _ in done + stopped} - set(labels))
            groups = [[y for x, y in done if str(x) == lab] for lab in labels]
            if any(groups):
                ax.boxplot(
                    [g if g else [math.nan] for g in groups],
                    positions=range(len(labels)),
                    widths=0.5,
                    showfliers=False,
                    medianprops={"color": FINISHED},
                )
            for points, color, marker in ((done, FINISHED, "o"), (stopped, PRUNED, "x")):
                xs = [labels.index(str(x)) + jitter.uniform(-0.15, 0.15) for x, _ in points]
                ax.scatter(xs, [y for _, y in points], c=color, marker=marker, s=22, zorder=3)
            ax.set_xticks(range(len(labels)), labels, rotation=30 if max(map(len, labels)) > 6 else 0)
        else:
            ax.scatter([x for x, _ in done], [y for _, y in done], c=FINISHED, s=22, label="finished")
            if stopped:
                ax.scatter(
                    [x for x, _ in stopped],
                    [y for _, y in stopped],
                    c=PRUNED,
                    marker="x",
                    s=22,
                    label="pruned (value at stop)",
                )
            if param.log:
                _log_axis(ax, param)
        ax.set_title(f"{param.label} ({param.kind}{', log axis' if param.log else ''})", fontsize=9)
        ax.set_ylabel(metric, fontsize=8)
        ax.tick_params(labelsize=7)
    for j in range(len(params), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    return Figure(
        "objective_vs_params",
        f"{metric} against each searched parameter",
        "One point per trial (blue: finished; grey x: pruned, at the value where it stopped). Boxes "
        "summarise the finished trials of each categorical value.",
        _png(fig),
    )


def importance(a: Analysis) -> Figure | None:
    values = a.importance.get("values", {})
    metric = a.objective[0]
    if not a.importance.get("available") or not values.get(metric):
        return None
    items = sorted(values[metric].items(), key=lambda kv: kv[1])
    fig, axes = _new(6.0, 0.5 + 0.45 * len(items))
    ax = axes[0][0]
    ax.barh([k for k, _ in items], [v for _, v in items], color=FINISHED)
    ax.set_xlabel(f"importance for {metric} (sums to 1)", fontsize=8)
    ax.set_xlim(0, 1)
    ax.tick_params(labelsize=8)
    return Figure("importance", "Parameter importance", a.importance.get("evaluator") or "", _png(fig))


def history(a: Analysis) -> Figure | None:
    points = [h for h in a.history if h["value"] is not None]
    if not points:
        return None
    metric = a.objective[0]
    fig, axes = _new(6.4, 3.2)
    ax = axes[0][0]
    for state, color, marker in (("finished", FINISHED, "o"), ("pruned", PRUNED, "x")):
        sel = [h for h in points if h["state"] == state]
        ax.scatter(
            [h["order"] for h in sel], [h["value"] for h in sel], c=color, marker=marker, s=22, label=state
        )
    best = [(h["order"], h["best_so_far"]) for h in points if h["best_so_far"] is not None]
    if best:
        ax.step([o for o, _ in best], [v for _, v in best], where="post", color=BEST, label="best so far")
    ax.set_xlabel("trial (in order of completion)", fontsize=8)
    _whole_numbers(ax)
    ax.set_ylabel(metric, fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    return Figure(
        "history",
        "Optimisation history",
        f"Final {metric} of each trial in the order trials ended.",
        _png(fig),
    )


def accuracy_matrix(a: Analysis) -> Figure | None:
    mats = {s: m for s, m in (a.best or {}).get("matrices", {}).items() if m}
    if not mats:
        return None
    fig, axes = _new(4.2 * len(mats), 3.8, 1, len(mats))
    for ax, (split, matrix) in zip(axes[0], mats.items(), strict=True):
        grid = [[math.nan if v is None else v for v in row] for row in matrix]
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis")
        for t, row in enumerate(matrix):
            for j, v in enumerate(row):
                if v is not None and len(matrix) <= 12:
                    ax.text(
                        j,
                        t,
                        f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if v > 0.6 else "white",
                    )
        n_rows, n_cols = len(matrix), len(matrix[0]) if matrix else 0
        ax.set_xticks(range(n_cols), [str(j + 1) for j in range(n_cols)])
        ax.set_yticks(range(n_rows), [str(t + 1) for t in range(n_rows)])
        ax.set_xlabel("evaluated on task j", fontsize=8)
        ax.set_ylabel("after training task t", fontsize=8)
        ax.set_title(f"R[t, j], {split} split", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    return Figure(
        "accuracy_matrix",
        "Accuracy matrix of the best trial",
        "Accuracy on task j after training task t (test split, and the validation split the search used).",
        _png(fig),
    )


def task_curves(a: Analysis) -> Figure | None:
    best = a.best or {}
    matrix = (best.get("matrices") or {}).get("test")
    per_task = best.get("per_task") or {}
    if not matrix and not per_task:
        return None
    fig, axes = _new(10.0, 3.4, 1, 2)
    left, right = axes[0]
    if matrix:
        for j in range(len(matrix[0])):
            pts = [(t + 1, row[j]) for t, row in enumerate(matrix) if row[j] is not None]
            left.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=f"task {j + 1}")
        left.set_xlabel("tasks trained", fontsize=8)
        left.set_ylabel("test accuracy", fontsize=8)
        left.set_title("accuracy of each task across the sequence", fontsize=9)
        left.legend(fontsize=6, ncol=2)
    for key, color in (("avg_acc", "C0"), ("bwt", "C1"), ("forgetting", "C3")):
        for split, style in (("test", "-"), ("val", "--")):
            pts = per_task.get(f"{key}_{split}") or []
            if pts:
                right.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    style,
                    color=color,
                    marker="o",
                    ms=3,
                    label=f"{key} ({split})",
                )
    right.axhline(0.0, color="#cccccc", lw=0.8)
    right.set_xlabel("tasks trained", fontsize=8)
    right.set_title("average accuracy, BWT and forgetting after each task", fontsize=9)
    right.legend(fontsize=6, ncol=2)
    for ax in (left, right):
        ax.tick_params(labelsize=7)
        _whole_numbers(ax)
    return Figure(
        "task_curves",
        "Per-task curves of the best trial",
        "Left: test accuracy of each task after every task trained. Right: the metrics logged after "
        "each task (solid: test, dashed: validation).",
        _png(fig),
    )


def capacity(a: Analysis) -> Figure | None:
    cap = a.capacity
    if not cap or not cap["layers"]:
        return None
    fig, axes = _new(6.4, 3.2)
    ax = axes[0][0]
    for layer, pts in cap["layers"].items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=layer)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("tasks trained", fontsize=8)
    ax.set_ylabel("share of units used", fontsize=8)
    _whole_numbers(ax)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    return Figure(
        "capacity",
        f"Capacity used per layer ({cap['algorithm']}, trial {cap['trial_id']})",
        "Share of each layer's units in the cumulative mask after each task.",
        _png(fig),
    )


def objective_curves(a: Analysis) -> Figure | None:
    if not a.curves:
        return None
    metric = a.objective[0]
    state = {t["run_id"]: t["state"] for t in a.trials}
    fig, axes = _new(6.4, 3.2)
    ax = axes[0][0]
    for run_id, pts in a.curves.items():
        if not pts:
            continue
        pruned = state.get(run_id) == "pruned"
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            color=PRUNED if pruned else FINISHED,
            alpha=0.8,
            lw=1,
            ls="--" if pruned else "-",
        )
        if pruned:
            ax.scatter([pts[-1][0]], [pts[-1][1]], marker="x", c=BEST, s=30, zorder=3)
    ax.set_xlabel("tasks done", fontsize=8)
    _whole_numbers(ax)
    ax.set_ylabel(metric, fontsize=8)
    ax.tick_params(labelsize=7)
    return Figure(
        "objective_curves",
        f"{metric} after each task, every trial",
        "Blue: finished trials; grey dashed: pruned trials, with a red x where the scheduler stopped them.",
        _png(fig),
    )


def lineage_figure(a: Analysis) -> Figure | None:
    """Each mutated knob of the best lineage per task; a marker where the lineage changes trial
    (an exploit copied another trial's checkpoint there)."""
    from clsweep.report.pbt import best_lineage
    from clsweep.report.pbt import knobs as lineage_knobs

    rows = best_lineage(a)
    mutated = [k for k in lineage_knobs(rows) if all(isinstance(r.get(k), (int, float)) for r in rows)]
    if not mutated:
        return None
    fig, axes = _new(3.4 * len(mutated), 3.0, 1, len(mutated))
    tasks = [r["task"] for r in rows]
    copied = [r["task"] for prev, r in zip(rows, rows[1:], strict=False) if r["trial"] != prev["trial"]]
    for ax, knob in zip(axes[0], mutated, strict=True):
        values = [float(r[knob]) for r in rows]
        ax.step(tasks, values, where="mid", color="C0")
        ax.plot(tasks, values, "o", ms=3, color="C0")
        for t in copied:
            ax.axvline(t - 0.5, color="#d62728", lw=0.8, ls=":")
        if min(values) > 0 and max(values) / min(values) > 5:
            ax.set_yscale("log")
        ax.set_title(knob.removeprefix("experiment."), fontsize=9)
        ax.set_xlabel("task", fontsize=8)
        ax.tick_params(labelsize=7)
        _whole_numbers(ax)
    return Figure(
        "pbt_lineage",
        "Knob values of the best lineage, per task",
        "The value each mutated knob had while the best trial's lineage trained each task; a red "
        "dotted line where the lineage continues from another trial's checkpoint (a PBT exploit).",
        _png(fig),
    )


def all_figures(a: Analysis) -> dict[str, Figure]:

    out = {}
    makers = (objective_vs_params, importance, history, objective_curves, accuracy_matrix, task_curves)
    for make in (*makers, capacity, lineage_figure):
        fig = make(a)
        if fig is not None:
            out[fig.name] = fig
    return out
