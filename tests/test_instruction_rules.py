"""The embed_instructions and tag rules run by real Snakemake, tagging through the local OpenAI-compatible
server: the API key never lands on disk, and adding a task embeds and tags only its new instructions."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow import snakemake

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

TARGETS = ["results/instructions/tags_raw.parquet", "results/instructions/embeddings.parquet"]
TARGET = TARGETS[0]


def write_config(workdir: Path, tasks: list[str], base_url: str) -> None:
    config = {
        "data": {"sources": [{"name": "demo", "type": "demo", "n_train": 12, "n_test": 4, "tasks": tasks}]},
        "orders": {"demo": tasks},
        "tagging": {
            "backend": "openai",
            "openai": {"base_url": base_url, "max_concurrency": 4, "backoff_base_s": 0.05},
        },
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def embedding_cache_keys(workdir: Path) -> list[str]:
    keys = []
    for shard in (workdir / "cache" / "embeddings").rglob("shard-*.npz"):
        with np.load(shard, allow_pickle=False) as data:
            keys += data["keys"].tolist()
    return keys


def test_tag_rule_with_openai_backend(openai_server, api_key, tmp_path):
    env = {"OPENAI_API_KEY": api_key}
    write_config(tmp_path, ["sentiment", "addition"], openai_server.base_url)
    snakemake(tmp_path, *TARGETS, env=env)

    tags = pd.read_parquet(tmp_path / TARGET)
    instances = pd.read_parquet(tmp_path / "results/data/instances.parquet")
    embeddings = pd.read_parquet(tmp_path / "results/instructions/embeddings.parquet")
    first_ids = set(instances["instruction_id"])
    assert set(tags["instruction_id"]) == set(embeddings["instruction_id"]) == first_ids
    assert (tags["status"] == "ok").all() and (tags["backend"] == "openai").all()
    assert all(len(t) > 0 for t in tags["tags"])
    assert openai_server.count() == len(first_ids)
    assert len(embedding_cache_keys(tmp_path)) == len(first_ids)

    # add one task: only its instructions are embedded and tagged
    write_config(tmp_path, ["sentiment", "addition", "topic"], openai_server.base_url)
    snakemake(tmp_path, *TARGETS, env=env)
    instances = pd.read_parquet(tmp_path / "results/data/instances.parquet")
    new_ids = set(instances["instruction_id"]) - first_ids
    assert new_ids and set(instances.loc[instances["instruction_id"].isin(new_ids), "task"]) == {"topic"}
    assert openai_server.count() == len(first_ids) + len(new_ids)
    keys = embedding_cache_keys(tmp_path)
    assert len(keys) == len(set(keys)) == len(first_ids) + len(new_ids)  # each text encoded once, ever
    assert set(pd.read_parquet(tmp_path / TARGET)["instruction_id"]) == first_ids | new_ids

    # the key never appears on disk
    leaked = [
        path
        for folder in ("results", "logs", "cache", ".snakemake", "benchmarks")
        for path in (tmp_path / folder).rglob("*")
        if path.is_file() and api_key.encode() in path.read_bytes()
    ]
    assert (tmp_path / "logs" / "tag.log").exists() and not leaked
