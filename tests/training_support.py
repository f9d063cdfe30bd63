"""Shared test data for the training tests: real SuperNI instances, a tiny base model, default settings."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from inscl.core.config import validate_config
from inscl.training.base_model import build_base_model

FIXTURES = Path(__file__).parent / "fixtures" / "training"
TASK_FILES = {
    "copy": "task062_bigbench_repeat_copy_logic.json",
    "arithmetic": "task085_unnatural_addsub_arithmetic.json",
    "sst2": "task363_sst2_polarity_classification.json",
}
TINY = {
    "layers": 2,
    "hidden_size": 32,
    "heads": 2,
    "intermediate_size": 64,
    "vocab_size": 400,
    "max_position_embeddings": 256,
    "seed": 0,
}
MODEL = {"base": "tiny", "trust_remote_code": False, "tiny": TINY}


def superni_instances() -> pd.DataFrame:
    """The real SuperNI excerpts as an instances table; the last two instances of a task are test."""
    rows = []
    for task, name in TASK_FILES.items():
        data = json.loads((FIXTURES / name).read_text())
        instances = data["Instances"]
        for k, instance in enumerate(instances):
            rows.append(
                {
                    "task": task,
                    "split": "test" if k >= len(instances) - 2 else "train",
                    "instance_id": instance["id"],
                    "instruction": data["Definition"][0],
                    "input": instance["input"],
                    "output": list(instance["output"]),
                }
            )
    return pd.DataFrame(rows)


def write_instances(folder: Path) -> Path:
    path = Path(folder) / "instances.parquet"
    superni_instances().to_parquet(path)
    return path


def build_tiny_base(folder: Path, **tiny) -> Path:
    model = {**MODEL, "tiny": {**TINY, **tiny}}
    path = Path(folder) / "base"
    build_base_model(model, superni_instances(), path)
    return path


def training_settings(**overrides) -> dict:
    """The schema's training defaults (as the workflow passes them), with overrides."""
    config = validate_config({"data": {"sources": [{"name": "demo", "type": "demo"}]}, "orders": {"o": ["a", "b"]}})
    return {**config["training"], **overrides}


def tiny_job(workspace: dict, name: str, tasks, training: dict, seed: int, previous=None, **extra):
    """A TrainJob of the tiny model in `workspace` ({folder, base, instances}), its outputs in folder/name."""
    from inscl.training.train import TrainJob

    run = Path(workspace["folder"]) / name
    return TrainJob(
        instances=str(workspace["instances"]),
        tasks=tasks,
        previous=str(previous or workspace["base"]),
        base=str(workspace["base"]),
        output_model=str(run / "model"),
        output_log=str(run / "train_log.parquet"),
        checkpoints=str(run / "checkpoints"),
        training=training,
        model=MODEL,
        seed=seed,
        epochs=training["epochs"],
        label=name,
        **extra,
    )
