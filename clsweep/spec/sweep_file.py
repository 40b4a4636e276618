"""The sweep file (``space.yaml``) as a typed model: exactly what the user writes, nothing derived.

:class:`SweepFile` checks the shape of every section (types, ranges, unknown keys);
:mod:`clsweep.spec._sweep_checks` then checks what needs the registry and the whole file, and
:mod:`clsweep.spec.sweep` derives the frozen :class:`~clsweep.spec.sweep.SweepPlan` from it.
Every default below is the one a sweep gets when the key is left out.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clsweep.common import EXPERIMENT_COMPONENTS
from clsweep.spec.search_space import SearchEntry, deep_merge

__all__ = [
    "ClusterConfig",
    "ConfirmConfig",
    "Objective",
    "ProtocolConfig",
    "ResourcesConfig",
    "SchedulerConfig",
    "SearcherConfig",
    "SweepFile",
    "TrackingConfig",
    "merge_variants",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SearcherConfig(_Model):
    name: Literal["tpe", "random", "grid"] = "tpe"
    samples: int | None = Field(None, ge=1, le=1_000_000)
    """Configurations to sample (tpe/random; default 10, or 1 when nothing is sampled). The grid
    searcher runs every grid point."""
    seed: int = 0


class SchedulerConfig(_Model):
    name: Literal["none", "asha", "median", "pbt"] = "none"
    grace_period: int = Field(2, ge=1)
    """Tasks a trial always completes before it may be stopped (2: task 1 alone measures
    plasticity only and would favour finetuning-like settings)."""
    reduction_factor: float = Field(2.0, gt=1.0)  # asha only
    min_samples_required: int = Field(3, ge=1)  # median only
    quantile: float = Field(0.25, gt=0.0, le=0.5)
    """pbt only: the bottom fraction of the population that copies a top-fraction trial at each
    task boundary (0.25: Jaderberg et al. 2017's truncation selection, Ray Tune's default)."""
    resample_probability: float = Field(0.25, ge=0.0, le=1.0)
    """pbt only: chance that a copied knob is drawn afresh from its distribution instead of being
    scaled by 0.8 or 1.2 (a choice moves to a neighbouring value); Ray Tune's default."""
    mutate: dict[str, SearchEntry] = Field(default_factory=dict)
    """pbt only: the knobs PBT perturbs at task boundaries, dotted path -> distribution (the
    ``search`` syntax, no ``when``); clsweep.spec._pbt_checks says which knobs may change."""


class Objective(_Model):
    metric: str
    mode: Literal["max", "min"] | None = None


class ProtocolConfig(_Model):
    name: Literal["validation", "first_k", "first_task", "test", "current_task"] = "validation"
    """first_task (Lee et al. 2024): the search trains task 1 only; the chosen configuration then
    runs the whole stream once per seed (the ``final`` stage). current_task: population-based
    training over the task stream (needs scheduler pbt): at each task boundary choices use only the
    validation splits of the tasks seen so far."""
    k: int | None = Field(None, ge=1)
    leaky: bool = False


class ConfirmConfig(_Model):
    """After the search, re-run the ``top_k`` best configurations on ``seeds`` new seeds (never
    used by the search); the sweep's winner is the best mean over those runs."""

    top_k: int = Field(3, ge=1, le=100)
    seeds: int = Field(5, ge=1, le=100)


class ResourcesConfig(_Model):
    cpus: float = Field(1.0, gt=0.0)
    gpus: float = Field(0.0, ge=0.0)
    max_concurrent: int | None = Field(None, ge=1)
    pending_timeout: float = Field(600.0, gt=0.0, exclude=True)
    """On a cluster with an autoscaler and no node that fits a trial yet: seconds to wait for one
    before the sweep stops (resumable). Where it runs, not what it searches: not in the fingerprint."""


class TrackingConfig(_Model):
    uri: str | None = None
    experiment: str | None = None
    outage_timeout: float = Field(60.0, gt=0.0, exclude=True)
    """When the sweep's trials are done and the tracking server does not answer: seconds to wait
    for it before the records left in the journal are reported unsent (``clsweep sync`` sends
    them). Where it runs, not what it searches: not in the fingerprint."""


class ClusterConfig(_Model):
    address: str | None = None
    runtime_env: dict[str, Any] = Field(default_factory=dict)


class SweepFile(_Model):
    """One sweep file, every section typed (search_spaces/README.md documents each key)."""

    name: str
    description: str = ""
    experiment: dict[str, Any]
    """A complete experiment (clsweep.spec.experiment); checked per configuration."""
    variants: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    """Benchmark mode: axis -> label -> partial experiment laid over ``experiment``."""
    search: dict[str, SearchEntry] = Field(default_factory=dict)
    searcher: SearcherConfig = Field(default_factory=SearcherConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    objective: Objective | list[Objective] = Field(default_factory=lambda: Objective(metric="avg_acc_val"))
    protocol: ProtocolConfig = Field(default_factory=ProtocolConfig)
    confirm: ConfirmConfig | None = None
    """None: the search's best configuration is the winner."""
    seeds: int | list[int] = 1
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    retries: int = Field(1, ge=-1, le=100)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @property
    def objectives_given(self) -> list[Objective]:
        return [self.objective] if isinstance(self.objective, Objective) else list(self.objective)


def merge_variants(
    base: Mapping[str, Any], variants: Mapping[str, Mapping[str, Any]], config: Mapping[str, Any]
) -> dict[str, Any]:
    """The experiment mapping with the variant labels chosen in ``config`` laid over ``base``.

    A component given with another ``name`` replaces the base component whole (its params belong
    to the other class); otherwise nested mappings merge."""
    raw = deep_merge(base, {})
    for axis, options in variants.items():
        label = config.get(f"variants.{axis}")
        if label is None:
            continue
        for key, value in options[label].items():
            old = raw.get(key)
            if isinstance(value, Mapping) and isinstance(old, Mapping):
                renamed = key in EXPERIMENT_COMPONENTS and value.get("name", old.get("name")) != old.get(
                    "name"
                )
                raw[key] = deep_merge({}, value) if renamed else deep_merge(old, value)
            else:
                raw[key] = copy.deepcopy(value)
    return raw
