"""The method registry: every continual-learning method, what it needs and which settings it reads.

The replay rule's input function, the replay script and config validation all read this table;
nothing else names a method's needs. Stdlib only: the Snakefile imports it at start-up.

- ``strategy``: the replay strategy, ``module:Class`` (None = nothing is replayed). It is a string
  so that each method's code digest covers its own strategy only.
- ``needs``: artifacts the strategy reads beyond the instances (see ``inscl.core.artifacts``).
- ``settings``: the config keys (dotted) that change what the method computes.
- ``trains``: False for a method without training (``icl``: the base model prompted with
  demonstrations, one job per seed, rule ``icl``); it has no chain of stages.
- ``general``: the replay set also holds rows of the general-data file (``replay.general``).
- ``extra_pass``: the replay folder holds ``extra{k}.parquet``, the set of one extra epoch after the
  stage's own epochs (TRACE's replay), instead of rows mixed into the stage.
- ``rationales``: the chain trains on rationale + answer targets (rule ``rationales``, RCL) and its
  answers are extracted before scoring (``inscl.evaluation.answers``).
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
    trains: bool = True
    general: bool = False
    extra_pass: bool = False
    rationales: bool = False


_BUDGET = ("replay.replay_per_task",)
_INSINFO = ("insinfo.pool",)
_GENERAL = ("replay.general",)
GENERAL_STRATEGIES = "inscl.replay.general"
# The training side does not yet run an extra pass (inscl.training); until it does, a method with
# extra_pass is refused at config validation rather than silently trained as sequential fine-tuning.
EXTRA_PASS_TRAINING = False

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
        Method(
            "general_replay",
            "replay_per_task random examples of each earlier task plus general-data rows (replay.general)",
            f"{GENERAL_STRATEGIES}:GeneralReplay",
            needs=("general_data",),
            settings=_BUDGET + _GENERAL,
            general=True,
        ),
        Method(
            "trace_general_replay",
            "TRACE's replay: after each task one extra epoch over the first trace_fraction of each earlier "
            "task plus the general data",
            f"{GENERAL_STRATEGIES}:TraceExtraPass",
            needs=("general_data",),
            settings=("replay.trace_fraction",) + _GENERAL,
            general=True,
            extra_pass=True,
        ),
        Method("rcl", "sequential fine-tuning on rationale + answer targets (TRACE's RCL)", None, rationales=True),
        Method("icl", "the base model prompted with k demonstrations of the task's training split", None, trains=False),
    ]
}


def get(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; expected one of: {', '.join(METHODS)}")
    return METHODS[name]
