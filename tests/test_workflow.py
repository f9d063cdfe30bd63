"""The whole workflow on the .test config, run once per session: what it writes, and what a dry run
plans after each kind of edit (the cache must rerun exactly what depends on the edit)."""

import re

import pandas as pd
import pytest
from workflow import planned_jobs, read_config, write_config

from inscl.core import artifacts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

CHAIN_RULES = {"train", "evaluate"}
UPSTREAM = {"ingest", "embed_instructions", "tag", "normalize_tags", "insinfo", "distances", "base_model"}
REFERENCES = {"train_single_task", "train_multitask"}


def test_finished_run_has_every_artifact(finished_test_run):
    run = finished_test_run
    config = read_config(run / "config.yaml")
    tasks = config["orders"]["demo"]
    matrix = artifacts.read(run / artifacts.path("score_matrix"), "score_matrix")
    assert len(matrix) == len(config["methods"]) * (len(tasks) + 1) * len(tasks)
    summary = artifacts.read(run / artifacts.path("summary"), "summary")
    assert {"OP", "BWT"} <= set(summary["metric"]) and set(config["methods"]) <= set(summary["method"])
    # replay: a folder per replaying method, with its composition; none for no_replay
    assert not (run / "results/replay/demo/no_replay").exists()
    composition = artifacts.read(run / "results/replay/demo/inscl/seed0/composition.parquet", "composition")
    per_stage = composition.groupby("stage")["n_examples"].sum().to_dict()
    assert per_stage == {2: 6, 3: 12}  # replay_per_task x earlier tasks
    stage3 = pd.read_parquet(run / "results/replay/demo/inscl/seed0/stage3.parquet")
    assert stage3["reason"].str.startswith("dynamic quota").all() and stage3["score"].gt(0).all()
    distances = artifacts.read(run / artifacts.path("distances"), "distances")
    assert len(distances) == len(tasks) * (len(tasks) - 1) and distances["converged"].all()
    # one training log and one benchmark per training job, under logs/
    assert (run / "results/runs/demo/random/seed0/stage3/train_log.parquet").exists()
    assert (run / "logs/benchmarks/train/demo/random/seed0/stage3.tsv").exists()
    assert "Score matrices" in (run / "results/report/index.html").read_text(encoding="utf-8")


def test_a_second_run_has_nothing_to_do(finished_test_run):
    assert planned_jobs(finished_test_run, snakefile=finished_test_run / "Snakefile") == []


def dry_run(workdir, config=None):
    if config is not None:
        write_config(workdir, config)
    return planned_jobs(workdir, snakefile=workdir / "Snakefile")


def rules(jobs):
    return {rule for rule, _, _ in jobs}


def methods_of(jobs):
    """Methods whose chain (replay, training, evaluation) has a job in `jobs`."""
    found = set()
    for _, wildcards, _ in jobs:
        match = re.search(r"method=(\w+)", wildcards) or re.search(r"run=\w+/(\w+)/seed", wildcards)
        if match:
            found.add(match.group(1))
    return found


def reordered(value):
    """The same config with the keys of every mapping in reverse order."""
    if isinstance(value, dict):
        return {key: reordered(value[key]) for key in reversed(list(value))}
    return value


def test_a_reordered_config_reruns_nothing(fresh_copy_of_finished_run):
    assert dry_run(fresh_copy_of_finished_run, reordered(read_config(fresh_copy_of_finished_run / "config.yaml"))) == []


RUNTIME_EDITS = {
    "training.runtime": ("training", "runtime", 999),
    "training.threads": ("training", "threads", 2),
    "training.mem_mb": ("training", "mem_mb", 12345),
    "training.gpus": ("training", "gpus", 1),
    "training.checkpoint_every": ("training", "checkpoint_every", 7),
    "evaluation.gpus": ("evaluation", "gpus", 1),
    "evaluation.batch_size": ("evaluation", "batch_size", 3),
    "embedding.batch_size": ("embedding", "batch_size", 5),
    "tagging.openai.max_concurrency": ("tagging", "openai", {"max_concurrency": 2}),
    "tagging.openai.model with the offline backend": ("tagging", "openai", {"model": "gpt-4o"}),
}


