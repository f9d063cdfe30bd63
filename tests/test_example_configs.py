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
from inscl.training.batching import plan_training
from inscl.training.examples import IGNORE_INDEX, Example

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "cluster"
GENERAL_DATA = Path(__file__).parent / "fixtures" / "data" / "general" / "self_instruct_answered.json"  # TRACE-format
GRID = REPO / "configs" / "inscl_grid.yaml"
TRACE = REPO / "configs" / "trace.yaml"

# InsCL's orders, copied from OPPO-Mente-Lab/InsCL@3ad357c replay/InsCL_sampling.py
INSCL_CURRICULUM = [  # InsCL_sampling.py:295 (= run_train.sh:4)
    "Classification", "Text_Quality_Evaluation", "Code", "Detection", "Sentiment_Analysis", "Comprehension",
    "Closed_QA", "Extraction", "Dialogue", "Program_Execution", "Rewriting", "Open_QA", "Misc", "Generation",
    "Summarization", "Mathematics",
]  # fmt: skip
INSCL_DIFFICULT = [  # InsCL_sampling.py:297
    "Mathematics", "Summarization", "Generation", "Misc", "Open_QA", "Rewriting", "Program_Execution", "Dialogue",
    "Extraction", "Closed_QA", "Comprehension", "Sentiment_Analysis", "Detection", "Code", "Text_Quality_Evaluation",
    "Classification",
]  # fmt: skip
INSCL_RANDOM = [  # InsCL_sampling.py:293
    "Text_Quality_Evaluation", "Mathematics", "Dialogue", "Summarization", "Extraction", "Misc", "Closed_QA", "Code",
    "Rewriting", "Detection", "Comprehension", "Sentiment_Analysis", "Open_QA", "Program_Execution", "Generation",
    "Classification",
]  # fmt: skip
INSCL_TASKS = INSCL_CURRICULUM
TRACE_BASELINES = {"general_replay", "trace_general_replay", "rcl", "icl"}
TRACE_ORDER = ["C-STANCE", "FOMC", "MeetingBank", "Py150", "ScienceQA", "NumGLUE-cm", "NumGLUE-ds", "20Minuten"]
# 5,000 training examples, TRACE's size per task (its data path LLM-CL-Benchmark_5000, train_seq_naive.sh:30);
# the plan does not depend on their lengths
TRACE_SIZED = [Example([1, 2], [IGNORE_INDEX, 2])] * 5000

