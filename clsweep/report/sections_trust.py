"""The report's sections on how far its claims can be trusted: parameter importance (two
evaluators, per rung), rung fidelity and the leak gap."""

from __future__ import annotations

from clsweep.report.analysis import Analysis
from clsweep.report.blocks import Block, Figure, Section, Table, fmt

__all__ = ["honesty_section", "importance_section"]


def importance_section(a: Analysis, figs: dict[str, Figure]) -> Section:
    imp = a.importance
    metric = a.objective[0]
    blocks: list[Block] = []
    if imp.get("values", {}).get(metric):
        second = imp.get("second", {}).get(metric, {})
        blocks.append(
            Table(
                ["parameter", "fANOVA", "mean decrease impurity"],
                [[k, f"{v:.3f}", fmt(second.get(k), 3)] for k, v in imp["values"][metric].items()],
                caption=f"Importance for {metric}: {imp['evaluator']} (the default), beside "
                f"{imp['second_evaluator']}. Each column sums to 1.",
            )
        )
        if "importance" in figs:
            blocks.append(figs["importance"])
    for sentence in imp.get("disagreement", {}).values():
        blocks.append(f"Note: {sentence}.")
    rungs = [r for r in a.rung_importance if r["values"]]
    if rungs:
        names = list(dict.fromkeys(k for r in rungs for k in r["values"]))
        blocks.append(
            Table(
                ["after task", "configurations", *names],
                [
                    [
                        str(r["after_task"]),
                        str(r["configurations"]),
                        *[fmt(r["values"].get(n), 3) for n in names],
                    ]
                    for r in rungs
                ],
                caption=f"fANOVA importance of {metric} after each task, over every configuration "
                "that reached it: which knobs matter early and which late.",
            )
        )
    if imp.get("reason"):
        blocks.append(f"Note: {imp['reason']}.")
    if imp.get("available") and imp.get("rough"):
        blocks.append(
            f"Only {imp['configurations']} finished configurations: read the importance as a rough hint."
        )
    if not blocks:
        blocks.append("Not available.")
    return Section("importance", "Parameter importance", blocks)


def honesty_section(a: Analysis) -> Section:
    """Rung fidelity and the leak gap."""
    blocks: list[Block] = []
    fid = a.rung_fidelity
    if fid.get("available"):
        blocks.append(
            Table(
                ["after task", "finished trials", "Spearman vs final", "scheduler rung"],
                [
                    [
                        str(r["after_task"]),
                        str(r["trials"]),
                        fmt(r["spearman"], 2),
                        "yes" if r["scheduler_rung"] else "no",
                    ]
                    for r in fid["rungs"]
                ],
                caption="Rung fidelity: how well the objective after task k ranks the finished "
                "trials as their final objective does (1: the same order).",
            )
        )
        blocks += [f"Warning: {w}." for w in fid.get("warnings", [])]
    elif fid.get("reason"):
        blocks.append(f"Rung fidelity: {fid['reason']}.")
    gap = a.leak_gap
    if gap.get("available"):
        rows = [("all configurations", gap["overall"])] + [(m, g) for m, g in gap["per_method"].items() if g]
        blocks.append(
            Table(
                [
                    "",
                    f"chosen on {gap['objective']}: {rows[0][1]['test_metric']}",
                    "chosen on test",
                    "leak gap",
                ],
                [
                    [name, fmt(g["honest"]["test"]), fmt(g["test_tuned"]["test"]), fmt(g["gap"])]
                    for name, g in rows
                ],
                caption="The leak gap: the test score of the configuration the sweep chose (publishable) beside the "
                "one a search tuned on the test split would have chosen.",
            )
        )
        blocks.append(gap["note"])
    return Section(
        "honesty", "How far to trust it: rung fidelity and the leak gap", blocks or ["Not available."]
    )
