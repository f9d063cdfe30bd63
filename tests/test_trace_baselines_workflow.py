"""TRACE's baselines and the forgetting analysis through Snakemake: icl, general_replay and rcl with
offline rationales on the .test demo, scored seen-only (as TRACE), down to the metrics and the report."""

import pandas as pd
import pytest
from workflow import REPO, copy_checkout, planned_jobs, read_config, snakemake, write_config

from inscl.core import artifacts
from inscl.evaluation.answers import extract_answer
from inscl.evaluation.score import score_predictions

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
GENERAL = REPO / "tests" / "fixtures" / "data" / "general" / "self_instruct_answered.json"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("trace_baselines")
    copy_checkout(workdir)
    config = read_config()
    config.update(methods=["no_replay", "general_replay", "rcl", "icl"], references=[])
    config["replay"]["general"] = {"path": str(GENERAL), "name": "self_instruct", "count": 4}
    config["icl"] = {"shots": 2}
    config["forgetting"] = {"enabled": True}
    config["evaluation"].update(tasks="seen", max_new_tokens="auto")
    write_config(workdir, config)
    snakemake(workdir, snakefile=workdir / "Snakefile")
    return workdir, config


def test_every_baseline_runs_to_the_report_and_a_rerun_has_nothing_to_do(finished):
    workdir, config = finished
    summary = artifacts.read(workdir / "results/metrics/summary.parquet", "summary")
    assert set(summary.loc[summary["method"] == "icl", "metric"]) == {"OP"}
    assert {"OP", "BWT", "forgetting"} <= set(summary.loc[summary["method"] == "rcl", "metric"])
    page = (workdir / "results/report/index.html").read_text()
    assert "Forgetting analysis (InsCL)" in page and "offline template rationales" in page
    assert "no training: OP only" in page
    for method in ["no_replay", "general_replay", "rcl"]:
        assert (workdir / f"results/analysis/forgetting/demo/{method}/seed0.parquet").exists()
    assert planned_jobs(workdir, snakefile=workdir / "Snakefile") == []


def test_icl_demonstrations_are_training_examples(finished):
    workdir, _ = finished
    instances = artifacts.read(workdir / "results/data/instances.parquet", "instances")
    demos = artifacts.read(workdir / "results/icl/seed0/demonstrations.parquet", "icl_demonstrations")
    split = dict(zip(instances["instance_id"], instances["split"]))
    assert len(demos) and {split[i] for i in demos["instance_id"]} == {"train"}
    predictions = artifacts.read(workdir / "results/icl/seed0/predictions.parquet", "predictions")
    assert set(predictions["task"]) == set(instances["task"])  # every task, whatever evaluation.tasks says


def test_rcl_trains_on_targets_and_is_scored_on_extracted_answers(finished):
    workdir, config = finished
    rcl_instances = artifacts.read(workdir / "results/rcl/instances.parquet", "rcl_instances")
    train = rcl_instances[rcl_instances["split"] == "train"]
    assert all(refs[0].startswith("The task: ") and "\nAnswer: " in refs[0] for refs in train["output"])
    run = workdir / "results/runs/demo/rcl/seed0/stage3"
    predictions = artifacts.read(run / "predictions.parquet", "predictions")
    scores = artifacts.read(run / "scores.parquet", "scores")
    extracted = predictions.assign(prediction=[extract_answer(p, "rationale") for p in predictions["prediction"]])
    expected = score_predictions(extracted, {"metrics": config["evaluation"]["metrics"]})
    pd.testing.assert_frame_equal(scores.reset_index(drop=True), expected.reset_index(drop=True))
    stage1 = artifacts.read(workdir / "results/runs/demo/rcl/seed0/stage1/scores.parquet", "scores")
    assert stage1["task"].tolist() == ["sentiment"]  # seen only


def test_general_rows_are_replayed_at_every_stage(finished):
    workdir, _ = finished
    composition = artifacts.read(
        workdir / "results/replay/demo/general_replay/seed0/composition.parquet", "composition"
    )
    assert composition.loc[composition["source_task"] == "self_instruct", "n_examples"].tolist() == [4, 4, 4]
