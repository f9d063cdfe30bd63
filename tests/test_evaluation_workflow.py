"""Evaluation settings through Snakemake on the finished .test run: seen-only scoring (TRACE, InsCL) down to the
metrics and the report, and sharded prediction giving the same predictions.parquet as one job."""

import pandas as pd
import pytest
from workflow import planned_jobs, read_config, snakemake, write_config

from inscl.core import artifacts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def test_seen_only_scores_trained_tasks_and_the_report_says_why_fwt_is_absent(fresh_copy_of_finished_run):
    workdir = fresh_copy_of_finished_run
    config = read_config(workdir / "config.yaml")
    config["evaluation"]["tasks"] = "seen"
    write_config(workdir, config)
    jobs = planned_jobs(workdir)
    evaluated = {wildcards for rule, wildcards, _ in jobs if rule == "evaluate"}
    assert evaluated and not any(w == "run=base" for w in evaluated)
    assert {"metrics", "report"} <= {rule for rule, _, _ in jobs}
    snakemake(workdir)
    stage1 = artifacts.read(workdir / "results/runs/demo/no_replay/seed0/stage1/scores.parquet", "scores")
    assert stage1["task"].tolist() == [config["orders"]["demo"][0]]
    matrix = artifacts.read(workdir / "results/metrics/score_matrix.parquet", "score_matrix")
    assert (matrix["stage"] >= matrix["task_index"]).all() and (matrix["stage"] > 0).all()
    metrics = artifacts.read(workdir / "results/metrics/cl_metrics.parquet", "cl_metrics")
    assert "FWT" not in set(metrics["metric"]) and {"OP", "BWT"} <= set(metrics["metric"])
    page = (workdir / "results/report/index.html").read_text()
    assert "No FWT: after each stage only the tasks trained so far were scored" in page


def test_sharded_prediction_merges_to_the_same_predictions(fresh_copy_of_finished_run):
    workdir = fresh_copy_of_finished_run
    target = "results/runs/demo/no_replay/seed0/stage2/predictions.parquet"
    whole = artifacts.read(workdir / target, "predictions")
    config = read_config(workdir / "config.yaml")
    config["evaluation"].update(shard_by="examples", shard_examples=4, max_test_per_task=10)
    write_config(workdir, config)
    snakemake(workdir, target)
    shards = sorted(p.name for p in (workdir / target).parent.glob("shards/*.parquet"))
    tasks = sorted(whole["task"].unique())
    assert shards == sorted(f"{task}.part{i}.parquet" for task in tasks for i in range(3))
    merged = artifacts.read(workdir / target, "predictions")
    pd.testing.assert_frame_equal(merged, whole)
