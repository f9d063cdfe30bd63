"""inscl.core.runs: the one place that builds and parses run paths, and the per-run training facts."""

import pytest

from inscl.core import runs

ORDERS = {"demo": ["sentiment", "addition", "reverse"], "other": ["reverse", "sentiment", "addition"]}


def test_names_round_trip_through_parse():
    for run in [
        runs.BASE,
        runs.chain("demo", "inscl", 3, 2),
        runs.multitask(0),
        runs.single_task(1, "topic"),
    ]:
        assert runs.parse(run.name) == run
    assert runs.chain("demo", "inscl", 0, 0) == runs.BASE
    with pytest.raises(ValueError, match="not a run name"):
        runs.parse("demo/inscl/stage2")


def test_of_path_finds_the_run_of_any_file_below_it():
    assert runs.of_path("results/runs/demo/inscl/seed0/stage2/scores.parquet").name == "demo/inscl/seed0/stage2"
    assert runs.of_path("/x/results/runs/base/model/config.json") == runs.BASE
    assert runs.of_path("results/runs/single_task/seed1/topic/model").task == "topic"
    assert runs.of_path("results/judge/multitask/seed2/summary.parquet", runs.JUDGE) == runs.multitask(2)
    with pytest.raises(ValueError):
        runs.of_path("results/other/base/x.parquet")


def test_templates_give_the_wildcard_paths_of_the_rules():
    assert runs.template("chain").model == "results/runs/{order}/{method}/seed{seed}/stage{stage}/model"
    assert (
        runs.template("single_task").file("train_log.parquet")
        == "results/runs/single_task/seed{seed}/{task}/train_log.parquet"
    )
    assert runs.replay_folder("{order}", "{method}", "{seed}") == "results/replay/{order}/{method}/seed{seed}"


def test_previous_run_of_a_stage():
    assert runs.chain("demo", "random", 0, 3).previous == runs.chain("demo", "random", 0, 2)
    assert runs.chain("demo", "random", 0, 1).previous == runs.BASE
    assert runs.multitask(0).previous == runs.BASE


def test_training_tasks_and_epochs():
    assert runs.training_tasks(runs.chain("other", "inscl", 0, 2), ORDERS) == ["sentiment"]
    assert runs.training_tasks(runs.multitask(0), ORDERS) == ["addition", "reverse", "sentiment"]
    assert runs.training_epochs(runs.chain("demo", "inscl", 0, 3), [1, 2, 3], ORDERS) == 3.0
    # a single-task reference takes the position of its task in the first order naming it
    assert runs.training_epochs(runs.single_task(0, "addition"), [1, 2, 3], ORDERS) == 2.0
    assert runs.training_epochs(runs.multitask(0), [1, 2, 3], ORDERS) == 2.0
    assert runs.training_epochs(runs.multitask(0), 4, ORDERS) == 4.0


def test_training_seeds_differ_per_run_and_repeat():
    seeds = {
        runs.training_seed(r)
        for r in [
            runs.chain("demo", "inscl", 0, 1),
            runs.chain("demo", "inscl", 0, 2),
            runs.chain("demo", "random", 0, 1),
            runs.multitask(0),
            runs.single_task(0, "addition"),
        ]
    }
    assert len(seeds) == 5
    assert runs.training_seed(runs.multitask(1)) == runs.training_seed(runs.multitask(1))