# (key path, value, upstream file:line). TRACE = BeyonderXX/TRACE@462e39f, the slurm llama2-7b-chat
# variant of scripts/train_seq_naive.sh (lines 29-48).
TRACE_RECIPE = [
    ("orders.trace", TRACE_ORDER, "scripts/train_seq_naive.sh:31"),
    ("seeds", [1234], "scripts/train_seq_naive.sh:43"),
    ("model.base", "meta-llama/Llama-2-7b-chat-hf", "scripts/train_seq_naive.sh:32"),
    ("training.mode", "full", "scripts/train_seq_naive.sh:47"),
    ("training.template", "raw", "utils/data/data_collator.py:79"),
    ("training.epochs", [5, 3, 7, 5, 3, 5, 5, 7], "scripts/train_seq_naive.sh:39"),
    ("training.batch_size", 2 * 16 * 8, "scripts/train_seq_naive.sh:29,33,40"),
    ("training.learning_rate", 1e-5, "scripts/train_seq_naive.sh:37"),
    ("training.schedule", "constant", "training/main.py:400-403"),
    ("training.warmup_ratio", 0.0, "scripts/train_seq_naive.sh:42"),
    ("training.optimizer.name", "adamw", "training/main.py:392-395"),
    ("training.optimizer.betas", [0.9, 0.95], "training/main.py:395"),
    ("training.optimizer.eps", 1e-8, "training/main.py:393-395"),
    ("training.optimizer.state", "carry", "training/main.py:437-444"),
    ("training.weight_decay", 0.0, "scripts/train_seq_naive.sh:38"),
    ("training.max_grad_norm", 1.0, "utils/ds_utils.py:48"),
    ("training.max_length", 1024 + 512, "scripts/train_seq_naive.sh:35-36"),
    ("training.max_prompt_length", None, "utils/data/data_collator.py:69"),
    ("training.max_answer_length", None, "utils/data/data_collator.py:69"),
    ("training.precision", "bf16", "utils/ds_utils.py:40-41"),
    ("training.gpus", 8, "scripts/train_seq_naive.sh:29"),
    ("training.fsdp", True, "scripts/train_seq_naive.sh:44"),
    ("evaluation.tasks", "seen", "inference/infer_single.py:290"),
    ("evaluation.max_test_per_task", None, "inference/infer_single.py:294-300"),
    ("evaluation.max_prompt_tokens", 1024, "scripts/infer_seq.sh:9"),
    ("evaluation.max_new_tokens", 512, "scripts/infer_seq.sh:10"),
    ("evaluation.do_sample", True, "inference/infer_single.py:189"),
    ("evaluation.temperature", 0.1, "inference/infer_single.py:101-106"),
    ("evaluation.normalize_exact_match", False, "metrics.py:76-86"),
    ("evaluation.metrics.default", "exact_match", "evaluations/eval_CStance.py:5-8"),
    ("evaluation.metrics.per_task.MeetingBank", "rouge_l", "evaluations/eval_MeetingBank.py:8"),
    ("evaluation.metrics.per_task.Py150", "edit_similarity", "evaluations/eval_Py150.py:6-26"),
    ("evaluation.metrics.per_task.ScienceQA", "first_char_accuracy", "evaluations/eval_ScienceQA.py:10,23"),
    ("evaluation.metrics.per_task.20Minuten", "sari", "evaluations/eval_20Minuten.py:9"),
    ("evaluation.metrics.secondary.MeetingBank", ["bleu_1", "bleu_4"], "evaluations/eval_MeetingBank.py:6-7"),
    (
        "evaluation.metrics.secondary.ScienceQA",
        ["reasoning_bleu_1", "reasoning_bleu_4", "reasoning_rouge_l"],
        "evaluations/eval_ScienceQA.py:11,20-22",
    ),
    ("evaluation.metrics.secondary.20Minuten", ["bleu_1", "bleu_4", "rouge_l"], "evaluations/eval_20Minuten.py:6-8"),
    ("replay.trace_fraction", 0.1, "scripts/train_replay.sh:23"),
    ("replay.general.path", "data/TRACE-Benchmark/LLM-CL-Benchmark_5000/Lima", "scripts/train_replay.sh:7"),
    (
        "replay.general",  # the whole file: no count, no fraction
        {"path": "data/TRACE-Benchmark/LLM-CL-Benchmark_5000/Lima", "name": "Lima", "count": None, "fraction": None},
        "training/replay.py:261-274",
    ),
    ("icl.shots", 6, "scripts/ICL.sh:12"),
    ("icl.shots_per_task.MeetingBank", 0, "inference/ICL.py:375-376"),
    ("icl.max_prompt_tokens", 3584, "scripts/ICL.sh:8"),
    (
        "icl.header",
        "We will give you several examples and you should follow them to accomplish the task.\n Examples:\n",
        "inference/ICL.py:43",
    ),
    ("replay.replay_per_task", 200, "InsCL replay/InsCL_sampling.py:270"),
    ("insinfo.pool", "cumulative", "InsCL replay/tag_utils.py:108-134"),
]

