"""Replay construction: InsCL dynamic replay with InsInfo-guided sampling, its ablations and
the baselines, one small strategy per method behind one interface.

At stage i of an order (tasks 1..i-1 already learned) every method except no_replay and
trace_replay spends the budget alpha = replay_per_task * (i - 1). A quota larger than a task's
pool is capped and the shortfall redistributed over the other tasks. Every row of the result
says why it was chosen (quota, score, reason). All randomness comes from
numpy.random.default_rng(stable_seed(seed, order, method, stage, task)); everything is
vectorised over numpy arrays (no list scans), so SuperNI-sized pools take milliseconds.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .io import InputError, atomic_dir, stable_seed

log = logging.getLogger(__name__)

REPLAY_COLUMNS = [
    ("stage", pa.int64()),
    ("current_task", pa.string()),
    ("method", pa.string()),
    ("quota", pa.int64()),
    ("score", pa.float64()),
    ("distance", pa.float64()),
    ("reason", pa.string()),
]
FLOOR_TOLERANCE = 1e-9  # floor(x) treats x within this of the next integer as that integer


@dataclass(frozen=True)
class ReplaySettings:
    replay_per_task: int = 200
    trace_fraction: float = 0.1
    prototype_clusters: int | None = None
    insinfo_pool: str = "experiment"


# ----------------------------------------------------------------------------- arithmetic


def exact_floor(values: np.ndarray) -> np.ndarray:
    """floor() that is not thrown off by rounding (47.9999999999 -> 48)."""
    return np.floor(np.asarray(values, dtype=np.float64) + FLOOR_TOLERANCE).astype(np.int64)


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """floor(total * w_j / sum w), then the remainder one by one to the largest w_j (ties: the
    earlier entry). All-zero weights count as equal."""
    weights = np.asarray(weights, dtype=np.float64)
    if total <= 0 or len(weights) == 0:
        return np.zeros(len(weights), dtype=np.int64)
    if weights.sum() <= 0:
        weights = np.ones(len(weights))
    shares = exact_floor(total * weights / weights.sum())
    remainder = total - int(shares.sum())
    by_weight = np.lexsort((np.arange(len(weights)), -weights))
    shares[by_weight[:remainder]] += 1
    return shares


@dataclass
class Allocation:
    quotas: np.ndarray  # final quota per task
    initial: np.ndarray  # quota before capping and redistribution
    budget: int

    @property
    def capped(self) -> np.ndarray:
        return self.quotas < self.initial

    @property
    def received(self) -> np.ndarray:
        return np.maximum(self.quotas - self.initial, 0)


def allocate(budget: int, weights, capacities) -> Allocation:
    """Apportion `budget` by `weights`; a quota above its task's capacity is capped and the
    excess apportioned again over the uncapped tasks (by their weights), until it is all placed
    or every task is full."""
    weights = np.asarray(weights, dtype=np.float64)
    capacities = np.asarray(capacities, dtype=np.int64)
    quotas = np.zeros(len(weights), dtype=np.int64)
    open_tasks = np.ones(len(weights), dtype=bool)
    remaining, initial = int(budget), None
    while remaining > 0 and open_tasks.any():
        quotas[open_tasks] += apportion(remaining, weights[open_tasks])
        if initial is None:
            initial = quotas.copy()
        over = quotas > capacities
        remaining = int((quotas - capacities)[over].sum())
        quotas[over] = capacities[over]
        open_tasks &= ~over
    return Allocation(quotas, quotas.copy() if initial is None else initial, int(budget))


def quota_note(allocation: Allocation, index: int) -> str:
    initial, final = int(allocation.initial[index]), int(allocation.quotas[index])
    if final < initial:
        return f"quota {initial} capped at the pool size {final}, {initial - final} redistributed to other tasks"
    if final > initial:
        return f"quota {initial} + {final - initial} redistributed from capped tasks = {final}"
    return f"quota {final}"


# ----------------------------------------------------------------------------- pools


@dataclass
class TaskPool:
    """The training examples of one task, grouped by instruction (sorted by instruction_id,
    then instance_id)."""

    task: str
    rows: np.ndarray  # positions in the instances frame
    instruction_ids: np.ndarray  # distinct instructions, sorted
    counts: np.ndarray  # examples per instruction

    @property
    def size(self) -> int:
        return len(self.rows)

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    @property
    def codes(self) -> np.ndarray:
        """Instruction index of every example."""
        return np.repeat(np.arange(len(self.counts)), self.counts)


def build_pools(instances: pd.DataFrame, tasks, source="instances.parquet") -> dict[str, TaskPool]:
    """TaskPool of the training split of each task."""
    train = np.flatnonzero(instances["split"].to_numpy() == "train")
    ids = instances["instance_id"].to_numpy()[train]
    id_codes, id_names = pd.factorize(ids, sort=True)
    if len(id_names) != len(ids):
        duplicate = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise InputError(source, "duplicate instance_id", record=duplicate, field="instance_id")
    task_codes, task_names = pd.factorize(instances["task"].to_numpy()[train], sort=True)
    instruction_codes, instruction_names = pd.factorize(instances["instruction_id"].to_numpy()[train], sort=True)
    order = np.lexsort((id_codes, instruction_codes, task_codes))
    task_codes, instruction_codes, train = task_codes[order], instruction_codes[order], train[order]
    bounds = np.searchsorted(task_codes, np.arange(len(task_names) + 1))
    index = {name: k for k, name in enumerate(task_names)}
    pools = {}
    for task in tasks:
        if task not in index:
            raise InputError(source, "task has no training examples", record=task, field="task")
        lo, hi = bounds[index[task]], bounds[index[task] + 1]
        codes = instruction_codes[lo:hi]
        firsts = np.flatnonzero(np.diff(codes, prepend=-1))
        pools[task] = TaskPool(
            task, train[lo:hi], np.asarray(instruction_names[codes[firsts]]), np.diff(np.append(firsts, hi - lo))
        )
    return pools


def vector_matrix(vectors) -> np.ndarray:
    """(n, d) float64 matrix from a column of equal-length vectors."""
    if len(vectors) == 0:
        return np.zeros((0, 0))
    return np.stack([np.asarray(v, dtype=np.float64) for v in vectors])


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


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
    ) -> "ReplayData":
        sources = {"instances": "instances.parquet", "distances": "distances.parquet", "insinfo": "insinfo.parquet",
                   "embeddings": "embeddings.parquet", "example_embeddings": "example_embeddings.parquet", **(sources or {})}
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
            insinfo = insinfo.assign(order=insinfo["order"].fillna(""), stage=insinfo["stage"].fillna(0).astype("int64"))
            insinfo = insinfo.set_index(["order", "stage", "task", "instruction_id"])["insinfo"].sort_index()
        return cls(
            instances, build_pools(instances, tasks, sources["instances"]), pairs, insinfo,
            instruction_vectors, example_vectors, sources,
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


# ----------------------------------------------------------------------------- sampling


@dataclass
class Pick:
    positions: np.ndarray  # positions in the pool
    scores: np.ndarray  # score per picked example (nan when the method has none)
    note: str  # how the examples were drawn


def _shuffled_within_instructions(pool: TaskPool, rng) -> tuple[np.ndarray, np.ndarray]:
    """Pool positions grouped by instruction in random order inside each group, and the rank of
    each within its group."""
    # integer code + noise in [0, 0.5): sorting keeps the groups apart and shuffles inside each
    order = np.argsort(pool.codes + 0.5 * rng.random(pool.size))
    rank = np.arange(pool.size) - np.repeat(pool.starts, pool.counts)
    return order, rank


def sample_random(pool: TaskPool, quota: int, rng) -> Pick:
    positions = np.sort(rng.choice(pool.size, size=quota, replace=False))
    return Pick(positions, np.full(quota, np.nan), f"{quota} of {pool.size} examples uniformly at random")


def insinfo_allocation(scores: np.ndarray, counts: np.ndarray, quota: int) -> np.ndarray:
    """max(1, floor(quota * p_k)) examples per instruction, p = normalised InsInfo (uniform when
    every score is 0), capped at the instruction's number of examples."""
    total = scores.sum()
    p = scores / total if total > 0 else np.full(len(scores), 1.0 / len(scores))
    return np.minimum(np.maximum(1, exact_floor(quota * p)), counts)


