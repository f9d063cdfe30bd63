"""The batches of a job: which examples make each optimizer step, each rank's share of a step, and
its micro-batches packed up to a token cap.

The plan depends on the examples, `training.batch_size`, the epochs and the seed only: a step
holds the same examples whatever the GPU count or `training.micro_batch_tokens`, and since the
loss of a step is the mean over its answer tokens, how a step is split changes the result by
float rounding at most.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np
import torch

from inscl.core.hashing import stable_seed
from inscl.training import distributed
from inscl.training.examples import IGNORE_INDEX, Example


def step_count(total_examples: int, batch_size: int) -> int:
    """Optimizer steps over `total_examples`: full batches, and the remainder a step of its own when it
    is at least half a batch (otherwise it joins the last step). No example is dropped."""
    full, rest = divmod(total_examples, batch_size)
    return max(1, full + (2 * rest >= batch_size))


def example_stream(n_examples: int, epochs: float, seed: int) -> np.ndarray:
    """The examples of a job in training order: a fresh seeded permutation per epoch, cut after
    round(epochs x n_examples) examples (fractional epochs allowed)."""
    total = max(1, round(epochs * n_examples))
    permutations = [
        np.random.default_rng(stable_seed(seed, "epoch", epoch)).permutation(n_examples)
        for epoch in range(-(-total // n_examples))
    ]
    return np.concatenate(permutations)[:total]


@dataclass
class Plan:
    """The example indices of every optimizer step, and what each step's loss is averaged over."""

    steps: list[np.ndarray]
    n_examples: int
    targets: list[int] = field(default_factory=list)  # answer tokens of each step
    stage_steps: int | None = None  # with an extra pass (append_pass): the steps of the stage's own epochs

    def epoch_after(self, step: int) -> float:
        """Epochs completed once step `step` (0-based) is done; the extra pass counts as one more epoch."""
        own = self.steps[: self.stage_steps]
        if step < len(own):
            return sum(len(s) for s in own[: step + 1]) / self.n_examples
        extra = self.steps[len(own) :]
        done = sum(len(s) for s in extra[: step + 1 - len(own)])
        return sum(len(s) for s in own) / self.n_examples + done / sum(len(s) for s in extra)

    def in_extra_pass(self, step: int) -> bool:
        return self.stage_steps is not None and step >= self.stage_steps


def plan_training(examples: list[Example], batch_size: int, epochs: float, seed: int) -> Plan:
    if not examples:
        raise ValueError("no training examples")
    stream = example_stream(len(examples), epochs, seed)
    count = step_count(len(stream), batch_size)
    bounds = [k * batch_size for k in range(count)] + [len(stream)]
    steps = [stream[start:end] for start, end in zip(bounds[:-1], bounds[1:])]
    targets = np.array([e.targets for e in examples])
    return Plan(steps, len(examples), [int(targets[s].sum()) for s in steps])


def append_pass(plan: Plan, examples: list[Example], first: int, batch_size: int) -> Plan:
    """`plan`, then one pass over examples[first:] in their order (TRACE's extra epoch after a stage),
    in steps of `batch_size` examples, the last partial batch handled as a stage's (step_count)."""
    stream = np.arange(first, len(examples))
    if not len(stream):
        return plan
    count = step_count(len(stream), batch_size)
    bounds = [k * batch_size for k in range(count)] + [len(stream)]
    extra = [stream[start:end] for start, end in zip(bounds[:-1], bounds[1:])]
    targets = [sum(examples[i].targets for i in step) for step in extra]
    return Plan(plan.steps + extra, plan.n_examples, plan.targets + targets, stage_steps=len(plan.steps))


