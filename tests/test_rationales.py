"""RCL rationales (inscl.instructions.rationales): the offline template, the openai backend against the
real local server (repair, cache, budget), a process killed mid-run that never pays twice, and the
instances with rationale + answer targets."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from openai_server import OpenAIServer, last_user_text

from inscl.core import artifacts
from inscl.core.config import validate_config
from inscl.core.io import InputError
from inscl.core.llm import InvalidAnswer
from inscl.data.ingest import ingest
from inscl.evaluation.answers import extract_answer
from inscl.instructions.rationales import (
    PROMPTS,
    TEMPLATE_VERSION,
    build_messages,
    parse_rationale,
    write_rationales,
)

pytestmark = pytest.mark.timeout(120)
TASKS = ["sentiment", "addition", "reverse"]


@pytest.fixture(scope="module")
def instances():
    data = validate_config(
        {
            "data": {"sources": [{"name": "demo", "type": "demo", "n_train": 8, "n_test": 3, "tasks": TASKS}]},
            "orders": {"o": TASKS},
        }
    )["data"]
    return ingest(data).instances


def rcl(**changes) -> dict:
    config = validate_config({"data": {"sources": [{"name": "d", "type": "demo"}]}, "orders": {"o": TASKS}})
    return {**config["rcl"], **changes}


def reasoning_responder(messages: list[dict], body: dict) -> str:
    """A rationale from the request's input; with MARKER in the instruction the first answer carries an
    answer line, which the repair request must fix."""
    text = last_user_text(messages)
    if "could not be used" in text:
        return "Looking again at the input, the reasoning holds."
    prompt = messages[1]["content"]
    given = prompt.split("Input:\n", 1)[1].split("\n\nCorrect answer:", 1)[0]
    if "MARKER" in prompt:
        return f"The input is {given}.\nAnswer: leaked"
    return f"The input is {given}. Reading it closely gives the answer."


@pytest.fixture
def server(api_key):
    with OpenAIServer(responder=reasoning_responder, api_key=api_key) as running:
        yield running


def openai_rcl(endpoint, server, **changes):
    return rcl(backend="openai", openai={**endpoint, "base_url": server.base_url, **changes})


# ---- offline template and targets


def test_offline_template_rationales_and_targets(instances, tmp_path):
    table, rcl_instances = write_rationales(instances, TASKS, rcl(), tmp_path)
    train = instances[instances["split"] == "train"]
    assert len(table) == len(train) and set(table["status"]) == {"ok"}
    assert set(table["backend"]) == {"offline"} and set(table["prompt_version"]) == {TEMPLATE_VERSION}
    row = table[table["task"] == "sentiment"].iloc[0]
    source = train[train["instance_id"] == row["instance_id"]].iloc[0]
    assert row["rationale"].startswith("The task: ") and f"The input: {source['input']}" in row["rationale"]
    assert "The answer is one of the labels" in row["rationale"]  # sentiment answers: a label set
    assert row["target"] == f"{row['rationale']}\nAnswer: {source['output'][0]}"
    assert extract_answer(row["target"], "rationale") == source["output"][0]
    assert "The answer is a number." in table.loc[table["task"] == "addition", "rationale"].iloc[0]
    # training rows get the target, test rows keep their references
    merged = rcl_instances.merge(instances, on="instance_id", suffixes=("", "_before"))
    is_train = merged["split"] == "train"
    assert all(
        list(a) == [t]
        for a, t in zip(
            merged.loc[is_train, "output"],
            table.set_index("instance_id").loc[merged.loc[is_train, "instance_id"], "target"],
        )
    )
    assert all(
        list(a) == list(b) for a, b in zip(merged.loc[~is_train, "output"], merged.loc[~is_train, "output_before"])
    )
    artifacts.write(table, "rationales", tmp_path / "r.parquet")
    artifacts.write(rcl_instances, "rcl_instances", tmp_path / "i.parquet")
    again, _ = write_rationales(instances, TASKS, rcl(), tmp_path)
    assert again["target"].tolist() == table["target"].tolist()


# ---- parsing and the prompt


@pytest.mark.parametrize(
    "answer, problem",
    [("", "empty rationale"), ("   ", "empty rationale"), ("Because.\nAnswer: 4", 'a line starts with "Answer:"')],
)
def test_unusable_rationales(answer, problem):
    with pytest.raises(InvalidAnswer, match=problem):
        parse_rationale(answer)


def test_rationale_parsing_and_the_versioned_prompt():
    assert parse_rationale("```\nThe digits add up.\n```") == "The digits add up."
    assert parse_rationale("  The final answer: 4 follows.  ") == "The final answer: 4 follows."
    messages = build_messages("Add the numbers.", "2, 3", "5", "rcl-v1")
    assert messages[1]["content"] == PROMPTS["rcl-v1"].format(instruction="Add the numbers.", input="2, 3", answer="5")
    assert "Correct answer:\n5" in messages[1]["content"]
    with pytest.raises(Exception, match="unknown prompt version"):
        build_messages("a", "b", "c", "rcl-v0")


# ---- openai backend against the real local server


def test_openai_rationales_are_repaired_cached_and_paid_once(instances, endpoint, server, tmp_path):
    marked = instances.copy()
    first = marked.index[(marked["split"] == "train") & (marked["task"] == "reverse")][0]
    marked.loc[first, "instruction"] = "MARKER " + marked.loc[first, "instruction"]
    config = openai_rcl(endpoint, server)
    table, rcl_instances = write_rationales(marked, TASKS, config, tmp_path / "cache")
    train = marked[marked["split"] == "train"]
    distinct = len(set(zip(train["instruction"], train["input"], train["output"].map(lambda refs: refs[0]))))
    assert set(table["status"]) == {"ok"} and set(table["backend"]) == {"openai"}
    assert server.count() == distinct + 1  # one request per distinct example, plus one repair
    repaired = table.loc[table["instance_id"] == marked.loc[first, "instance_id"]].iloc[0]
    assert repaired["rationale"] == "Looking again at the input, the reasoning holds."
    assert repaired["cost_usd"] > 0 and repaired["prompt_tokens"] > 0
    paid = server.count()
    again, _ = write_rationales(marked, TASKS, config, tmp_path / "cache")
    assert server.count() == paid  # everything from the cache
    assert again["target"].tolist() == table["target"].tolist()


def test_a_rationale_cut_at_max_tokens_is_asked_again(instances, endpoint, server, tmp_path):
    server.inject("truncated")  # the first request: half its text, finish_reason "length"; the half still parses
    table, _ = write_rationales(instances, TASKS, openai_rcl(endpoint, server), tmp_path / "cache")
    train = instances[instances["split"] == "train"]
    distinct = len(set(zip(train["instruction"], train["input"], train["output"].map(lambda refs: refs[0]))))
    assert set(table["status"]) == {"ok"} and server.count() == distinct + 1  # one repair request
    repair = [m for m in server.chat_messages() if "could not be used" in m[-1]["content"]]
    assert len(repair) == 1 and "finish_reason=length" in repair[0][-1]["content"]
    assert (table["rationale"] == "Looking again at the input, the reasoning holds.").any()


def test_budget_stops_cleanly_and_the_rerun_pays_only_the_rest(instances, endpoint, server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match=r"rationales missing .*skipped_budget"):
        write_rationales(instances, TASKS, openai_rcl(endpoint, server, max_requests=5), cache)
    assert server.count() == 5
    table, rcl_instances = write_rationales(
        instances, TASKS, openai_rcl(endpoint, server, max_requests=3) | {"allow_missing": True}, cache
    )
    assert server.count() == 8 and (table["status"] == "ok").sum() == 8
    missing = table[table["status"] != "ok"]
    assert set(missing["status"]) == {"skipped_budget"}
    assert all(t == f"Answer: {a}" for t, a in zip(missing["target"], missing["answer"]))  # the answer line alone
    full, _ = write_rationales(instances, TASKS, openai_rcl(endpoint, server), cache)
    assert server.count() == len(full) and set(full["status"]) == {"ok"}  # only the missing calls


KILLED_RUN = textwrap.dedent(
    """
    import json, sys
    import pandas as pd
    from inscl.instructions.rationales import write_rationales
    path, rcl, cache = json.loads(sys.argv[1])
    write_rationales(pd.read_parquet(path), ["sentiment", "addition", "reverse"], rcl, cache)
    """
)


def stored_keys(cache) -> set[str]:
    return {json.loads(p.read_text())["key"] for p in (cache / "api").rglob("*.json")}


def test_a_killed_rationale_run_never_pays_twice(instances, endpoint, api_key, tmp_path):
    cache = tmp_path / "cache"
    path = tmp_path / "instances.parquet"
    artifacts.write(instances, "instances", path)
    with OpenAIServer(responder=reasoning_responder, api_key=api_key) as first_server:
        first_server.hold_after(7)  # 7 answers arrive; later requests wait unanswered until the kill
        config = openai_rcl({**endpoint, "max_concurrency": 2, "timeout_s": 60}, first_server)
        process = subprocess.Popen(
            [sys.executable, "-c", KILLED_RUN, json.dumps([str(path), config, str(cache)])],
            env=os.environ.copy(),
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while len(list((cache / "api").rglob("*.json"))) < 7 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL
        saved = stored_keys(cache)
        assert len(saved) == 7
    with OpenAIServer(responder=reasoning_responder, api_key=api_key) as rerun_server:
        table, _ = write_rationales(instances, TASKS, openai_rcl(endpoint, rerun_server), cache)
        assert set(table["status"]) == {"ok"}
        assert rerun_server.count() == len(table) - len(saved)  # only the calls the killed run had not paid
        sent = {m[1]["content"] for m in rerun_server.chat_messages()}
    train = instances[instances["split"] == "train"]
    keys = [
        json.dumps([i, x, o[0]], ensure_ascii=False)
        for i, x, o in zip(train["instruction"], train["input"], train["output"])
    ]
    missing = [k for k in keys if k not in saved]
    assert len(sent) == len(missing) and len(saved | set(missing)) == len(train)
