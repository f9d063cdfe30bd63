"""Rule select_replay: the replay sets of every stage of one (order, method, seed), and their composition.

The method's strategy (inscl.replay.strategies, named by the method registry) chooses the rows;
this module loads what it reads, assembles the stage files with why each row was chosen, and
writes them all or nothing.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from inscl.core import artifacts
from inscl.core.io import InputError, atomic_dir
from inscl.core.methods import METHODS
from inscl.replay.sampling import TaskPool, build_pools, unit_rows, vector_matrix
from inscl.replay.strategies import ReplaySettings, StageContext

log = logging.getLogger(__name__)


@dataclass
class ReplayData:
    """Everything a replay strategy reads, indexed for fast lookups."""

    instances: pd.DataFrame
    pools: dict[str, TaskPool]
    distances: dict[tuple[str, str], float]
    insinfo: pd.Series | None = None  # by (order, stage, task, instruction_id); ("", 0) = experiment pool
    instruction_vectors: pd.Series | None = None  # vector per instruction_id
    example_vectors: pd.Series | None = None  # vector per instance_id
    sources: dict[str, str] = field(default_factory=dict)
    general: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # rows of general data
    general_name: str | None = None
    cache: dict = field(default_factory=dict, repr=False)  # derived arrays, computed once

    @classmethod
    def from_frames(
        cls,
        instances: pd.DataFrame,
        tasks,
        distances: pd.DataFrame | None = None,
        insinfo: pd.DataFrame | None = None,
        embeddings: pd.DataFrame | None = None,
        example_embeddings: pd.DataFrame | None = None,
        sources: dict[str, str] | None = None,
        general_data: pd.DataFrame | None = None,
    ) -> "ReplayData":
        """`general_data` (results/data/general.parquet) is appended to the instances, so that its rows
        have positions like any example; no task pool holds them."""
        general = np.zeros(0, dtype=np.int64)
        general_name = None
        if general_data is not None and len(general_data):
            general = np.arange(len(instances), len(instances) + len(general_data), dtype=np.int64)
            general_name = str(general_data["task"].iloc[0])
            instances = pd.concat([instances, general_data[list(instances.columns)]], ignore_index=True)
        sources = {
            "instances": "instances.parquet",
            "distances": "distances.parquet",
            "insinfo": "insinfo.parquet",
            "embeddings": "embeddings.parquet",
            "example_embeddings": "example_embeddings.parquet",
            **(sources or {}),
        }
        pairs = {}
        if distances is not None:
            pairs = dict(zip(zip(distances["task_a"], distances["task_b"]), distances["distance"].astype(float)))
        instruction_vectors = None
        if embeddings is not None:
            instruction_vectors = pd.Series(list(embeddings["vector"]), index=embeddings["instruction_id"])
        example_vectors = None
        if example_embeddings is not None:
            example_vectors = pd.Series(list(example_embeddings["vector"]), index=example_embeddings["instance_id"])
        if insinfo is not None:
            insinfo = insinfo.assign(
                order=insinfo["order"].fillna(""), stage=insinfo["stage"].fillna(0).astype("int64")
            )
            insinfo = insinfo.set_index(["order", "stage", "task", "instruction_id"])["insinfo"].sort_index()
        return cls(
            instances,
            build_pools(instances, tasks, sources["instances"]),
            pairs,
            insinfo,
            instruction_vectors,
            example_vectors,
            sources,
            general=general,
            general_name=general_name,
        )

    def distance(self, task_a: str, task_b: str) -> float:
        if (task_a, task_b) not in self.distances:
            raise InputError(self.sources["distances"], f"no distance from {task_a} to {task_b}", field="task_a")
        return self.distances[(task_a, task_b)]

    def insinfo_scores(self, task: str, order: str, stage: int, pool: str) -> np.ndarray:
        """InsInfo of the task's instructions (aligned to its pool), from the experiment pool or
        from the cumulative pool of (order, stage)."""
        key = ("", 0) if pool == "experiment" else (order, stage)
        cache_key = ("insinfo", task, *key)
        if cache_key not in self.cache:
            if self.insinfo is None:
                raise InputError(self.sources["insinfo"], "InsInfo is needed but was not given")
            instruction_ids = self.pools[task].instruction_ids
            try:
                scores = self.insinfo.loc[(*key, task)].reindex(instruction_ids)
            except KeyError:
                scores = pd.Series(np.nan, index=instruction_ids)
            if scores.isna().any():
                where = "the experiment pool" if pool == "experiment" else f"order {order} stage {stage}"
                missing = scores.index[scores.isna()][0]
                raise InputError(self.sources["insinfo"], f"no InsInfo in {where}", record=f"{task}/{missing}")
            self.cache[cache_key] = scores.to_numpy(dtype=np.float64)
        return self.cache[cache_key]

    def instruction_matrix(self, task: str) -> np.ndarray:
        """Unit instruction embeddings of the task, aligned to its pool's instructions."""
        cache_key = ("instructions", task)
        if cache_key not in self.cache:
            ids = self.pools[task].instruction_ids
            self.cache[cache_key] = unit_rows(self._lookup(self.instruction_vectors, ids, "embeddings"))
        return self.cache[cache_key]

    def example_matrix(self, task: str) -> np.ndarray:
        """Example embeddings of the task's pool, aligned to its rows."""
        cache_key = ("examples", task)
        if cache_key not in self.cache:
            ids = self.instances["instance_id"].to_numpy()[self.pools[task].rows]
            self.cache[cache_key] = self._lookup(self.example_vectors, ids, "example_embeddings")
        return self.cache[cache_key]

    def _lookup(self, vectors: pd.Series | None, ids, name: str) -> np.ndarray:
        if vectors is None:
            raise InputError(self.sources[name], "embeddings are needed but were not given")
        present = pd.Index(ids).isin(vectors.index)
        if not present.all():
            raise InputError(self.sources[name], "no embedding", record=np.asarray(ids)[~present][0])
        return vector_matrix(vectors.loc[ids].to_numpy())


