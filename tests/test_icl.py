"""The icl method (inscl.evaluation.icl): demonstrations from the training split only, deterministic,
label-diverse and length-capped; TRACE's layout; the fallback to fewer demonstrations; ICL's OP rows."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from inscl.core import artifacts
from inscl.core.config import validate_config
from inscl.core.io import InputError
from inscl.core.prompts import build_prompt, encode_prompt
from inscl.data.ingest import ingest
from inscl.evaluation.icl import build_icl_prompts, icl_prompt, next_example_stop, plan_task
from inscl.evaluation.metrics import icl_metrics
from inscl.training.base_model import train_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "data"
TASKS = ["sentiment", "addition", "reverse", "topic"]
HEADER = "We will give you several examples and you should follow them to accomplish the task.\n Examples:\n"
EVALUATION = {"max_new_tokens": 8, "max_test_per_task": None, "stop": [], "stop_per_task": {}}


def settings(**icl) -> dict:
    return validate_config({"data": {"sources": [{"name": "d", "type": "demo"}]}, "orders": {"o": TASKS}, "icl": icl})[
        "icl"
    ]


@pytest.fixture(scope="module")
def instances():
    data = validate_config(
        {
            "data": {"sources": [{"name": "demo", "type": "demo", "n_train": 60, "n_test": 12, "tasks": TASKS}]},
            "orders": {"o": TASKS},
        }
    )["data"]
    return ingest(data).instances


@pytest.fixture(scope="module")
def tokenizer(instances):
    texts = [f"{i}\n{x} {o[0]}" for i, x, o in zip(instances["instruction"], instances["input"], instances["output"])]
    return train_tokenizer(texts + [HEADER], 500, 512)


def plans(instances, tokenizer, seed=0, context=512, **icl):
    test = instances[instances["split"] == "test"]
    _, shots, found, _ = build_icl_prompts(
        test, instances, tokenizer, EVALUATION, settings(**icl), "alpaca", context, seed
    )
    return found, shots


def demo_ids(found) -> dict[str, list[str]]:
    return {task: [d.instance_id for d in plan.demonstrations] for task, plan in found.items()}


def test_demonstrations_come_from_the_training_split_and_repeat_across_runs(instances, tokenizer):
    found, _ = plans(instances, tokenizer)
    split = dict(zip(instances["instance_id"], instances["split"]))
    drawn = [i for ids in demo_ids(found).values() for i in ids]
    assert len(drawn) == 6 * len(TASKS)
    assert {split[i] for i in drawn} == {"train"}  # never a test example
    reordered = instances.sample(frac=1.0, random_state=7).reset_index(drop=True)
    assert demo_ids(plans(reordered, tokenizer)[0]) == demo_ids(found)  # the file order does not matter
    assert demo_ids(plans(instances, tokenizer)[0]) == demo_ids(found)
    assert demo_ids(plans(instances, tokenizer, seed=1)[0]) != demo_ids(found)


def test_classification_tasks_spread_demonstrations_over_their_labels(instances, tokenizer):
    found, _ = plans(instances, tokenizer)
    sentiment = pd.Series([d.label for d in found["sentiment"].demonstrations]).value_counts()
    assert sentiment.to_dict() == {"positive": 3, "negative": 3}  # 2 labels: ceil(6 / 2) each
    topic = pd.Series([d.label for d in found["topic"].demonstrations]).value_counts()
    assert topic.max() <= math.ceil(6 / 4) and len(topic) == 4
    reverse = [d.answer for d in found["reverse"].demonstrations]
    assert len(set(reverse)) == len(reverse) == 6 and all(d.label is None for d in found["reverse"].demonstrations)


def test_trace_keeps_at_most_two_of_each_of_three_labels(tokenizer):
    rows = [("t", "train", f"x{i}", "Pick A, B or C.", f"text {i}", [label]) for i, label in enumerate("ABC" * 5)]
    frame = pd.DataFrame(rows, columns=["task", "split", "instance_id", "instruction", "input", "output"])
    plan = plan_task("t", frame, tokenizer, settings(), 8, 512, 0, 10)
    assert pd.Series([d.answer for d in plan.demonstrations]).value_counts().to_dict() == {"A": 2, "B": 2, "C": 2}


def test_long_examples_are_not_demonstrations(instances, tokenizer):
    found, _ = plans(instances, tokenizer, context=200)
    for plan in found.values():
        cap = (plan.room - len(tokenizer(plan_instruction(instances, plan) + HEADER)["input_ids"]) - 1) / 12
        assert all(d.tokens <= cap for d in plan.demonstrations)


def plan_instruction(instances, plan):
    task = instances.loc[instances["instance_id"] == plan.demonstrations[0].instance_id, "task"].iloc[0]
    return instances.loc[instances["task"] == task, "instruction"].iloc[0]


def test_prompts_that_do_not_fit_drop_demonstrations_down_to_zero(instances, tokenizer):
    test = instances[instances["split"] == "test"]
    full = build_icl_prompts(test, instances, tokenizer, EVALUATION, settings(), "alpaca", 512, 0)
    lengths = [len(encode_prompt(tokenizer, p)) for p in full[0]]
    assert set(full[1]) == {6}
    tight = settings(max_prompt_tokens=int(sorted(lengths)[len(lengths) // 2]) - 1)
    prompts, shots, _, evaluation = build_icl_prompts(test, instances, tokenizer, EVALUATION, tight, "alpaca", 512, 0)
    assert evaluation["max_prompt_tokens"] == tight["max_prompt_tokens"]  # what predict truncates to
    assert 0 < min(shots) and max(shots) <= 6 and min(shots) < 6
    assert all(len(encode_prompt(tokenizer, p)) <= tight["max_prompt_tokens"] for p in prompts)
    none = settings(max_prompt_tokens=12)
    prompts, shots, _, _ = build_icl_prompts(test, instances, tokenizer, EVALUATION, none, "alpaca", 512, 0)
    assert set(shots) == {0}
    assert prompts == [build_prompt(i, x, "alpaca") for i, x in zip(test["instruction"], test["input"])]


def test_shots_per_task_zero_gives_the_plain_prompt_as_trace_meetingbank(instances, tokenizer):
    test = instances[instances["split"] == "test"]
    icl = settings(shots_per_task={"reverse": 0})
    prompts, shots, found, evaluation = build_icl_prompts(test, instances, tokenizer, EVALUATION, icl, "raw", 512, 0)
    for task, prompt, n, instruction, text in zip(test["task"], prompts, shots, test["instruction"], test["input"]):
        if task == "reverse":
            assert n == 0 and prompt == build_prompt(instruction, text, "raw") and HEADER not in prompt
        else:
            assert n == 6 and prompt.startswith(f"{instruction}\n{HEADER}")
    assert evaluation["stop_per_task"]["reverse"] == []  # no demonstrations, no next-example stop


def trace_collator(task_prompt: str, demos: list[dict], test_prompt: str) -> str:
    """TRACE's ICL prompt (utils/data/data_collator.py:83-99), written from its code for this test."""
    text = task_prompt + HEADER
    for demo in demos:
        text += demo["prompt"][len(task_prompt) :] + demo["answer"] + "\n\n"
    return text + test_prompt[len(task_prompt) :]


