"""Replay arithmetic and samplers: quotas (floor + remainder, capped and redistributed), the
training pool of each task grouped by instruction, and the ways of drawing examples from a pool.

Everything is vectorised over numpy arrays (no list scans), so SuperNI-sized pools take
milliseconds. Every draw takes an explicit numpy Generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from inscl.core.io import InputError

FLOOR_TOLERANCE = 1e-9  # floor(x) treats x within this of the next integer as that integer


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
        note = f"InsInfo-proportional over {n_instructions} instructions: max(1, floor(n*p)) gives {planned}" + (
            adjust[planned < quota] if planned != quota else ""
        )
    positions = np.sort(positions)
    return Pick(positions, scores[pool.codes[positions]], note)


def sample_ranked(pool: TaskPool, priority: np.ndarray, quota: int, rng) -> np.ndarray:
    """Round robin over instructions in `priority` order (priority[k] = rank of instruction k):
    one random example from each in turn, until `quota` are taken."""
    order, rank = _shuffled_within_instructions(pool, rng)
    keys = np.lexsort((priority[pool.codes], rank))
    return np.sort(order[keys[:quota]]) if quota else np.zeros(0, dtype=np.int64)
