"""Replay construction at SuperNI scale: the vectorised `inscl` strategy vs a straightforward
list-based implementation of the same algorithm (lists scanned with `in` / `remove`, the shape of
the reference code), side by side.

    .venv/bin/python benchmarks/replay.py [--tasks 16 --instructions 50 --examples 20000 --replay-per-task 200]

The list-based run stops at --reference-limit seconds; its time is then extrapolated from the
stages it finished and labelled as such.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from inscl.replay.select_replay import ReplayData, ReplaySettings, replay_order, write_replay

INSTANCE_SCHEMA = pa.schema(
    [(name, pa.string()) for name in ("task", "split", "instance_id", "instruction_id", "instruction", "input")]
    + [("output", pa.list_(pa.string()))]
    + [(name, pa.string()) for name in ("source", "source_task", "source_file")]
)


def synthetic(n_tasks: int, n_instructions: int, n_examples: int, seed: int = 0):
    """Instances, InsInfo and distances of an order of n_tasks tasks."""
    rng = np.random.default_rng(seed)
    tasks = [f"task{t:02d}" for t in range(n_tasks)]
    frames, insinfo = [], []
    for task in tasks:
        weights = rng.dirichlet(np.full(n_instructions, 2.0))
        per_instruction = 1 + rng.multinomial(n_examples - n_instructions, weights)
        instruction = np.repeat([f"{task}-i{k:03d}" for k in range(n_instructions)], per_instruction)
        frames.append(pd.DataFrame({"task": task, "instruction_id": instruction}))
        insinfo.append(
            pd.DataFrame(
                {
                    "task": task,
                    "instruction_id": [f"{task}-i{k:03d}" for k in range(n_instructions)],
                    "insinfo": rng.gamma(4.0, 2.0, n_instructions),
                }
            )
        )
    instances = pd.concat(frames, ignore_index=True)
    instances["split"] = "train"
    instances["instance_id"] = [f"ex{k:07d}" for k in range(len(instances))]
    instances["instruction"] = "Instruction " + instances["instruction_id"]
    instances["input"] = "input " + instances["instance_id"]
    instances["output"] = [["answer"]] * len(instances)
    instances["source"], instances["source_task"], instances["source_file"] = "synthetic", instances["task"], "-"
    insinfo = pd.concat(insinfo, ignore_index=True).assign(order=None, stage=None, n_tags=3)
    upper = rng.uniform(0.2, 1.0, (n_tasks, n_tasks))
    pairs = [
        (a, b, float(upper[min(i, j), max(i, j)])) for i, a in enumerate(tasks) for j, b in enumerate(tasks) if i != j
    ]
    distances = pd.DataFrame(pairs, columns=["task_a", "task_b", "distance"])
    return tasks, instances, insinfo, distances


def reference_inscl(
    examples: list[dict], tasks, insinfo: dict, distances: dict, replay_per_task: int, seed: int, limit: float
):
    """InsCL replay, list based: pools and instruction groups found by scanning lists, duplicates
    avoided with `in`, trimming with `remove`. Returns ({(stage, task): n}, finished stages, seconds)."""
    rnd = random.Random(seed)
    counts, start = {}, time.perf_counter()
    for stage in range(2, len(tasks) + 1):
        if time.perf_counter() - start > limit:
            return counts, stage - 1, time.perf_counter() - start
        current, earlier = tasks[stage - 1], tasks[: stage - 1]
        alpha = replay_per_task * len(earlier)
        weights = [distances[(task, current)] for task in earlier]
        quotas = [math.floor(alpha * w / sum(weights) + 1e-9) for w in weights]
        ranked = sorted(range(len(earlier)), key=lambda k: (-weights[k], k))
        for k in ranked[: alpha - sum(quotas)]:
            quotas[k] += 1
        for task, quota in zip(earlier, quotas):
            pool = [e for e in examples if e["task"] == task]
            instructions = []
            for e in pool:
                if e["instruction_id"] not in instructions:
                    instructions.append(e["instruction_id"])
            scores = [insinfo[(task, i)] for i in instructions]
            selected = []
            if quota < len(instructions):
                top = sorted(range(len(instructions)), key=lambda k: -scores[k])[:quota]
                for k in top:
                    selected.append(rnd.choice([e for e in pool if e["instruction_id"] == instructions[k]]))
            else:
                total = sum(scores)
                for instruction, score in zip(instructions, scores):
                    members = [e for e in pool if e["instruction_id"] == instruction]
                    n = min(max(1, math.floor(quota * score / total + 1e-9)), len(members))
                    selected += rnd.sample(members, n)
                while len(selected) < quota:
                    e = rnd.choice(pool)
                    if e not in selected:
                        selected.append(e)
                while len(selected) > quota:
                    e = rnd.choice(selected)
                    if sum(1 for s in selected if s["instruction_id"] == e["instruction_id"]) > 1:
                        selected.remove(e)
            counts[(stage, task)] = len(selected)
    return counts, len(tasks), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--instructions", type=int, default=50)
    parser.add_argument("--examples", type=int, default=20_000, help="training examples per task")
    parser.add_argument("--replay-per-task", type=int, default=200)
    parser.add_argument("--reference-limit", type=float, default=300.0, help="seconds for the list-based run")
    args = parser.parse_args()

    tasks, instances, insinfo, distances = synthetic(args.tasks, args.instructions, args.examples)
    settings = ReplaySettings(replay_per_task=args.replay_per_task)
    print(
        f"{args.tasks} tasks x {args.instructions} instructions x {args.examples} training examples "
        f"({len(instances):,} instances), replay_per_task {args.replay_per_task}, {args.tasks - 1} replay stages"
    )

    start = time.perf_counter()
    data = ReplayData.from_frames(instances, tasks, distances, insinfo)
    indexed = time.perf_counter() - start
    frames = replay_order(data, settings, "bench", tasks, "inscl", 0)
    built = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        write_replay(frames, Path(folder) / "seed0", INSTANCE_SCHEMA)
    written = time.perf_counter() - start
    ours = {
        (stage, task): n for stage, frame in enumerate(frames, 1) for task, n in frame.groupby("task").size().items()
    }
    print(
        f"vectorised inscl : index pools {indexed:6.2f} s | all stages {built:6.2f} s | + write parquet {written:6.2f} s"
        f"  (target < 5 s)  replayed {sum(len(f) for f in frames):,} rows"
    )

    examples = instances[["task", "instance_id", "instruction_id", "instruction", "input"]].to_dict("records")
    scores = dict(zip(zip(insinfo["task"], insinfo["instruction_id"]), insinfo["insinfo"]))
    pairs = dict(zip(zip(distances["task_a"], distances["task_b"]), distances["distance"]))
    counts, finished, seconds = reference_inscl(
        examples, tasks, scores, pairs, args.replay_per_task, 0, args.reference_limit
    )
    if finished == len(tasks):
        print(f"list-based inscl : all stages {seconds:6.2f} s  -> {seconds / built:.0f}x slower")
    else:
        done = sum(stage - 1 for stage in range(2, finished + 1))
        total = sum(stage - 1 for stage in range(2, len(tasks) + 1))
        estimate = seconds * total / max(done, 1)
        print(
            f"list-based inscl : stopped at the {args.reference_limit:.0f} s limit after stage {finished} "
            f"({done} of {total} task selections) in {seconds:.1f} s; extrapolated all stages ~{estimate:.0f} s "
            f"-> ~{estimate / built:.0f}x slower"
        )
    agree = all(ours.get(key, 0) == n for key, n in counts.items())
    print(f"per-(stage, task) quotas agree between the two: {agree} ({len(counts)} compared)")
    sys.exit(0 if agree else 1)


if __name__ == "__main__":
    main()