@pytest.mark.parametrize("edit", list(RUNTIME_EDITS))
def test_settings_that_only_change_how_jobs_run_rerun_nothing(fresh_copy_of_finished_run, edit):
    section, key, value = RUNTIME_EDITS[edit]
    config = read_config(fresh_copy_of_finished_run / "config.yaml")
    config.setdefault(section, {})[key] = value
    assert dry_run(fresh_copy_of_finished_run, config) == []


def test_replay_per_task_reruns_replay_and_what_depends_on_it(fresh_copy_of_finished_run):
    config = read_config(fresh_copy_of_finished_run / "config.yaml")
    config["replay"]["replay_per_task"] += 1
    jobs = dry_run(fresh_copy_of_finished_run, config)
    assert rules(jobs) == {"select_replay", "train", "evaluate", "metrics", "report"}, jobs
    assert not (UPSTREAM | REFERENCES) & rules(jobs)
    assert methods_of(jobs) == {"random", "inscl"}
    assert all("params" in reason or "updated by another job" in reason for _, _, reason in jobs)


@pytest.mark.parametrize("key, value", [("prompt_version", "instag-v2"), ("offline", {"max_tags": 3})])
def test_a_tagging_setting_reruns_tagging_and_inscl_but_not_the_other_chains(fresh_copy_of_finished_run, key, value):
    config = read_config(fresh_copy_of_finished_run / "config.yaml")
    config["tagging"][key] = value
    jobs = dry_run(fresh_copy_of_finished_run, config)
    assert {"tag", "normalize_tags", "insinfo", "select_replay"} <= rules(jobs)
    assert not {"ingest", "embed_instructions", "distances", "base_model"} & rules(jobs)
    assert not REFERENCES & rules(jobs)
    assert methods_of(jobs) == {"inscl"}, jobs


def test_adding_a_method_runs_only_its_jobs(fresh_copy_of_finished_run):
    config = read_config(fresh_copy_of_finished_run / "config.yaml")
    config["methods"].append("inscl_dynamic_only")
    jobs = dry_run(fresh_copy_of_finished_run, config)
    assert rules(jobs) == {"select_replay", "train", "evaluate", "metrics", "report"}, jobs
    assert methods_of(jobs) == {"inscl_dynamic_only"}


def test_code_edits_rerun_exactly_the_stages_that_reach_the_code(fresh_copy_of_finished_run):
    run = fresh_copy_of_finished_run
    strategies = run / "src/inscl/replay/strategies.py"
    original = strategies.read_text()
    docstring = (
        '"""InsCL\'s dynamic replay: task j gets floor(alpha * W_j / sum W), the remainder to the largest W_j."""'
    )
    assert docstring in original
    strategies.write_text(original.replace(docstring, '"""Distance-weighted quotas (reworded)."""'))
    assert dry_run(run) == []
    # the InsCL allocation: only the methods whose strategy uses it
    config = read_config(run / "config.yaml")
    config["methods"].append("inscl_dynamic_only")
    write_config(run, config)
    allocation = "allocation = allocate(ctx.budget, distances, capacities)"
    assert original.count(allocation) == 1
    strategies.write_text(
        original.replace(allocation, "allocation = allocate(ctx.budget, distances * 1.0, capacities)")
    )
    jobs = dry_run(run)
    replays = {wildcards for rule, wildcards, _ in jobs if rule == "select_replay"}
    assert replays == {"order=demo, method=inscl, seed=0", "order=demo, method=inscl_dynamic_only, seed=0"}, jobs
    assert methods_of(jobs) == {"inscl", "inscl_dynamic_only"}
    assert not (UPSTREAM | REFERENCES) & rules(jobs)
