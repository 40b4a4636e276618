"""Parameter importance with Optuna, computed on the sweep's finished configurations.

An in-memory Optuna study is rebuilt from the finished trials (one Optuna trial per configuration,
its value the mean over seeds, so seeds do not count as extra evidence), with the distributions of
the sweep file, and ``optuna.importance.get_param_importances`` (PED-ANOVA by default in Optuna 5)
ranks the parameters. Every case where importance means nothing (fewer than two
configurations, no parameter varying, all objective values equal) gives a reason instead.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

from clsweep.spec.search_space import Param

__all__ = ["param_importance"]

FEW = 10
"""Below this many configurations the importance is flagged as rough."""


def param_importance(configs: Sequence[dict[str, Any]], values: Sequence[Sequence[float]],
                     objectives: Sequence[tuple[str, str]], params: Sequence[Param]) -> dict[str, Any]:
    """``configs[i]`` (searched values of configuration i) scored ``values[i]`` (one mean per objective).

    Returns ``{"available": bool, "reason": str | None, "evaluator": str, "configurations": n,
    "rough": bool, "values": {metric: {param label: importance}}}``."""
    out: dict[str, Any] = {"available": False, "reason": None, "evaluator": None, "configurations": len(configs),
                           "rough": len(configs) < FEW, "values": {}}
    import optuna
    from optuna.trial import create_trial

    from clsweep.optuna_space import distribution, to_optuna_value

    if len(configs) < 2:
        out["reason"] = f"{len(configs)} finished configuration(s): at least 2 are needed"
        return out
    varying = [p for p in params if len({str(c.get(p.name)) for c in configs if p.name in c}) > 1]
    if not varying:
        out["reason"] = "no searched parameter varies across the finished configurations"
        return out
    distributions = {p.label: distribution(p) for p in varying}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for index, (metric, mode) in enumerate(objectives):
        scores = [v[index] for v in values]
        if len({round(s, 12) for s in scores}) < 2:
            out["values"][metric] = {}
            out["reason"] = f"every finished configuration has the same {metric}: no parameter explains anything"
            continue
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
        for config, score in zip(configs, scores, strict=True):
            chosen = {p.label: to_optuna_value(p, config[p.name]) for p in varying if p.name in config}
            if not math.isfinite(score):
                continue
            study.add_trial(create_trial(params=chosen, distributions={k: distributions[k] for k in chosen},
                                         value=score))
        if len(varying) == 1:
            out["values"][metric] = {varying[0].label: 1.0}
            out["reason"] = f"only {varying[0].label} varies: its importance is 1 by definition"
            out["available"] = True
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study)
        out["values"][metric] = {k: float(v) for k, v in importances.items()}
        out["available"] = True
        out["evaluator"] = "PED-ANOVA (optuna.importance.get_param_importances default)"
    return out