# ----------------------------------------------------------------------------- assembly


def replay_stage(
    data: ReplayData, strategy, settings: ReplaySettings, order: str, tasks, method: str, seed: int, stage: int
) -> pd.DataFrame:
    """The replayed training examples of one stage: the instance columns, then why each was chosen."""
    ctx = StageContext(data, settings, order, list(tasks), method, int(seed), int(stage))
    return stage_frame(data, ctx, strategy.select(ctx))


def extra_pass_stage(
    data: ReplayData, strategy, settings: ReplaySettings, order: str, tasks, method: str, seed: int, stage: int
) -> pd.DataFrame:
    """The set of the extra epoch after one stage (inscl.replay.general.TraceExtraPass), in pass order."""
    ctx = StageContext(data, settings, order, list(tasks), method, int(seed), int(stage))
    frame = stage_frame(data, ctx, strategy.extra_pass(ctx))
    permutation = ctx.rng("extra_pass").permutation(len(frame))
    frame = frame.iloc[permutation].reset_index(drop=True)
    frame["position"] = np.arange(len(frame), dtype=np.int64)
    return frame


def stage_frame(data: ReplayData, ctx: StageContext, replays) -> pd.DataFrame:
    """The rows of `replays` (TaskReplay) with the stage columns and why each was chosen."""
    order, method, seed, stage = ctx.order, ctx.method, ctx.seed, ctx.stage
    replays = [r for r in replays if len(r.rows)]
    sizes = [len(r.rows) for r in replays]
    rows = np.concatenate([np.zeros(0, dtype=np.int64)] + [r.rows for r in replays])
    frame = data.instances.iloc[rows].reset_index(drop=True)
    frame["stage"] = np.full(len(rows), stage, dtype=np.int64)
    frame["current_task"] = pd.Series([ctx.current] * len(rows), dtype="str")
    frame["method"] = pd.Series([method] * len(rows), dtype="str")
    frame["quota"] = np.repeat(np.array([r.quota for r in replays], dtype=np.int64), sizes)
    frame["score"] = np.concatenate([np.zeros(0)] + [np.asarray(r.scores, dtype=np.float64) for r in replays])
    frame["distance"] = np.repeat(np.array([r.distance for r in replays], dtype=np.float64), sizes)
    frame["reason"] = pd.Series(np.repeat(np.array([r.reason for r in replays], dtype=object), sizes), dtype="str")
    log.info("%s %s seed %d stage %d: %d examples from %d tasks", order, method, seed, stage, len(frame), len(replays))
    return frame