# InsCL = OPPO-Mente-Lab/InsCL@3ad357c: run_train.sh, train_CL.py, replay/, run_evaluate.sh, evaluation_CL.py.
INSCL_RECIPE = [
    ("orders.curriculum", INSCL_CURRICULUM, "replay/InsCL_sampling.py:295"),
    ("orders.reverse", INSCL_DIFFICULT, "replay/InsCL_sampling.py:297"),
    ("orders.random", INSCL_RANDOM, "replay/InsCL_sampling.py:293"),
    ("data.sources.0.english_only", True, "README.md:16"),
    ("data.test_fraction", 0.2, "README.md:18"),
    ("model.base", "huggyllama/llama-7b", "README.md:49"),
    ("training.mode", "full", "train_CL.py:237-240"),
    ("training.template", "inscl", "train_CL.py:29-33,185"),
    ("training.epochs", 2, "run_train.sh:11"),
    ("training.batch_size", 2 * 8 * 8, "run_train.sh:8,9,27"),
    ("training.learning_rate", 2e-5, "run_train.sh:31"),
    ("training.schedule", "cosine", "run_train.sh:35"),
    ("training.warmup_ratio", 0.03, "run_train.sh:33"),
    ("training.optimizer.name", "adamw", "train_CL.py:47"),
    ("training.optimizer.betas", [0.9, 0.999], "requirements.txt:12"),
    ("training.optimizer.eps", 1e-8, "requirements.txt:12"),
    ("training.optimizer.state", "reset", "run_train.sh:13-45"),
    ("training.weight_decay", 0.0, "run_train.sh:32"),
    ("training.max_grad_norm", 1.0, "requirements.txt:12"),
    ("training.max_length", 2048, "run_train.sh:10,34"),
    ("training.max_prompt_length", None, "train_CL.py:94-95"),
    ("training.max_answer_length", None, "train_CL.py:94-95"),
    ("training.precision", "bf16", "run_train.sh:22"),
    ("training.gpus", 8, "run_train.sh:8"),
    ("training.fsdp", True, "run_train.sh:37"),
    ("replay.replay_per_task", 200, "replay/InsCL_sampling.py:270"),
    ("normalize.eps", 0.1, "replay/InsCL_sampling.py:272"),
    ("normalize.min_samples", 5, "replay/InsCL_sampling.py:273"),
    ("insinfo.pool", "cumulative", "replay/tag_utils.py:108-134"),
    ("distance.weights", "proportional", "replay/InsCL_sampling.py:133-140"),
    ("distance.solver", "emd", "replay/InsCL_sampling.py:58-95"),
    ("tagging.backend", "openai", "README.md:22"),
    ("tagging.openai.model", "gpt-4", "README.md:22"),
    ("evaluation.tasks", "seen", "run_evaluate.sh:8-35"),
    ("evaluation.do_sample", False, "evaluation_CL.py:186"),
    ("evaluation.metrics.default", "rouge_l", "utils.py:79-86"),
]


def config_value(config: dict, key: str):
    value = config
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def commented_lines(path: Path) -> dict[str, str]:
    """key path -> the comment on its line, for the block-style mappings of a config (list items skipped)."""
    comments, stack, current = {}, [], None
    for line in path.read_text().splitlines():
        match = re.match(r"^( *)([\w.-]+):(.*)$", line)
        if match:
            indent, key, line = len(match.group(1)), match.group(2), match.group(3)
            stack = [(i, k) for i, k in stack if i < indent] + [(indent, key)]
            current = ".".join(k for _, k in stack)
            comments[current] = ""
        if current and "#" in line:  # a flow list's comment may sit on its last line
            comments[current] += line.split("#", 1)[1]
    return comments


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


@pytest.mark.parametrize("key, value, source", INSCL_RECIPE, ids=[row[0] for row in INSCL_RECIPE])
def test_inscl_recipe_numbers(key, value, source):
    """Each number of configs/inscl_grid.yaml is InsCL's, and the config cites the file it comes from."""
    assert config_value(load_config(GRID), key) == value, f"{key} should be {value!r} ({source})"
    if not key.startswith("data.sources"):
        assert source.split(":")[0].split("/")[-1] in commented_lines(GRID)[key], f"{key}: cite {source}"


def test_grid_is_the_inscl_experiment():
    config = load_config(GRID)
    assert list(grid_groups(config)) == INSCL_CURRICULUM
    assert list(config["orders"]) == ["curriculum", "reverse", "random"]
    assert INSCL_DIFFICULT == INSCL_CURRICULUM[::-1]  # InsCL's "difficult" order is its curriculum reversed
    # every replay method but TRACE's own baselines (configs/trace.yaml, configs/trace_baselines.yaml); the
    # training-side methods (ewc, lwf, agem, olora) are compared in configs/methods.yaml
    replay_methods = {name for name, method in METHODS.items() if method.training is None}
    assert sorted(config["methods"]) == sorted(replay_methods - TRACE_BASELINES)
    assert config["evaluation"]["metrics"] == {"default": "rouge_l", "per_task": {}, "secondary": {}}


