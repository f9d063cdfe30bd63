"""Which tasks a run is scored on, and how its prediction work is split into jobs. Stdlib only: the
Snakefile imports this at start-up.

- `evaluated_tasks`: under ``evaluation.tasks: all`` every experiment task (a single-task reference:
  its own task); under ``seen`` the tasks a model has trained on (a chain stage k: the first k tasks of
  its order; the base model: none), as TRACE and InsCL evaluate.
- `shard_names`: ``shard_by: run`` = no shards (the evaluate job predicts everything); ``task`` = one
  shard per task (named after it); ``examples`` = ceil(max_test_per_task / shard_examples) shards per
  task, ``<task>.part<i>``, shard i holding the task's selected test rows i*N .. (i+1)*N - 1.
"""

from __future__ import annotations

import math

PART = ".part"


def evaluated_tasks(run, orders: dict, experiment_tasks: list[str], which: str = "all") -> list[str]:
    """The tasks scored for `run` (an inscl.core.runs.Run)."""
    if run.kind == "single_task":
        return [run.task]
    if which == "all" or run.kind == "multitask":
        return list(experiment_tasks)
    if run.kind == "chain":
        return list(orders[run.order][: run.stage])
    return []  # seen: the base model has seen no task


def shard_names(tasks: list[str], shard_by: str, shard_examples: int, max_test_per_task) -> list[str]:
    if shard_by == "run":
        return []
    if shard_by == "task":
        return list(tasks)
    if max_test_per_task is None:
        raise ValueError("evaluation.shard_by: examples needs evaluation.max_test_per_task (the shards per task)")
    parts = math.ceil(max_test_per_task / shard_examples)
    return [f"{task}{PART}{i}" for task in tasks for i in range(parts)]


def parse_shard(name: str) -> tuple[str, int | None]:
    """`<task>` -> (task, None); `<task>.part<i>` -> (task, i)."""
    task, sep, part = name.rpartition(PART)
    if sep and part.isdigit():
        return task, int(part)
    return name, None
