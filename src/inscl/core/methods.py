"""The method registry: every continual-learning method, what it needs and which settings it reads.

The replay rule's input function, the replay script and config validation all read this table;
nothing else names a method's needs. Stdlib only: the Snakefile imports it at start-up.

- ``strategy``: the replay strategy, ``module:Class`` (None = nothing is replayed). It is a string
  so that each method's code digest covers its own strategy only.
- ``needs``: artifacts the strategy reads beyond the instances (see ``inscl.core.artifacts``).
- ``settings``: the config keys (dotted) that change the replay set (the replay rule's params).
- ``trains``: False for a method without training (``icl``: the base model prompted with
  demonstrations, one job per seed, rule ``icl``); it has no chain of stages.
- ``general``: the replay set also holds rows of the general-data file (``replay.general``).
- ``extra_pass``: the replay folder holds ``extra{k}.parquet``, the set of one extra epoch after the
  stage's own epochs (TRACE's replay), instead of rows mixed into the stage.
- ``rationales``: the chain trains on rationale + answer targets (rule ``rationales``, RCL) and its
  answers are extracted before scoring (``inscl.evaluation.answers``).
- ``training``: the training-side hook, ``module:Class`` in ``inscl.training.methods`` (None = plain
  fine-tuning): a loss term, a gradient constraint, what is trained (docs/methods.md).
- ``training_settings``: the config keys (dotted) the hook reads (the train rule's method params).
- ``later_stage_settings``: those of ``training_settings`` that only stages after the first read
  (stage 1 has no earlier task: no penalty, teacher, memory or earlier adapter). Stage 1's params
  leave them out, so changing one reruns stages 2 and later only.
- ``memory``: the replay set is the hook's episodic memory (A-GEM), not rows mixed into the stage.
- ``state``: the hook leaves a stage state for the next stage (e.g. EWC's Fisher), ``Run.state`` in
  each stage's run folder; its training is rule ``train_with_state``.

A replay method and a training method compose as ``<replay>+<training>`` (e.g. ``inscl+ewc``): the
replay method picks the rows (or the memory), the training method adds its hook. ``METHODS`` holds the
named methods and builds a composition when asked for one.
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
    training: str | None = None
    training_settings: tuple[str, ...] = ()
    later_stage_settings: tuple[str, ...] = ()
    memory: bool = False
    state: bool = False


def compose(replay: Method, training: Method) -> Method:
    """`<replay>+<training>`: the rows (or memory) `replay` selects, trained with `training`'s hook."""
    return Method(
        f"{replay.name}+{training.name}",
        f"{replay.summary}; {training.summary}",
        replay.strategy,
        needs=replay.needs,
        settings=tuple(dict.fromkeys(replay.settings + training.settings)),
        general=replay.general,
        training=training.training,
        training_settings=training.training_settings,
        later_stage_settings=training.later_stage_settings,
        memory=training.memory,
        state=training.state,
    )


class Registry(dict):
    """name -> Method for the named methods; `"<replay>+<training>"` is composed when asked for (and
    not stored: iterating gives the named methods only)."""

    def __missing__(self, name: str) -> Method:
        replay, plus, training = name.partition("+")
        left, right = dict.get(self, replay), dict.get(self, training)
        if not plus or left is None or right is None or not composable(left, right):
            raise KeyError(name)
        return compose(left, right)

    def __contains__(self, name) -> bool:
        try:
            self[name]
        except KeyError:
            return False
        return True

    def get(self, name, default=None):
        return self[name] if name in self else default


def composable(replay: Method, training: Method) -> bool:
    """A replay method whose rows are mixed into its stages, with a training method that selects no rows of
    its own (A-GEM's memory, then chosen by the replay method, aside)."""
    mixes = replay.strategy is not None and replay.training is None and replay.trains and not replay.extra_pass
    return mixes and training.training is not None and (training.strategy is None or training.memory)


_BUDGET = ("replay.replay_per_task",)
_INSINFO = ("insinfo.pool",)
_GENERAL = ("replay.general",)
GENERAL_STRATEGIES = "inscl.replay.general"
TRAINING = "inscl.training.methods"

METHODS: Registry = Registry(
    (method.name, method)
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
        Method(
            "ewc",
            "sequential fine-tuning with online EWC: lambda/2 * sum F (theta - theta*)^2, F accumulated over tasks",
            None,
            training=f"{TRAINING}.ewc:EWC",
            training_settings=("ewc.lambda", "ewc.gamma", "ewc.fisher_examples"),
            later_stage_settings=("ewc.lambda", "ewc.gamma"),
            state=True,
        ),
        Method(
            "lwf",
            "sequential fine-tuning with KL distillation from the previous stage's model on the current inputs",
            None,
            training=f"{TRAINING}.lwf:LwF",
            training_settings=("lwf.temperature", "lwf.weight"),
            later_stage_settings=("lwf.temperature", "lwf.weight"),
        ),
        Method(
            "agem",
            "A-GEM: the step's gradient projected to agree with an episodic memory's (random rows per earlier task)",
            f"{STRATEGIES}:RandomSampling",
            settings=_BUDGET,
            training=f"{TRAINING}.agem:AGEM",
            training_settings=("agem.memory_batch",),
            later_stage_settings=("agem.memory_batch",),
            memory=True,
        ),
        Method(
            "olora",
            "O-LoRA: a new LoRA adapter per task, earlier ones frozen, orthogonal to them",
            None,
            training=f"{TRAINING}.olora:OLoRA",
            training_settings=tuple(
                f"olora.{key}" for key in ("r", "alpha", "dropout", "target_modules", "lambda1", "lambda2")
            ),
            later_stage_settings=("olora.lambda1",),
        ),
    ]
)


def get(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; expected one of: {', '.join(METHODS)} or <replay>+<training>")
    return METHODS[name]