def sample_insinfo(pool: TaskPool, scores: np.ndarray, quota: int, rng) -> Pick:
    """InsInfo-guided sampling (InsCL). Fewer slots than instructions: the `quota` instructions
    with the highest InsInfo (ties at random), one random example each. Otherwise
    insinfo_allocation per instruction, then random top-up from the unused examples or random
    trim of surplus examples, never an instruction's last one, to exactly `quota`."""
    n_instructions = len(pool.counts)
    order, rank = _shuffled_within_instructions(pool, rng)
    if quota < n_instructions:
        top = np.lexsort((rng.random(n_instructions), -scores))[:quota]
        positions = order[pool.starts[top]]
        note = f"InsInfo top {quota} of {n_instructions} instructions, one example each"
    else:
        allocation = insinfo_allocation(scores, pool.counts, quota)
        planned = int(allocation.sum())
        if planned > quota:
            surplus = allocation - 1
            dropped = rng.choice(int(surplus.sum()), size=planned - quota, replace=False)
            allocation -= np.bincount(np.repeat(np.arange(n_instructions), surplus)[dropped], minlength=n_instructions)
        taken = rank < allocation[pool.codes]
        positions = order[taken]
        if planned < quota:
            rest = order[~taken]
            positions = np.concatenate([positions, rest[rng.choice(len(rest), size=quota - planned, replace=False)]])
        adjust = {True: f", random top-up of {quota - planned}", False: f", random trim of {planned - quota}"}
        note = (
            f"InsInfo-proportional over {n_instructions} instructions: max(1, floor(n*p)) gives {planned}"
            + (adjust[planned < quota] if planned != quota else "")
        )
    positions = np.sort(positions)
    return Pick(positions, scores[pool.codes[positions]], note)


