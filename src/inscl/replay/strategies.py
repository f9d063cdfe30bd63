"""Replay strategies: which earlier examples one stage of a chain replays, and why.

At stage i of an order (tasks 1..i-1 already learned) every strategy but trace_replay spends
the budget alpha = replay_per_task * (i - 1), split into per-task quotas by a quota rule
(uniform, InsCL's distance-weighted one, or TRACE's fraction), then drawn inside each task by a
sampler. Each method names its strategy in inscl.core.methods; all randomness comes from
numpy.random.default_rng(stable_seed(seed, order, method, stage, task)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inscl.core.hashing import stable_seed
from inscl.replay.sampling import (
    Allocation,
    Pick,
    TaskPool,
    allocate,
    exact_floor,
    quota_note,
    sample_insinfo,
    sample_random,
    sample_ranked,
    unit_rows,
)


@dataclass(frozen=True)
class ReplaySettings:
    replay_per_task: int = 200
    trace_fraction: float = 0.1
    prototype_clusters: int | None = None
    insinfo_pool: str = "experiment"
    general_count: int | None = None  # replay.general.count
    general_fraction: float | None = None  # replay.general.fraction

    @classmethod
    def from_config(cls, settings: dict) -> "ReplaySettings":
        """From a method's settings, shaped like the config (`replay.*`, `insinfo.pool`)."""
        replay = settings.get("replay", {})
        values = {
            key: replay[key] for key in ("replay_per_task", "trace_fraction", "prototype_clusters") if key in replay
        }
        general = replay.get("general", {})
        values.update({f"general_{key}": general[key] for key in ("count", "fraction") if key in general})
        if "pool" in settings.get("insinfo", {}):
            values["insinfo_pool"] = settings["insinfo"]["pool"]
        return cls(**values)


@dataclass
class StageContext:
    data: "ReplayData"  # noqa: F821 (inscl.replay.select_replay)
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


# ----------------------------------------------------------------------------- quota rules


class UniformQuotas:
    """The budget split equally over the earlier tasks."""

    def allocate(self, ctx: StageContext, capacities: np.ndarray) -> tuple[Allocation, np.ndarray, str]:
        allocation = allocate(ctx.budget, np.ones(len(capacities)), capacities)
        note = f"uniform quota: budget {ctx.budget} over {len(capacities)} earlier tasks"
        return allocation, np.full(len(capacities), np.nan), note

    def weight_note(self, task: str, current: str, distance: float) -> str:
        return ""


class DynamicQuotas:
    """InsCL's dynamic replay: task j gets floor(alpha * W_j / sum W), the remainder to the largest W_j."""

    def allocate(self, ctx: StageContext, capacities: np.ndarray) -> tuple[Allocation, np.ndarray, str]:
        distances = np.array([ctx.data.distance(task, ctx.current) for task in ctx.earlier])
        allocation = allocate(ctx.budget, distances, capacities)
        note = f"dynamic quota: budget {ctx.budget} x W(task, {ctx.current}) / sum W {distances.sum():.4f}"
        return allocation, distances, note

    def weight_note(self, task: str, current: str, distance: float) -> str:
        return f" with W({task}, {current}) {distance:.4f}"


class FractionQuotas:
    """TRACE: a fixed share of each earlier task's pool (rounded, at least one example)."""

    def allocate(self, ctx: StageContext, capacities: np.ndarray) -> tuple[Allocation, np.ndarray, str]:
        fraction = ctx.settings.trace_fraction
        quotas = np.minimum(np.maximum(1, exact_floor(fraction * capacities + 0.5)), capacities)
        note = f"trace_fraction {fraction} of each earlier task"
        return Allocation(quotas, quotas, int(quotas.sum())), np.full(len(capacities), np.nan), note

    def weight_note(self, task: str, current: str, distance: float) -> str:
        return ""


# ----------------------------------------------------------------------------- strategies


class PerTaskStrategy(Strategy):
    """A quota per earlier task from the quota rule, then a sampler inside each task."""

    quotas = UniformQuotas()

    def sample(self, ctx: StageContext, pool: TaskPool, quota: int, rng) -> Pick:
        raise NotImplementedError

    def select(self, ctx):
        pools = [ctx.data.pools[task] for task in ctx.earlier]
        if not pools:
            return []
        allocation, distances, budget_note = self.quotas.allocate(ctx, np.array([pool.size for pool in pools]))
        if allocation.quotas.sum() < allocation.budget:
            budget_note += f" (only {int(allocation.quotas.sum())} examples available)"
        replays = []
        for k, (task, pool) in enumerate(zip(ctx.earlier, pools)):
            quota = int(allocation.quotas[k])
            pick = (
                self.sample(ctx, pool, quota, ctx.rng(task))
                if quota
                else Pick(np.zeros(0, np.int64), np.zeros(0), "none")
            )
            weight = self.quotas.weight_note(task, ctx.current, distances[k])
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
    """InsCL: distance quotas, InsInfo-guided sampling inside each task."""

    quotas = DynamicQuotas()


class DynamicOnly(RandomSampling):
    quotas = DynamicQuotas()


class TraceReplay(RandomSampling):
    quotas = FractionQuotas()


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