def replay_order(
    data: ReplayData, strategy, settings: ReplaySettings, order: str, tasks, method: str, seed: int
) -> list[pd.DataFrame]:
    """The replay set of every stage of the order (stage 1 replays no earlier task)."""
    return [
        replay_stage(data, strategy, settings, order, tasks, method, seed, stage) for stage in range(1, len(tasks) + 1)
    ]


def extra_pass_order(
    data: ReplayData, strategy, settings: ReplaySettings, order: str, tasks, method: str, seed: int
) -> list[pd.DataFrame]:
    """The extra-pass set after every stage of the order (methods with extra_pass only)."""
    return [
        extra_pass_stage(data, strategy, settings, order, tasks, method, seed, stage)
        for stage in range(1, len(tasks) + 1)
    ]


def load_strategy(method: str):
    """The method's strategy object, imported from the module the registry names."""
    module, name = METHODS[method].strategy.split(":")
    return getattr(importlib.import_module(module), name)()


def composition(
    frames: list[pd.DataFrame], order: str, tasks: list[str], method: str, seed: int, general: str | None = None
) -> pd.DataFrame:
    """One row per (stage, earlier task) with the number of replayed examples (0 when none), plus one
    per stage for the general data when the method uses it. `frames` are the stage sets, or the
    extra-pass sets of a method that replays in an extra pass."""
    rows = []
    for stage, frame in enumerate(frames, start=1):
        counts = frame["task"].value_counts()
        for source in tasks[: stage - 1] + ([general] if general else []):
            rows.append((order, method, seed, stage, tasks[stage - 1], source, int(counts.get(source, 0))))
    return pd.DataFrame(rows, columns=artifacts.columns("composition"))


def write_replay(
    frames: list[pd.DataFrame], table: pd.DataFrame, directory, extra: list[pd.DataFrame] | None = None
) -> None:
    """stage1.parquet ... stageT.parquet (extra1.parquet ... with an extra pass) and composition.parquet,
    all or nothing: written into a temporary sibling folder that then replaces `directory`."""
    with atomic_dir(directory) as tmp:
        for stage, frame in enumerate(frames, start=1):
            artifacts.write(frame, "replay_stage", tmp / f"stage{stage}.parquet")
        for stage, frame in enumerate(extra or [], start=1):
            artifacts.write(frame, "extra_pass", tmp / f"extra{stage}.parquet")
        artifacts.write(table, "composition", tmp / "composition.parquet")


def select_replay(inputs: dict, settings: dict, order: str, tasks: list[str], method: str, seed: int, out_dir) -> None:
    """Read the instances and what the method needs (`inputs`: artifact name -> path), select
    every stage's replay set and write the folder."""
    frames = {name: artifacts.read(path, name) for name, path in inputs.items() if name != "instances"}
    data = ReplayData.from_frames(artifacts.read(inputs["instances"], "instances"), tasks, **frames, sources=inputs)
    strategy, replay_settings = load_strategy(method), ReplaySettings.from_config(settings)
    stages = replay_order(data, strategy, replay_settings, order, tasks, method, seed)
    extra = None
    if METHODS[method].extra_pass:
        extra = extra_pass_order(data, strategy, replay_settings, order, tasks, method, seed)
    general = data.general_name if METHODS[method].general else None
    table = composition(extra if extra is not None else stages, order, tasks, method, seed, general)
    write_replay(stages, table, out_dir, extra)
