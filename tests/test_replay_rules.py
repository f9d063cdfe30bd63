"""The instruction-analysis and replay rules run by real Snakemake on a small demo: every configured
method gets a replay set, and changing only replay.replay_per_task reruns replay and its dependants
but not embedding, tagging, normalization, InsInfo or distances."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
TASKS = ["sentiment", "addition", "reverse"]
METHODS = ["no_replay", "random", "inscl", "trace_replay"]
TARGET = "results/replay/demo/composition.parquet"
UPSTREAM = {"ingest", "embed_instructions", "tag", "normalize_tags", "insinfo", "distances"}


def write_config(workdir: Path, replay_per_task: int) -> None:
    config = {
        "data": {"sources": [{"name": "demo", "type": "demo", "n_train": 40, "n_test": 10, "tasks": TASKS}]},
        "orders": {"demo": TASKS},
        "methods": METHODS,
        "replay": {"replay_per_task": replay_per_task},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def snakemake(workdir: Path, *args: str) -> str:
    result = subprocess.run(
        [
            str(SNAKEMAKE),
            TARGET,
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(workdir / "config.yaml"),
            "--cores",
            "2",
            *args,
        ],
        cwd=workdir,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def planned_jobs(output: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run would execute."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        header = re.match(r"(?:local)?rule (\w+):", block)
        if header:
            wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.MULTILINE)
            jobs.append((header.group(1), wildcards.group(1) if wildcards else ""))
    return jobs


def test_replay_rules_build_and_rerun_only_what_replay_per_task_affects(tmp_path):
    write_config(tmp_path, replay_per_task=6)
    snakemake(tmp_path)

    table = pd.read_parquet(tmp_path / TARGET)
    totals = table.groupby(["method", "stage"])["n_examples"].sum().unstack()
    assert totals.loc["random"].tolist() == [6, 12] and totals.loc["inscl"].tolist() == [6, 12]
    assert totals.loc["no_replay"].tolist() == [0, 0]
    assert totals.loc["trace_replay"].tolist() == [4, 8]  # 10% of 40 from each earlier task
    for method in METHODS:
        folder = tmp_path / "results/replay/demo" / method / "seed0"
        assert sorted(p.name for p in folder.glob("*.parquet")) == [
            "stage1.parquet",
            "stage2.parquet",
            "stage3.parquet",
        ]
    stage3 = pd.read_parquet(tmp_path / "results/replay/demo/inscl/seed0/stage3.parquet")
    assert stage3["reason"].str.startswith("dynamic quota").all() and stage3["score"].gt(0).all()
    distances = pd.read_parquet(tmp_path / "results/replay/distances.parquet")
    assert len(distances) == 6 and distances["converged"].all()
    for name in ("tags.parquet", "tag_map.parquet", "insinfo.parquet"):
        assert not pd.read_parquet(tmp_path / "results/instructions" / name).empty
    assert (tmp_path / "results/replay/demo/composition.png").stat().st_size > 0
    assert (tmp_path / "results/replay/demo/distances.png").stat().st_size > 0

    assert planned_jobs(snakemake(tmp_path, "--dry-run")) == []

    write_config(tmp_path, replay_per_task=7)
    jobs = planned_jobs(snakemake(tmp_path, "--dry-run"))
    assert sorted(jobs) == [
        ("replay", "order=demo, method=inscl, seed=0"),
        ("replay", "order=demo, method=random, seed=0"),
        ("replay_summary", "order=demo"),
    ]
    assert not UPSTREAM & {rule for rule, _ in jobs}