def pack(lengths, capacity: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing: groups of positions into `lengths` whose sum is at most
    `capacity` (an item longer than that gets a group of its own)."""
    lengths = np.asarray(lengths)
    groups: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, group), sorted
    for index in np.argsort(-lengths, kind="stable"):
        length = int(lengths[index])
        slot = bisect.bisect_left(free, (length, -1))
        if slot == len(free):
            groups.append([int(index)])
            remaining, group = capacity - length, len(groups) - 1
        else:
            remaining, group = free.pop(slot)
            groups[group].append(int(index))
            remaining -= length
        if remaining > 0:
            bisect.insort(free, (remaining, group))
    return groups


def split_over_ranks(step: np.ndarray, lengths: np.ndarray, world_size: int) -> list[list[int]]:
    """A step's examples dealt to the ranks, longest first, each to the rank with the fewest tokens."""
    shares: list[list[int]] = [[] for _ in range(world_size)]
    tokens = [0] * world_size
    for index in sorted(step.tolist(), key=lambda i: (-lengths[i], i)):
        rank = tokens.index(min(tokens))
        shares[rank].append(index)
        tokens[rank] += int(lengths[index])
    return shares


def rank_share(step: np.ndarray, lengths: np.ndarray, ranks: distributed.Ranks, micro_batch_tokens: int):
    """(example indices, weight) of each micro-batch this rank runs in a step. Every rank runs the same
    number of passes (each pass ends in collectives); a rank short of data repeats one with weight 0."""
    per_rank = [
        [[share[i] for i in group] for group in pack(lengths[share], micro_batch_tokens)] if share else []
        for share in split_over_ranks(step, lengths, ranks.world_size)
    ]
    passes = max(len(batches) for batches in per_rank)
    mine = per_rank[ranks.rank]
    filler = mine[0] if mine else [int(step[0])]
    return [(batch, 1.0) for batch in mine] + [(filler, 0.0)] * (passes - len(mine))


def collate(indices: list[int], examples: list[Example], pad_id: int, packed: bool, slack: float = 1.0) -> dict:
    """The tensors of one micro-batch."""
    return collate_packed(indices, examples, pad_id, slack) if packed else collate_padded(indices, examples, pad_id)


def buckets(sizes: list[int], slack: float) -> list[list[int]]:
    """Positions into `sizes`, longest first, in groups of similar length: a new group whenever padding
    every member to the group's longest would exceed `slack` x its tokens (slack 1: equal lengths)."""
    groups: list[list[int]] = []
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        group = groups[-1] if groups else []
        if group and (len(group) + 1) * sizes[group[0]] <= slack * (sum(sizes[j] for j in group) + sizes[i]):
            group.append(i)
        else:
            groups.append([i])
    return groups


def collate_packed(indices: list[int], examples: list[Example], pad_id: int, slack: float = 1.0) -> dict:
    """One row: each example in a slot of its own, position ids restarting at 0 in each slot.

    Slots come in buckets of examples of similar length (`buckets`), each slot as long as its
    bucket's longest example, the rest padding (loss-free; under causal attention no token of the
    example sees it). With slack 1 the row is padding-free. `cu_seq_lens` (slot boundaries,
    flash-attention's varlen format) and `buckets` ((count, slot length) per bucket) tell the
    attention kernels where examples start (inscl.training.attention).
    """
    sizes = [len(examples[i]) for i in indices]
    groups = buckets(sizes, slack)
    ids, labels, slots = [], [], []
    for group in groups:
        width = sizes[group[0]]
        for position in group:
            example, pad = examples[indices[position]], width - sizes[position]
            ids += [example.input_ids, [pad_id] * pad]
            labels += [example.labels, [IGNORE_INDEX] * pad]
            slots.append(width)
    bounds = np.concatenate([[0], np.cumsum(slots)])
    return {
        "input_ids": torch.from_numpy(np.concatenate(ids).astype(np.int64))[None],
        "labels": torch.from_numpy(np.concatenate(labels).astype(np.int64))[None],
        "position_ids": torch.from_numpy(np.concatenate([np.arange(n) for n in slots]))[None],
        "cu_seq_lens": torch.from_numpy(bounds.astype(np.int32)),
        "max_length": max(slots),
        "buckets": [(len(group), sizes[group[0]]) for group in groups],
    }


def collate_padded(indices: list[int], examples: list[Example], pad_id: int) -> dict:
    """One right-padded row per example (the unpacked baseline)."""
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
