"""Ingestion: SuperNI / TRACE / JSONL / demo sources -> one instance table, a task summary and a
report of everything a filter dropped.

Every source yields rows with the columns of the instances artifact. Sources without a test split
(SuperNI, JSONL) are split per source task by ranking a hash of the instance id, so the split is
stable and independent of file order. Caps per experiment task keep the instances with the
smallest hash, again independent of order. What a filter removes (a non-English source task, the
examples a cap cuts, an instruction left with none) is logged and written as dropped rows; a task
that a filter leaves without training or test examples fails naming the filter. Bad input raises
InputError naming file, record and field.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import pandas as pd

from inscl.core import artifacts
from inscl.core.hashing import content_hash, stable_seed
from inscl.core.io import InputError
from inscl.data.demo import load_demo
from inscl.data.jsonl import load_jsonl
from inscl.data.rows import dropped_row
from inscl.data.superni import load_superni, named
from inscl.data.trace import load_trace

log = logging.getLogger(__name__)

LOADERS = {"demo": load_demo, "superni": load_superni, "trace": load_trace, "jsonl": load_jsonl}
CAP_KEYS = {"train": "max_train_per_task", "test": "max_test_per_task"}


class Ingested(NamedTuple):
    instances: pd.DataFrame
    tasks: pd.DataFrame
    dropped: pd.DataFrame


def _hash_keys(ids, *parts) -> np.ndarray:
    return np.fromiter((stable_seed(*parts, i) for i in ids), dtype=np.int64, count=len(ids))


def assign_splits(df: pd.DataFrame, test_fraction: float, split_seed: int) -> pd.DataFrame:
    """Split rows without a split, per (source, source_task): the round(n * test_fraction) rows with
    the smallest hash of (split_seed, instance_id) go to test; with n >= 2 each side keeps at least one."""
    todo = df["split"].isna()
    if not todo.any():
        return df
    df = df.copy()
    part = df.loc[todo, ["source", "source_task", "instance_id"]].copy()
    part["key"] = _hash_keys(part["instance_id"].tolist(), split_seed, "split")
    groups = part.groupby(["source", "source_task"], sort=False)
    rank = groups["key"].rank(method="first").astype(int) - 1
    size = groups["key"].transform("size")
    n_test = (size * test_fraction).round().astype(int)
    n_test = n_test.where(size < 2, n_test.clip(lower=1)).clip(upper=(size - 1).clip(lower=0))
    df.loc[todo, "split"] = np.where(rank < n_test, "test", "train")
    return df


def apply_caps(
    df: pd.DataFrame, max_train: int | None, max_test: int | None, split_seed: int
) -> tuple[pd.DataFrame, list[dict]]:
    """Keep at most max_train / max_test rows per task: those with the smallest hash of the id.
    Returns the kept rows and a dropped row per (task, source task, instruction, split) that lost examples.
    The eval split is not capped."""
    caps = {"train": max_train, "test": max_test}
    if all(c is None for c in caps.values()):
        return df, []
    key = pd.Series(_hash_keys(df["instance_id"].tolist(), split_seed, "cap"), index=df.index)
    rank = key.groupby([df["task"], df["split"]]).rank(method="first") - 1
    cap = df["split"].map(lambda s: caps.get(s)).astype("float64").fillna(np.inf)
    kept = rank < cap
    by = ["task", "source", "source_task", "source_file", "instruction_id", "split"]
    counts = df.assign(kept=kept).groupby(by, sort=False, dropna=False)["kept"].agg(["sum", "size"]).reset_index()
    dropped = []
    for row in counts[counts["sum"] < counts["size"]].itertuples(index=False):
        n_kept, n = int(row.sum), int(row.size)
        reason = f"cap of {caps[row.split]} {row.split} examples per task: kept {n_kept} of this instruction's {n}"
        if n_kept == 0:
            reason += f"; the instruction is gone from the {row.split} split"
        dropped.append(
            dropped_row(
                row.source, row.source_file, row.source_task, row.task, CAP_KEYS[row.split], reason,
                n - n_kept, n_kept, row.split, row.instruction_id,
            )
        )  # fmt: skip
    for split, cap_key in CAP_KEYS.items():
        lost = [d for d in dropped if d["split"] == split]
        if lost:
            gone = [f"{d['task']}/{d['source_task']}" for d in lost if d["n_kept"] == 0]
            log.info(
                "%s %s dropped %d %s examples of %d tasks",
                cap_key,
                caps[split],
                sum(d["n_dropped"] for d in lost),
                split,
                len({d["task"] for d in lost}),
            )
            if gone:
                log.warning(
                    "%s removed every %s example of %d instructions: %s", cap_key, split, len(gone), named(gone)
                )
    return df[kept], dropped


def summarize_tasks(df: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment task, in order of first appearance."""
    rows = []
    for task, part in df.groupby("task", sort=False):
        rows.append(
            {
                "task": task,
                "source": ",".join(dict.fromkeys(part["source"])),
                "n_train": int((part["split"] == "train").sum()),
                "n_eval": int((part["split"] == "eval").sum()),
                "n_test": int((part["split"] == "test").sum()),
                "n_instructions": int(part["instruction_id"].nunique()),
            }
        )
    return pd.DataFrame(rows, columns=artifacts.columns("tasks"))