def test_grid_takes_inscl_optimizer_steps():
    """5,000 examples, 2 epochs, 128 per step: 78 steps per stage, as InsCL's Trainer (313 micro-batches per
    rank and epoch at 2 per GPU on 8 GPUs, a step every 8: run_train.sh:8,9,11,27)."""
    training = load_config(GRID)["training"]
    assert len(plan_training(TRACE_SIZED, training["batch_size"], training["epochs"], 0).steps) == 78


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
    grid_orders = load_config(GRID)["orders"]
    assert small_config["orders"] == {name: grid_orders[name] for name in ("curriculum", "reverse")}


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
    assert jobs["train"] == chains * 16
    assert jobs["select_replay"] == chains - 3 * 3  # no_replay chains select nothing
    assert jobs["train_single_task"] == 3 * 16 and jobs["train_multitask"] == 3
    assert jobs["evaluate"] == chains * 16 + 3 * 16 + 3  # seen tasks only: the base model is not scored
    assert jobs["embed_examples"] == 1  # prototype_data needs example embeddings


# ---------------------------------------------------------------- TRACE


@pytest.mark.parametrize("key, value, source", TRACE_RECIPE, ids=[row[0] for row in TRACE_RECIPE])
def test_trace_recipe_numbers(key, value, source):
    """Each number of configs/trace.yaml is TRACE's, and the config cites the file it comes from."""
    assert config_value(load_config(TRACE), key) == value, f"{key} should be {value!r} ({source})"
    assert source.split(":")[0].split("/")[-1] in commented_lines(TRACE)[key], f"{key}: cite {source}"


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
        "ScienceQA": "first_char_accuracy",
        "NumGLUE-cm": "exact_match",
        "NumGLUE-ds": "exact_match",
        "20Minuten": "sari",
    }
    assert len(config["training"]["epochs"]) == len(TRACE_ORDER)


def test_trace_takes_trace_optimizer_steps():
    """TRACE-sized data (5,000 training examples per task): the plan of configs/trace.yaml takes 256
    examples per step, so TRACE's steps per task up to the one step TRACE's global micro-batch counter
    moves across a task boundary (docs/recipes.md)."""
    training = load_config(TRACE)["training"]
    steps = [len(plan_training(TRACE_SIZED, training["batch_size"], e, 1234).steps) for e in training["epochs"]]
    assert steps == [98, 59, 137, 98, 59, 98, 98, 137]
    trace_slurm = [97, 59, 137, 98, 58, 98, 98, 137]  # 8 ranks x 313 micro-batches per epoch, a step every 16
    assert all(abs(ours - theirs) <= 1 for ours, theirs in zip(steps, trace_slurm))
    assert sum(steps) - sum(trace_slurm) == 2


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
    (root / "Lima").mkdir()
    shutil.copy(GENERAL_DATA, root / "Lima" / "train.json")
    config["replay"]["general"]["path"] = str(root / "Lima")
    config["judge"]["prompt_files"] = {"helpful": str(FIXTURES / "hhh" / "helpful_test.json")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))

    jobs = dry_run_jobs(tmp_path)
    chains = len([method for method in config["methods"] if METHODS[method].trains])
    assert jobs["icl"] == ("icl" in config["methods"])  # one job per seed, on the base model
    assert jobs["train"] == chains * 8
    assert jobs["select_replay"] == chains - 1  # no_replay selects nothing
    assert jobs["general_data"] == 1  # Lima, for trace_general_replay
    assert jobs["train_single_task"] == 8 and jobs["train_multitask"] == 1
    assert jobs["evaluate"] == chains * 8 + 8 + 1  # seen tasks only: the base model is not scored
    assert jobs["general_ability"] == 1 + chains and jobs["judge"] == chains