def sample_ranked(pool: TaskPool, priority: np.ndarray, quota: int, rng) -> np.ndarray:
    """Round robin over instructions in `priority` order (priority[k] = rank of instruction k):
    one random example from each in turn, until `quota` are taken."""
    order, rank = _shuffled_within_instructions(pool, rng)
    keys = np.lexsort((priority[pool.codes], rank))
    return np.sort(order[keys[:quota]]) if quota else np.zeros(0, dtype=np.int64)


# ----------------------------------------------------------------------------- strategies


@dataclass
class StageContext:
    data: ReplayData
    settings: ReplaySettings
    order: str
    tasks: list[str]
    method: str
    seed: int
    stage: int

    @property
    def current(self) -> str:
        return self.tasks[self.stage - 1]

    @property
    def earlier(self) -> list[str]:
        return self.tasks[: self.stage - 1]

    @property
    def budget(self) -> int:
        return self.settings.replay_per_task * len(self.earlier)

    def rng(self, *parts) -> np.random.Generator:
        return np.random.default_rng(stable_seed(self.seed, self.order, self.method, self.stage, *parts))


@dataclass
class TaskReplay:
    task: str
    rows: np.ndarray  # positions in the instances frame
    quota: int
    scores: np.ndarray
    distance: float
    reason: str


class Strategy:
    """A replay method: which earlier examples to replay at one stage, and why."""

    def select(self, ctx: StageContext) -> list[TaskReplay]:
        raise NotImplementedError


class NoReplay(Strategy):
    def select(self, ctx):
        return []