def test_raw_layout_is_traces_string(tokenizer):
    source = {"name": "trace", "type": "trace", "path": str(FIXTURES / "trace"), "datasets": ["FOMC"]}
    data = validate_config({"data": {"sources": [source]}, "orders": {"o": ["FOMC", "x"]}})["data"]
    instances = ingest(data).instances
    raw_train = json.loads((FIXTURES / "trace" / "FOMC" / "train.json").read_text())
    raw_test = json.loads((FIXTURES / "trace" / "FOMC" / "test.json").read_text())
    test = instances[instances["split"] == "test"]
    prompts, shots, found, evaluation = build_icl_prompts(
        test, instances, tokenizer, EVALUATION, settings(), "raw", None, 0
    )
    by_id = {f"trace:FOMC/train/{i}": record for i, record in enumerate(raw_train)}
    demos = [by_id[d.instance_id] for d in found["FOMC"].demonstrations]
    task_prompt = raw_train[0]["prompt"].split("\n")[0] + "\n"  # FOMC's TASK_PROMT is its first line
    assert shots[0] == len(demos) == len(raw_train)  # 3 rows, one per label: each a new answer
    assert prompts[0] == trace_collator(task_prompt, demos, raw_test[0]["prompt"])
    assert evaluation["stop_per_task"]["FOMC"] == ["\n\nText:"]  # the next example's first line


def test_demonstrations_take_the_templates_shape(instances, tokenizer):
    found, _ = plans(instances, tokenizer)
    demos = found["addition"].demonstrations
    prompt = icl_prompt("Add the numbers.", "2, 3", demos[:2], HEADER, "alpaca")
    assert prompt.startswith(f"### Instruction:\nAdd the numbers.\n{HEADER}### Input:\n{demos[0].body}\n\n")
    assert prompt.endswith("### Input:\n2, 3\n\n### Response:\n")
    assert next_example_stop(demos, "alpaca") == "\n\n### Input:"
    assert next_example_stop(demos, "raw") == "\n\n"  # the demo inputs share no first line


def test_icl_appears_as_op_only(tmp_path):
    orders = {"o1": ["a", "b"], "o2": ["b", "c"]}
    for seed, values in [(0, [10.0, 20.0, 60.0]), (1, [30.0, 40.0, 80.0])]:
        frame = pd.DataFrame(
            {"task": ["a", "b", "c"], "metric": "exact_match", "primary": True, "score": values, "n": 5}
        )
        artifacts.write(frame, "scores", tmp_path / f"icl/seed{seed}/scores.parquet")
    rows = icl_metrics([tmp_path / "icl/seed0/scores.parquet", tmp_path / "icl/seed1/scores.parquet"], orders)
    assert set(rows["metric"]) == {"OP"} and set(rows["method"]) == {"icl"}
    op = {(r.order, r.seed): r.value for r in rows.itertuples()}
    assert op == {("o1", 0): 15.0, ("o2", 0): 40.0, ("o1", 1): 35.0, ("o2", 1): 60.0}
    with pytest.raises(InputError, match="no score for the task"):
        icl_metrics([tmp_path / "icl/seed0/scores.parquet"], {"o": ["a", "d"]})
