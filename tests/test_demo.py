import collections

import pandas as pd
import pytest

from inscl.core import artifacts
from inscl.core.io import InputError
from inscl.data.demo import DEMO_TASKS, generate_demo
from inscl.data.ingest import ingest

DEMO_ORDER = ["sentiment", "addition", "reverse", "topic", "compare", "sort_letters"]


def demo_frame(**source):
    instances, tasks, _ = ingest({"sources": [{"name": "demo", "type": "demo", **source}]})
    return instances, tasks


@pytest.fixture(scope="module")
def default_demo():
    return demo_frame()


def test_fixed_task_names_sizes_and_instructions(default_demo):
    instances, tasks = default_demo
    assert list(tasks["task"]) == DEMO_ORDER
    assert (tasks["n_train"] == 240).all() and (tasks["n_test"] == 60).all()
    assert (tasks["n_instructions"] >= 5).all()
    for task, part in instances.groupby("task"):
        for split in ("train", "test"):
            assert part[part["split"] == split]["instruction"].nunique() >= 5, (task, split)


def test_inputs_and_answers_are_short(default_demo):
    instances, _ = default_demo
    assert instances["input"].str.split().str.len().max() <= 8
    answers = instances["output"].map(lambda refs: refs[0])
    assert answers.str.split().str.len().max() <= 3
    assert instances["output"].map(len).eq(1).all()
    assert instances["input"].str.len().max() < 50


def test_no_test_prompt_is_seen_in_training(default_demo):
    instances, _ = default_demo
    prompts = instances.assign(prompt=instances["instruction"] + "\n" + instances["input"])
    for task, part in prompts.groupby("task"):
        assert not part["prompt"].duplicated().any(), task


def test_answers_follow_the_task_rules(default_demo):
    instances, _ = default_demo
    answer = instances.set_index("instance_id")["output"].map(lambda refs: refs[0])
    for row in instances.itertuples():
        expected = answer[row.instance_id]
        if row.task == "addition":
            a, b = (int(x) for x in row.input.replace(",", " ").replace("and", " ").split())
            assert expected == str(a + b)
        elif row.task == "compare":
            a, b = (int(x) for x in row.input.replace(",", " ").replace("and", " ").split())
            assert a != b and expected == str(max(a, b))
        elif row.task == "reverse":
            assert expected == " ".join(reversed(row.input.split()))
        elif row.task == "sort_letters":
            assert expected == " ".join(sorted(row.input.split()))
        elif row.task == "sentiment":
            assert expected in {"positive", "negative"}
        elif row.task == "topic":
            assert expected in {"food", "sports", "music", "travel"}


def test_paired_tasks_share_inputs_but_not_answers(default_demo):
    """The model must read the instruction: the same inputs mean different answers across a pair."""
    instances, _ = default_demo
    by_task = {t: p for t, p in instances.groupby("task")}
    for a, b in [("sentiment", "topic"), ("addition", "compare"), ("reverse", "sort_letters")]:
        shared = set(by_task[a]["input"]) & set(by_task[b]["input"])
        assert len(shared) >= 10, (a, b)
    labels = collections.Counter(r[0] for r in by_task["sentiment"]["output"])
    assert min(labels.values()) > 100


def test_same_seed_gives_identical_parquet_bytes(tmp_path):
    first, _ = demo_frame(seed=3, n_train=40, n_test=10)
    second, _ = demo_frame(seed=3, n_train=40, n_test=10)
    pd.testing.assert_frame_equal(first, second)
    artifacts.write(first, "instances", tmp_path / "a.parquet")
    artifacts.write(second, "instances", tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_different_seed_gives_different_data():
    first, _ = demo_frame(seed=0, n_train=40, n_test=10)
    other, _ = demo_frame(seed=1, n_train=40, n_test=10)
    assert list(first["instance_id"]) == list(other["instance_id"])
    assert (first["input"] != other["input"]).mean() > 0.5


def test_task_subset_and_sizes():
    instances, tasks = demo_frame(tasks=["compare", "reverse"], n_train=7, n_test=3)
    assert list(tasks["task"]) == ["compare", "reverse"]
    assert list(tasks["n_train"]) == [7, 7] and list(tasks["n_test"]) == [3, 3]
    assert instances["instance_id"].is_unique


def test_unknown_demo_task_names_the_config_key():
    with pytest.raises(InputError) as info:
        generate_demo(tasks=["sentiment", "poetry"], config_key="data.sources[0]")
    assert str(info.value) == (
        f"config: field 'data.sources[0].tasks': unknown demo task 'poetry'; expected some of {list(DEMO_TASKS)}"
    )


def test_more_examples_than_the_task_can_make_is_an_error():
    space = len(DEMO_TASKS["addition"].instructions) * len(DEMO_TASKS["addition"].inputs)
    with pytest.raises(InputError, match=f"has {space} distinct examples"):
        generate_demo(tasks=["addition"], n_train=space, n_test=1)
