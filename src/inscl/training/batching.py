"""The batches of a job: examples packed into rows (or padded), micro-batches in a seeded order per
epoch, the micro-batches of each optimizer step, and each rank's share of a step."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from inscl.core.hashing import stable_seed
from inscl.training import distributed
from inscl.training.examples import IGNORE_INDEX, Example


def pack_rows(lengths, row_length: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing of examples into rows of at most `row_length` tokens."""
    lengths = np.asarray(lengths)
    if len(lengths) and lengths.max() > row_length:
        raise ValueError(f"an example of {lengths.max()} tokens does not fit a row of {row_length}")
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, row index), sorted
    for index in np.argsort(-lengths, kind="stable"):
        length = int(lengths[index])
        slot = bisect.bisect_left(free, (length, -1))
        if slot == len(free):
            rows.append([int(index)])
            remaining, row = row_length - length, len(rows) - 1
        else:
            capacity, row = free.pop(slot)
            rows[row].append(int(index))
            remaining = capacity - length
        if remaining > 0:
            bisect.insort(free, (remaining, row))
    return rows


def collate_packed(rows: list[list[int]], examples: list[Example], pad_id: int) -> dict:
    """Rows of packed examples. Position ids restart at 0 for every example (and for the padding
    tail), which makes transformers build a block-diagonal causal mask (SDPA) or use the varlen
    kernel (flash attention): no token attends across examples."""
    width = max(sum(len(examples[i]) for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        offset = 0
        for i in row:
            n = len(examples[i])
            input_ids[r, offset : offset + n] = torch.tensor(examples[i].input_ids)
            labels[r, offset : offset + n] = torch.tensor(examples[i].labels)
            position_ids[r, offset : offset + n] = torch.arange(n)
            offset += n
        position_ids[r, offset:] = torch.arange(width - offset)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "attention_mask": None}


def collate_padded(indices: list[int], examples: list[Example], pad_id: int) -> dict:
    """A plain right-padded batch, one example per row (the unpacked baseline)."""
    width = max(len(examples[i]) for i in indices)
    input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    labels = torch.full((len(indices), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
    for r, i in enumerate(indices):
        n = len(examples[i])
        input_ids[r, :n] = torch.tensor(examples[i].input_ids)
        labels[r, :n] = torch.tensor(examples[i].labels)
        attention_mask[r, :n] = 1
    position_ids = torch.arange(width).expand(len(indices), width)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "attention_mask": attention_mask}


@dataclass
class Plan:
    """Every micro-batch of a job, in order, and which ones make up each optimizer step."""

    packed: bool
    micro_batches: list  # packed: list of rows (lists of example indices); padded: list of example indices
    steps: list[range]
    batches_per_epoch: int
    row_length: int
    step_targets: list[int] = field(default_factory=list)  # answer tokens of each step, over all ranks

    def epoch_of(self, micro_batch: int) -> float:
        return micro_batch / self.batches_per_epoch

    def example_indices(self, micro_batch: int) -> list[int]:
        batch = self.micro_batches[micro_batch]
        return [i for row in batch for i in row] if self.packed else list(batch)


def plan_training(examples: list[Example], training: dict, epochs: float, seed: int, world_size: int = 1) -> Plan:
    """Deterministic batches for the whole job.

    Packed: rows as long as the longest example (rounded up to 8) are filled best-fit-decreasing
    once, `batch_tokens // row_length` rows make a micro-batch, and the rows are reshuffled each
    epoch. Padded: examples are shuffled each epoch and cut into batches holding about
    `batch_tokens` real tokens. An optimizer step takes `grad_accum x world_size` micro-batches.
    """
    if not examples:
        raise ValueError("no training examples")
    lengths = np.array([len(e) for e in examples])
    batch_tokens = int(training["batch_tokens"])
    packed = bool(training.get("packing", True))
    row_length = int(math.ceil(lengths.max() / 8) * 8)
    if packed:
        rows = pack_rows(lengths, row_length)
        per_batch = max(1, batch_tokens // row_length)
        units = rows
    else:
        per_batch = max(1, round(batch_tokens / lengths.mean()))
        units = list(range(len(examples)))
    batches_per_epoch = math.ceil(len(units) / per_batch)
    total = max(1, round(epochs * batches_per_epoch))
    micro_batches: list = []
    epoch = 0
    while len(micro_batches) < total:
        order = np.random.default_rng(stable_seed(seed, "epoch", epoch)).permutation(len(units))
        shuffled = [units[k] for k in order]
        micro_batches += [shuffled[k : k + per_batch] for k in range(0, len(shuffled), per_batch)]
        epoch += 1
    micro_batches = micro_batches[:total]
    group = int(training.get("grad_accum", 1)) * world_size
    steps = [range(k, min(k + group, total)) for k in range(0, total, group)]
    plan = Plan(packed, micro_batches, steps, batches_per_epoch, row_length)
    target_counts = np.array([sum(1 for t in e.labels if t != IGNORE_INDEX) for e in examples])
    plan.step_targets = [int(sum(target_counts[plan.example_indices(m)].sum() for m in step)) for step in steps]
    return plan


def collate(plan: Plan, micro_batch: int, examples: list[Example], pad_id: int) -> dict:
    """The tensors of one micro-batch of the plan."""
    batch = plan.micro_batches[micro_batch]
    return collate_packed(batch, examples, pad_id) if plan.packed else collate_padded(batch, examples, pad_id)


def rank_share(step: range, ranks: distributed.Ranks) -> list[tuple[int, float]]:
    """(micro-batch, weight) pairs this rank runs in a step. Every rank runs the same number of
    passes (as DDP needs); a rank short of data repeats one with weight 0."""
    mine = list(step)[ranks.rank :: ranks.world_size]
    passes = math.ceil(len(step) / ranks.world_size)
    return [(m, 1.0) for m in mine] + [(step[0], 0.0)] * (passes - len(mine))