class PerTaskStrategy(Strategy):
    """Quotas per earlier task (`dynamic`: by distance to the current task; `uniform`: equal;
    `fraction`: a share of each pool), then a sampler inside each task."""

    quotas = "uniform"

    def sample(self, ctx: StageContext, pool: TaskPool, quota: int, rng) -> Pick:
        raise NotImplementedError

    def select(self, ctx):
        pools = [ctx.data.pools[task] for task in ctx.earlier]
        if not pools:
            return []
        capacities = np.array([pool.size for pool in pools])
        distances = np.full(len(pools), np.nan)
        if self.quotas == "fraction":
            fraction = ctx.settings.trace_fraction
            quotas = np.minimum(np.maximum(1, exact_floor(fraction * capacities + 0.5)), capacities)
            allocation = Allocation(quotas, quotas, int(quotas.sum()))
            budget_note = f"trace_fraction {fraction} of each earlier task"
        elif self.quotas == "dynamic":
            distances = np.array([ctx.data.distance(task, ctx.current) for task in ctx.earlier])
            allocation = allocate(ctx.budget, distances, capacities)
            budget_note = f"dynamic quota: budget {ctx.budget} x W(task, {ctx.current}) / sum W {distances.sum():.4f}"
        else:
            allocation = allocate(ctx.budget, np.ones(len(pools)), capacities)
            budget_note = f"uniform quota: budget {ctx.budget} over {len(pools)} earlier tasks"
        if allocation.quotas.sum() < allocation.budget:
            budget_note += f" (only {int(allocation.quotas.sum())} examples available)"
        replays = []
        for k, (task, pool) in enumerate(zip(ctx.earlier, pools)):
            quota = int(allocation.quotas[k])
            pick = self.sample(ctx, pool, quota, ctx.rng(task)) if quota else Pick(np.zeros(0, np.int64), np.zeros(0), "none")
            weight = f" with W({task}, {ctx.current}) {distances[k]:.4f}" if self.quotas == "dynamic" else ""
            reason = f"{budget_note}{weight}: {quota_note(allocation, k)}; {pick.note}"
            replays.append(TaskReplay(task, pool.rows[pick.positions], quota, pick.scores, distances[k], reason))
        return replays


class RandomSampling(PerTaskStrategy):
    def sample(self, ctx, pool, quota, rng):
        return sample_random(pool, quota, rng)


class InsInfoSampling(PerTaskStrategy):
    def sample(self, ctx, pool, quota, rng):
        scores = ctx.data.insinfo_scores(pool.task, ctx.order, ctx.stage, ctx.settings.insinfo_pool)
        return sample_insinfo(pool, scores, quota, rng)


class InsCL(InsInfoSampling):
    quotas = "dynamic"


class DynamicOnly(RandomSampling):
    quotas = "dynamic"


class TraceReplay(RandomSampling):
    quotas = "fraction"


class PrototypeInstruction(PerTaskStrategy):
    """Examples of the instructions nearest the task's instruction centroid (cosine), one per
    instruction in turn from the nearest."""

    def sample(self, ctx, pool, quota, rng):
        vectors = ctx.data.instruction_matrix(pool.task)
        similarity = vectors @ unit_rows(vectors.mean(axis=0, keepdims=True))[0]
        priority = np.argsort(np.argsort(-similarity, kind="stable"), kind="stable")
        positions = sample_ranked(pool, priority, quota, rng)
        note = f"instructions nearest the centroid of {len(vectors)} instruction embeddings, round robin"
        return Pick(positions, similarity[pool.codes[positions]], note)


