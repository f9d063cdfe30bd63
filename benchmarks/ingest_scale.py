"""Ingestion at SuperNI scale: end-to-end throughput, and the split step against a naive per-task loop.

    .venv/bin/python benchmarks/ingest_scale.py [n_tasks] [instances_per_task]

Writes synthetic SuperNI task files (16 categories) to a temporary folder, ingests them with the
16-category grouping, and times assign_splits against the obvious per-task loop that sorts each
task's ids by hash and assigns the split row by row with .loc.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from inscl.core.hashing import stable_seed
from inscl.data.ingest import assign_splits, ingest


def write_tasks(root: Path, n_tasks: int, per_task: int) -> None:
    for t in range(n_tasks):
        doc = {
            "URL": [float("nan")],
            "Categories": [f"Category {t % 16}"],
            "Definition": [f"Definition of synthetic task {t}: read the input and answer briefly."],
            "Input_language": ["English"],
            "Output_language": ["English"],
            "Instances": [
                {"id": f"task{t}-{i}", "input": f"input {i} of task {t} " * 8, "output": [f"answer {i % 7}"]}
                for i in range(per_task)
            ],
        }
        (root / f"task{t:04d}_synthetic.json").write_text(json.dumps(doc))


def naive_splits(df: pd.DataFrame, test_fraction: float, split_seed: int) -> pd.DataFrame:
    df = df.copy()
    for (_, _), part in df.groupby(["source", "source_task"]):
        ordered = sorted(part.index, key=lambda i: stable_seed(split_seed, "split", df.at[i, "instance_id"]))
        n_test = min(max(1, round(len(ordered) * test_fraction)), len(ordered) - 1)
        for rank, index in enumerate(ordered):
            df.loc[index, "split"] = "test" if rank < n_test else "train"
    return df


def main(n_tasks: int = 200, per_task: int = 1000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tasks(root, n_tasks, per_task)
        groups = {f"group{c}": {"categories": [f"Category {c}"]} for c in range(16)}
        data = {
            "sources": [{"name": "sni", "type": "superni", "path": str(root), "groups": groups, "english_only": True}],
            "test_fraction": 0.2,
            "split_seed": 0,
            "max_train_per_task": 5000,
            "max_test_per_task": 1000,
        }
        start = time.perf_counter()
        instances, tasks, _ = ingest(data)
        total = time.perf_counter() - start
        print(
            f"ingest: {n_tasks} task files, {len(instances):,} instances, {len(tasks)} experiment tasks "
            f"in {total:.2f} s ({len(instances) / total:,.0f} instances/s)"
        )

        unsplit = instances.assign(split=None).astype({"split": object})
        start = time.perf_counter()
        ours = assign_splits(unsplit, 0.2, 0)
        ours_s = time.perf_counter() - start
        sample = unsplit[unsplit["source_task"].isin(sorted(unsplit["source_task"].unique())[:10])]
        start = time.perf_counter()
        naive = naive_splits(sample, 0.2, 0)
        naive_s = (time.perf_counter() - start) * len(unsplit) / len(sample)
        assert (naive["split"] == ours.loc[sample.index, "split"]).all()
        print(
            f"split {len(unsplit):,} rows: ours {ours_s:.2f} s | naive per-task loop {naive_s:.2f} s "
            f"(extrapolated from {len(sample):,} rows) | speed-up {naive_s / ours_s:.0f}x"
        )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