def check_splits(before_caps: pd.DataFrame, tasks: pd.DataFrame, data: dict) -> None:
    """Every task keeps training and test examples; if not, name the setting that emptied it."""
    source_index = {s["name"]: i for i, s in enumerate(data["sources"])}
    for row in tasks.itertuples():
        for split, label in (("train", "training"), ("test", "test")):
            if getattr(row, f"n_{split}") > 0:
                continue
            had = int(((before_caps["task"] == row.task) & (before_caps["split"] == split)).sum())
            if had:
                cap_key = CAP_KEYS[split]
                problem = f"task '{row.task}' has no {label} examples left after {cap_key} {data.get(cap_key)}"
                raise InputError("config", problem, field=f"data.{cap_key}")
            total = int((before_caps["task"] == row.task).sum())
            problem = f"task '{row.task}' has no {label} examples after splitting ({total} examples in all)"
            raise InputError("config", problem, field=f"data.sources[{source_index[row.source]}]")


def check_orders(tasks: pd.DataFrame, orders: dict) -> None:
    """Every task named in an order must have been ingested."""
    known = list(tasks["task"])
    for name, order in (orders or {}).items():
        for i, task in enumerate(order):
            if task not in known:
                raise InputError(
                    "config",
                    f"task '{task}' is not produced by any data source (ingested tasks: {', '.join(known)})",
                    record=i,
                    field=f"orders.{name}",
                )


def ingest(data: dict, orders: dict | None = None, base_dir=".") -> Ingested:
    """Load every configured source; return (instances, tasks, dropped) as described in docs/artifacts.md."""
    frames = []
    dropped: list[dict] = []
    task_source: dict[str, str] = {}
    names: set[str] = set()
    for i, source in enumerate(data["sources"]):
        key = f"data.sources[{i}]"
        if source["name"] in names:
            raise InputError("config", f"duplicate source name '{source['name']}'", field=f"{key}.name")
        names.add(source["name"])
        loaded = LOADERS[source["type"]](source, base_dir=base_dir, key=key)
        if not loaded.rows:
            raise InputError("config", f"source '{source['name']}' yields no instances", field=key)
        frame = pd.DataFrame(loaded.rows)
        for task in dict.fromkeys(frame["task"]):
            if task in task_source:
                raise InputError(
                    "config",
                    f"task '{task}' is produced by both sources '{task_source[task]}' and '{source['name']}'",
                    field=key,
                )
            task_source[task] = source["name"]
        log.info(
            "source %s (%s): %d instances, %d tasks, %d eval instances",
            source["name"],
            source["type"],
            len(frame),
            frame["task"].nunique(),
            int((frame["split"] == "eval").sum()),
        )
        frames.append(frame)
        dropped += loaded.dropped
    df = pd.concat(frames, ignore_index=True)
    df["split"] = df["split"].astype(object)
    df["instruction_id"] = df["instruction"].map(content_hash)
    df = assign_splits(df, data.get("test_fraction", 0.2), data.get("split_seed", 0))
    before_caps = df[["task", "split"]]
    df, capped = apply_caps(
        df, data.get("max_train_per_task"), data.get("max_test_per_task"), data.get("split_seed", 0)
    )
    dropped += capped
    duplicated = df["instance_id"].duplicated()
    if duplicated.any():
        row = df[duplicated].iloc[0]
        raise InputError(row["source_file"] or "config", f"instance id '{row['instance_id']}' occurs twice", field="id")
    columns = artifacts.columns("instances")
    df = df[columns].reset_index(drop=True)
    df = df.astype({c: "str" for c in columns if c != "output"})
    tasks = summarize_tasks(df)
    check_splits(before_caps, tasks, data)
    check_orders(tasks, orders)
    dropped_frame = pd.DataFrame(dropped, columns=artifacts.columns("dropped"))
    if dropped:
        log.info("%d dropped rows (source tasks and instructions) are listed in the dropped report", len(dropped))
    return Ingested(df, tasks, dropped_frame)
