"""The driver's fork server (clsweep.sweep.forkserver): whether a sweep gets one, and what it
preloads. Importing this module imports neither torch nor Ray."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clsweep.spec.sweep import SweepPlan

if TYPE_CHECKING:
    from clsweep.sweep.driver import Plan

__all__ = ["preload_modules", "start_forkserver"]


def start_forkserver(plan: Plan, *, before_ray: bool) -> Any:
    """The fork server of a sweep whose trials run on this machine (clsweep.sweep.forkserver), or
    None. ``before_ray``: for a Ray this sweep starts itself (always local: start the server first,
    so that its imports overlap Ray's start); else for a Ray already running or joined at
    ``--address`` whose one node is this machine (not through Ray Client)."""
    from clsweep.sweep.forkserver import ForkServer, enabled

    if plan.spec.cluster.runtime_env or not enabled(plan.spec.resources.gpus):
        return None  # a runtime_env changes what trials import and see: they get Ray's own workers
    import ray

    if before_ray and (plan.address is not None or ray.is_initialized()):
        return None  # not a Ray of this sweep's own: see after it is joined
    if not before_ray:
        from ray.util.client import ray as client

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        here = ray.get_runtime_context().get_node_id()
        if client.is_connected() or len(nodes) != 1 or nodes[0].get("NodeID") != here:
            return None
    return ForkServer.start(preload_modules(plan.spec), plan.paths.sweep_dir / "forkserver.log")


def preload_modules(spec: SweepPlan) -> list[str]:
    """What a trial of ``spec`` imports besides torch and Lightning: the modules of the experiment's
    components, of its data source's loader and its plugins (``imports:``)."""
    from clsweep import registry
    from clsweep.common import EXPERIMENT_COMPONENTS

    experiment = spec.experiment
    modules = [str(m) for m in experiment.get("imports") or []]
    parts = {kind: experiment.get(kind) for kind in EXPERIMENT_COMPONENTS}
    wanted = [(kind, part.get("name")) for kind, part in parts.items() if isinstance(part, dict)]
    if isinstance(benchmark := parts["benchmark"], dict):
        wanted.append(("source", benchmark.get("source", "digits")))
    for kind, name in wanted:
        try:
            entry = registry.get(kind, str(name))
        except LookupError:
            continue
        modules += [*entry.preload, entry.module]
    return modules
