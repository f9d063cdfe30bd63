"""The method registry: every continual-learning method, what it needs and which settings it reads.

The replay rule's input function, the replay script and config validation all read this table;
nothing else names a method's needs. Stdlib only: the Snakefile imports it at start-up.

- ``strategy``: the replay strategy, ``module:Class`` (None = nothing is replayed). It is a string
  so that each method's code digest covers its own strategy only.
- ``needs``: artifacts the strategy reads beyond the instances (see ``inscl.core.artifacts``).
- ``settings``: the config keys (dotted) that change what the method computes.
"""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = "inscl.replay.strategies"


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    strategy: str | None
    needs: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()


_BUDGET = ("replay.replay_per_task",)
_INSINFO = ("insinfo.pool",)

METHODS: dict[str, Method] = {
    method.name: method
    for method in [
        Method("no_replay", "sequential fine-tuning, nothing replayed", None),
        Method(
            "random",
            "replay_per_task random examples of each earlier task",
            f"{STRATEGIES}:RandomSampling",
            settings=_BUDGET,
        ),
        Method(
            "inscl",
            "Wasserstein-distance quotas, InsInfo-guided sampling inside each task",
            f"{STRATEGIES}:InsCL",
            needs=("distances", "insinfo"),
            settings=_BUDGET + _INSINFO,
        ),
        Method(
            "inscl_dynamic_only",
            "InsCL's distance quotas with random sampling (ablation)",
            f"{STRATEGIES}:DynamicOnly",
            needs=("distances",),
            settings=_BUDGET,
        ),
        Method(
            "inscl_insinfo_only",
            "uniform quotas with InsInfo-guided sampling (ablation)",
            f"{STRATEGIES}:InsInfoSampling",
            needs=("insinfo",),
            settings=_BUDGET + _INSINFO,
        ),
        Method(
            "prototype_data",
            "examples nearest the k-means centroids of each task's example embeddings",
            f"{STRATEGIES}:PrototypeData",
            needs=("example_embeddings",),
            settings=_BUDGET + ("replay.prototype_clusters",),
        ),
        Method(
            "prototype_instruction",
            "examples of the instructions nearest each task's instruction centroid",
            f"{STRATEGIES}:PrototypeInstruction",
            needs=("embeddings",),
            settings=_BUDGET,
        ),
        Method(
            "diverse_instruction",
            "the earlier instructions least similar to the current task's",
            f"{STRATEGIES}:DiverseInstruction",
            needs=("embeddings",),
            settings=_BUDGET,
        ),
        Method(
            "trace_replay",
            "a fixed fraction of each earlier task, as in TRACE",
            f"{STRATEGIES}:TraceReplay",
            settings=("replay.trace_fraction",),
        ),
    ]
}


def get(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; expected one of: {', '.join(METHODS)}")
    return METHODS[name]
