"""Parameter importance with Optuna, computed on the sweep's finished configurations.

An in-memory Optuna study is rebuilt from the configurations (one Optuna trial per
configuration, its value the mean over seeds, so seeds do not count as extra evidence), with the
distributions of the sweep's plan (clsweep.optuna_space, the one translation). Two evaluators of
different kinds rank the parameters:

- fANOVA (Hutter et al. 2014; Optuna's ``FanovaImportanceEvaluator``, seeded): the share of the
  objective's variance each parameter explains in a random-forest surrogate. The report's default.
- mean decrease impurity (Optuna's ``MeanDecreaseImpurityImportanceEvaluator``, seeded): how much
  each parameter's splits reduce the impurity of the same kind of forest, a different estimator
  of the same question. Where the two disagree on the top parameter the report says so.

Importance is also given at every rung: the metric after task k over every configuration that
reached task k (pruned trials included), so a reader sees which knobs matter early and which
late. Every case where importance means nothing (fewer than two configurations, no parameter
varying, all values equal) gives a reason instead; fewer than :data:`FEW` configurations are
marked rough.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

from clsweep.spec.search_space import Param

__all__ = ["EVALUATORS", "FEW", "importances", "param_importance", "rung_importance"]

FEW = 10
"""Below this many configurations the importance is flagged as rough."""
SEED = 0
EVALUATORS = {
    "fanova": "fANOVA (Optuna FanovaImportanceEvaluator, seed 0)",
    "mean_decrease_impurity": "mean decrease impurity (Optuna MeanDecreaseImpurityImportanceEvaluator, seed 0)",
}


def _evaluator(name: str) -> Any:
    from optuna.importance import FanovaImportanceEvaluator, MeanDecreaseImpurityImportanceEvaluator

    if name == "fanova":
        return FanovaImportanceEvaluator(seed=SEED)
    return MeanDecreaseImpurityImportanceEvaluator(seed=SEED)


def importances(
    configs: Sequence[dict[str, Any]], scores: Sequence[float], mode: str, params: Sequence[Param]
) -> tuple[dict[str, dict[str, float]], str | None]:
    """``{evaluator: {param label: importance}}`` for configurations ``configs`` scored ``scores``,
    or ``({}, reason)`` when importance means nothing here."""
    import optuna
    from optuna.trial import create_trial

    from clsweep.optuna_space import distribution, to_optuna_value

    pairs = [(c, s) for c, s in zip(configs, scores, strict=True) if s is not None and math.isfinite(s)]
    if len(pairs) < 2:
        return {}, f"{len(pairs)} configuration(s) with a value: at least 2 are needed"
    varying = [p for p in params if len({str(c.get(p.name)) for c, _ in pairs if p.name in c}) > 1]
    if not varying:
        return {}, "no searched parameter varies across these configurations"
    if len({round(s, 12) for _, s in pairs}) < 2:
        return {}, "every configuration has the same value: no parameter explains anything"
    if len(varying) == 1:
        one = {varying[0].label: 1.0}
        return {
            name: dict(one) for name in EVALUATORS
        }, f"only {varying[0].label} varies: its importance is 1"
    distributions = {p.label: distribution(p) for p in varying}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for config, score in pairs:
        chosen = {p.label: to_optuna_value(p, config[p.name]) for p in varying if p.name in config}
        study.add_trial(
            create_trial(params=chosen, distributions={k: distributions[k] for k in chosen}, value=score)
        )
    out: dict[str, dict[str, float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in EVALUATORS:
            found = optuna.importance.get_param_importances(study, evaluator=_evaluator(name))
            out[name] = {k: float(v) for k, v in found.items()}
    return out, None


def _top(values: dict[str, float]) -> str | None:
    return max(values, key=lambda k: values[k]) if values else None


def param_importance(
    configs: Sequence[dict[str, Any]],
    values: Sequence[Sequence[float]],
    objectives: Sequence[tuple[str, str]],
    params: Sequence[Param],
) -> dict[str, Any]:
    """``configs[i]`` (searched values of configuration i) scored ``values[i]`` (one mean per objective).

    Returns ``{"available", "reason", "evaluator", "second_evaluator", "configurations", "rough",
    "values": {metric: {param: fANOVA importance}}, "second": {metric: {param: MDI importance}},
    "disagreement": {metric: sentence}}``."""
    out: dict[str, Any] = {
        "available": False,
        "reason": None,
        "evaluator": EVALUATORS["fanova"],
        "second_evaluator": EVALUATORS["mean_decrease_impurity"],
        "configurations": len(configs),
        "rough": len(configs) < FEW,
        "values": {},
        "second": {},
        "disagreement": {},
    }
    for index, (metric, mode) in enumerate(objectives):
        found, reason = importances(configs, [v[index] for v in values], mode, params)
        out["reason"] = out["reason"] or reason
        out["values"][metric] = found.get("fanova", {})
        out["second"][metric] = found.get("mean_decrease_impurity", {})
        if found:
            out["available"] = True
            first, second = _top(out["values"][metric]), _top(out["second"][metric])
            if first != second:
                out["disagreement"][metric] = (
                    f"the two evaluators disagree on what matters most for {metric}: fANOVA ranks {first} "
                    f"first, mean decrease impurity {second}; with this few configurations neither ranking "
                    "is firm"
                )
    return out


def rung_importance(
    rungs: dict[int, tuple[list[dict[str, Any]], list[float]]], mode: str, params: Sequence[Param]
) -> list[dict[str, Any]]:
    """fANOVA importance of the metric after task k, for each ``k -> (configs, mean values)``."""
    out = []
    for k in sorted(rungs):
        configs, scores = rungs[k]
        found, reason = importances(configs, scores, mode, params)
        out.append(
            {
                "after_task": k,
                "configurations": len(configs),
                "values": found.get("fanova", {}),
                "reason": reason,
            }
        )
    return out
