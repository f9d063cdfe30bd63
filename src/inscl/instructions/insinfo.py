"""InsInfo (InsCL): InsInfo(x) = sum over x's distinct canonical tags t of ln(N / f_t), where N is
the number of distinct instructions in the pool and f_t how many of them carry t."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from inscl.core import artifacts
from inscl.core.io import InputError

log = logging.getLogger(__name__)


def insinfo_scores(tag_lists: pd.Series) -> pd.DataFrame:
    """InsInfo of every instruction of a pool. `tag_lists`: canonical tags indexed by instruction_id
    (one entry per distinct instruction; an empty list scores 0).
    Returns a frame indexed by instruction_id with n_tags and insinfo."""
    n_pool = len(tag_lists)
    pairs = tag_lists.map(lambda tags: sorted(set(tags))).explode().dropna()
    frequency = pairs.value_counts()
    information = np.log(n_pool / pairs.map(frequency).astype("float64"))
    scores = pd.DataFrame(
        {
            "n_tags": pairs.groupby(level=0).size().reindex(tag_lists.index, fill_value=0).astype("int64"),
            "insinfo": information.groupby(level=0).sum().reindex(tag_lists.index, fill_value=0.0).astype("float64"),
        }
    )
    scores.index.name = "instruction_id"
    return scores


def train_instructions(instances: pd.DataFrame, tasks, source="instances.parquet") -> pd.DataFrame:
    """Distinct (task, instruction_id) of the training examples of `tasks`."""
    train = instances.loc[instances["split"] == "train", ["task", "instruction_id"]].drop_duplicates()
    for task in tasks:
        if not (train["task"] == task).any():
            raise InputError(source, "task has no training examples", record=task, field="task")
    return train[train["task"].isin(list(tasks))].sort_values(["task", "instruction_id"]).reset_index(drop=True)


def compute_insinfo(
    tags: pd.DataFrame,
    instances: pd.DataFrame,
    experiment_tasks: list[str],
    orders: dict[str, list[str]],
    pool: str = "experiment",
    tags_source="tags.parquet",
    instances_source="instances.parquet",
) -> pd.DataFrame:
    """InsInfo rows (order, stage, task, instruction_id, n_tags, insinfo).

    pool `experiment`: one pool of every experiment task; order and stage are null.
    pool `cumulative`: per order and stage k, the pool is the order's first k tasks (`orders` is
    read only for this pool).
    """
    if pool not in ("experiment", "cumulative"):
        raise ValueError(f"unknown InsInfo pool {pool!r}")
    if tags["instruction_id"].duplicated().any():
        duplicate = tags["instruction_id"][tags["instruction_id"].duplicated()].iloc[0]
        raise InputError(tags_source, "duplicate instruction_id", record=duplicate, field="instruction_id")
    members = train_instructions(instances, experiment_tasks, instances_source)
    tag_lists = pd.Series(list(tags["tags"]), index=tags["instruction_id"]).map(lambda t: [] if t is None else list(t))
    missing = ~members["instruction_id"].isin(tag_lists.index)
    if missing.any():
        raise InputError(tags_source, "instruction has no tags row", record=members["instruction_id"][missing].iloc[0])

    def pool_rows(tasks, order, stage) -> pd.DataFrame:
        rows = members[members["task"].isin(tasks)]
        scores = insinfo_scores(tag_lists.loc[rows["instruction_id"].unique()])
        rows = rows.join(scores, on="instruction_id")
        return rows.assign(order=order, stage=stage)

    if pool == "experiment":
        frames = [pool_rows(experiment_tasks, None, None)]
    else:
        frames = [
            pool_rows(tasks[:stage], name, stage)
            for name, tasks in orders.items()
            for stage in range(1, len(tasks) + 1)
        ]
    result = pd.concat(frames, ignore_index=True)[artifacts.columns("insinfo")]
    result["order"] = result["order"].astype("str").where(result["order"].notna())
    result["stage"] = result["stage"].astype("Int64")
    log.info("InsInfo (%s pool): %d rows, mean %.3f", pool, len(result), result["insinfo"].mean())
    return result
