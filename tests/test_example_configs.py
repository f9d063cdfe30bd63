"""The example experiment configs: schema-valid, faithful to InsCL / TRACE, and they dry-run."""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inscl.core.config import load_config
from inscl.core.methods import METHODS

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "cluster"
GRID = REPO / "configs" / "inscl_grid.yaml"
TRACE = REPO / "configs" / "trace.yaml"
INSCL_TASKS = [
    "classification",
    "text_quality_evaluation",
    "code",
    "detection",
    "sentiment_analysis",
    "comprehension",
    "closed_qa",
    "extraction",
    "dialogue",
    "program_execution",
    "rewriting",
    "open_qa",
    "misc",
    "generation",
    "summarization",
    "mathematics",
]
TRACE_ORDER = ["C-STANCE", "FOMC", "MeetingBank", "Py150", "ScienceQA", "NumGLUE-cm", "NumGLUE-ds", "20Minuten"]


def superni_categories() -> list[str]:
    lines = (FIXTURES / "superni_categories.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def grid_groups(config: dict) -> dict:
    return config["data"]["sources"][0]["groups"]


def dry_run_jobs(workdir: Path) -> collections.Counter:
    """Jobs per rule of `snakemake -n` in workdir (its config.yaml)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(workdir / "config.yaml"),
            "-n",
            "--quiet",
            "rules",
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return collections.Counter(
        {
            m.group(1): int(m.group(2))
            for line in table.splitlines()
            if (m := re.match(r"^(\w+)\s+(\d+)$", line.strip()))
        }
    )


# ---------------------------------------------------------------- InsCL grid


def test_grid_is_the_inscl_experiment():
    config = load_config(GRID)
    assert sorted(grid_groups(config)) == sorted(INSCL_TASKS)
    assert len(config["orders"]) == 3
    for order in config["orders"].values():
        assert sorted(order) == sorted(INSCL_TASKS)
    assert config["orders"]["reverse"] == config["orders"]["paper"][::-1]
    assert sorted(config["methods"]) == sorted(METHODS)
    assert config["seeds"] == [0, 1, 2]
    assert config["model"]["base"] == "meta-llama/Llama-2-7b-chat-hf"
    assert config["training"]["mode"] == "lora"
    assert config["tagging"]["backend"] == "openai" and config["tagging"]["openai"]["model"] == "gpt-4"
    assert config["evaluation"]["metrics"] == {"default": "rouge_l", "per_task": {}}
    assert config["training"]["gpus"] >= 1 and config["evaluation"]["gpus"] >= 1


def test_grid_maps_every_superni_category_exactly_once():
    groups = grid_groups(load_config(GRID))
    mapped = [category for spec in groups.values() for category in spec.get("categories", [])]
    duplicates = [c for c, n in collections.Counter(mapped).items() if n > 1]
    assert not duplicates
    assert set(mapped) == set(superni_categories())
    # The list's spelling matches real task files: every category of the shared excerpts is on it.
    manifest = (FIXTURES / "superni" / "MANIFEST.tsv").read_text().splitlines()[1:]
    real = {category.strip() for line in manifest for category in line.split("\t")[1].split(",")}
    assert real <= set(superni_categories())


def test_grid_agrees_with_the_superni_16_config():
    grid = grid_groups(load_config(GRID))
    small_config = load_config(REPO / "configs" / "superni_16.yaml")
    small = grid_groups(small_config)
    assert sorted(small) == sorted(grid)
    for task, spec in small.items():
        assert set(spec.get("categories", [])) <= set(grid[task].get("categories", [])), task
        assert spec.get("tasks", []) == grid[task].get("tasks", []), task
    assert list(small_config["orders"].values()) == [load_config(GRID)["orders"][o] for o in ("paper", "reverse")]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_grid_dry_runs(tmp_path):
    config = yaml.safe_load(GRID.read_text())
    tasks_dir = tmp_path / "superni" / "tasks"
    shutil.copytree(FIXTURES / "superni" / "tasks", tasks_dir)
    config["data"]["sources"][0]["path"] = str(tasks_dir)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))

    jobs = dry_run_jobs(tmp_path)
    chains = 3 * 9 * 3  # orders x methods x seeds
    assert jobs["train_stage"] == chains * 16
    assert jobs["replay"] == chains
    assert jobs["train_single_task"] == 3 * 16 and jobs["train_multitask"] == 3
    assert jobs["predict"] == jobs["score"] == 1 + chains * 16 + 3 * 16 + 3
    assert jobs["embed_examples"] == 1  # prototype_data needs example embeddings


# ---------------------------------------------------------------- TRACE


def test_trace_is_the_trace_protocol():
    config = load_config(TRACE)
    source = config["data"]["sources"][0]
    assert source["type"] == "trace" and source["datasets"] == TRACE_ORDER
    assert list(config["orders"].values()) == [TRACE_ORDER]
    metrics = config["evaluation"]["metrics"]
    metric_of = {task: metrics["per_task"].get(task, metrics["default"]) for task in TRACE_ORDER}
    assert metric_of == {
        "C-STANCE": "exact_match",
        "FOMC": "exact_match",
        "MeetingBank": "rouge_l",
        "Py150": "edit_similarity",
        "ScienceQA": "exact_match",
        "NumGLUE-cm": "exact_match",
        "NumGLUE-ds": "exact_match",
        "20Minuten": "sari",
    }
    training = config["training"]
    assert training["mode"] == "full"
    assert training["epochs"] == [5, 3, 7, 5, 3, 5, 5, 7]  # TRACE scripts/train_seq_naive.sh
    assert training["learning_rate"] == 1e-5 and training["schedule"] == "cosine"
    assert config["evaluation"]["normalize_exact_match"] is False  # TRACE compares raw strings


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_trace_dry_runs(tmp_path):
    """TRACE's layout, one folder per dataset, built in tmp from a real TRACE example."""
    config = yaml.safe_load(TRACE.read_text())
    example = json.loads((FIXTURES / "trace" / "examples.json").read_text())["FOMC"]
    root = tmp_path / "trace"
    for dataset in config["data"]["sources"][0]["datasets"]:
        (root / dataset).mkdir(parents=True)
        for split in ("train", "eval", "test"):
            (root / dataset / f"{split}.json").write_text(json.dumps([example]))
    config["data"]["sources"][0]["path"] = str(root)
    config["judge"]["prompt_files"] = {"helpful": str(FIXTURES / "hhh" / "helpful_test.json")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))

    jobs = dry_run_jobs(tmp_path)
    chains = len(config["methods"])
    assert jobs["train_stage"] == chains * 8
    assert jobs["train_single_task"] == 8 and jobs["train_multitask"] == 1
    assert jobs["predict"] == 1 + chains * 8 + 8 + 1
    assert jobs["general_ability"] == 1 + chains and jobs["judge"] == chains