class PrototypeData(PerTaskStrategy):
    """k-means over the task's example embeddings (k = prototype_clusters, default the quota);
    the quota is spread evenly over the clusters, each taking the examples nearest its centroid."""

    def sample(self, ctx, pool, quota, rng):
        vectors = ctx.data.example_matrix(pool.task)
        k = min(ctx.settings.prototype_clusters or quota, pool.size)
        labels, centers = self._clusters(ctx, pool.task, vectors, k)
        distance = np.linalg.norm(vectors - centers[labels], axis=1)
        sizes = np.bincount(labels, minlength=k)
        per_cluster = allocate(quota, np.ones(k), sizes).quotas
        order = np.lexsort((distance, labels))
        rank = np.arange(pool.size) - np.repeat(np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
        positions = np.sort(order[rank < per_cluster[labels[order]]])
        similarity = np.einsum("ij,ij->i", unit_rows(vectors[positions]), unit_rows(centers[labels[positions]]))
        return Pick(positions, similarity, f"nearest examples to the centroids of k-means with k = {k}")

    def _clusters(self, ctx, task, vectors, k):
        """k-means of a task does not depend on the stage: computed once per (task, k)."""
        cache_key = ("kmeans", task, k, ctx.seed, ctx.order, ctx.method)
        cache = ctx.data.cache
        if cache_key not in cache:
            from sklearn.cluster import KMeans  # imported here: only this method needs scikit-learn

            random_state = stable_seed(ctx.seed, ctx.order, ctx.method, "kmeans", task, k) % 2**32
            model = KMeans(n_clusters=k, n_init=1, random_state=random_state).fit(vectors)
            cache[cache_key] = (model.labels_.astype(np.int64), model.cluster_centers_)
        return cache[cache_key]


class DiverseInstruction(Strategy):
    """The earlier instructions least similar to the current task's (max cosine to any of its
    instructions), over all earlier tasks together: one example of each in turn, from the least
    similar, until the budget is spent."""

    def select(self, ctx):
        if not ctx.earlier:
            return []
        current = ctx.data.instruction_matrix(ctx.current)
        pools = [ctx.data.pools[task] for task in ctx.earlier]
        similarity = np.concatenate([(ctx.data.instruction_matrix(t) @ current.T).max(axis=1) for t in ctx.earlier])
        owner = np.repeat(np.arange(len(pools)), [len(p.counts) for p in pools])
        counts = np.concatenate([p.counts for p in pools])
        joint = TaskPool("earlier", np.arange(counts.sum()), np.arange(len(counts)), counts)
        priority = np.argsort(np.argsort(similarity, kind="stable"), kind="stable")
        budget = min(ctx.budget, joint.size)
        positions = sample_ranked(joint, priority, budget, ctx.rng("diverse"))
        codes = joint.codes[positions]
        offsets = np.concatenate([[0], np.cumsum([p.size for p in pools])])
        replays = []
        for k, (task, pool) in enumerate(zip(ctx.earlier, pools)):
            mine = owner[codes] == k
            rows = pool.rows[positions[mine] - offsets[k]]
            reason = (
                f"budget {ctx.budget} over all {len(counts)} earlier instructions, least similar to "
                f"{ctx.current}'s first (max cosine), round robin: {int(mine.sum())} from this task"
            )
            replays.append(TaskReplay(task, rows, int(mine.sum()), similarity[codes[mine]], np.nan, reason))
        return replays


STRATEGIES: dict[str, Strategy] = {
    "no_replay": NoReplay(),
    "random": RandomSampling(),
    "inscl": InsCL(),
    "inscl_dynamic_only": DynamicOnly(),
    "inscl_insinfo_only": InsInfoSampling(),
    "prototype_data": PrototypeData(),
    "prototype_instruction": PrototypeInstruction(),
    "diverse_instruction": DiverseInstruction(),
    "trace_replay": TraceReplay(),
}


# ----------------------------------------------------------------------------- assembly


def replay_stage(
    data: ReplayData, settings: ReplaySettings, order: str, tasks, method: str, seed: int, stage: int
) -> pd.DataFrame:
    """The replayed training examples of one stage: instance columns + REPLAY_COLUMNS."""
    if method not in STRATEGIES:
        raise ValueError(f"unknown replay method {method!r}")
    ctx = StageContext(data, settings, order, list(tasks), method, int(seed), int(stage))
    replays = [r for r in STRATEGIES[method].select(ctx) if len(r.rows)]
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


def replay_order(data: ReplayData, settings: ReplaySettings, order: str, tasks, method: str, seed: int) -> list[pd.DataFrame]:
    """The replay set of every stage of the order (stage 1 is empty)."""
    return [replay_stage(data, settings, order, tasks, method, seed, stage) for stage in range(1, len(tasks) + 1)]


def stage_schema(instance_schema: pa.Schema) -> pa.Schema:
    """The arrow schema of a replay stage file: the instance columns, then REPLAY_COLUMNS."""
    return pa.schema(list(instance_schema.remove_metadata()) + [pa.field(n, t) for n, t in REPLAY_COLUMNS])


def write_replay(frames: list[pd.DataFrame], directory, instance_schema: pa.Schema) -> None:
    """Write stage1.parquet ... stageT.parquet into `directory`, all or nothing: the files are
    written into a temporary sibling folder that then replaces `directory`."""
    schema = stage_schema(instance_schema)
    with atomic_dir(directory) as tmp:
        for stage, frame in enumerate(frames, start=1):
            table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
            pq.write_table(table, tmp / f"stage{stage}.parquet")
