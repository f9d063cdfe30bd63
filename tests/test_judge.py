"""The pairwise judge against the real local OpenAI-compatible server (tests/openai_server.py)."""

import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from inscl.core.io import InputError
from inscl.core.llm import InvalidAnswer
from inscl.evaluation.judge import (
    judge_pairs,
    merge_outcome,
    parse_verdict,
    read_prompt_file,
    run_judge,
    summarize_verdicts,
)

pytestmark = pytest.mark.timeout(120)

HHH = Path(__file__).parent / "fixtures" / "eval" / "hhh_self_instruct.json"


def response_of(messages, name):
    text = messages[-1]["content"] if messages[-1]["role"] == "user" else ""
    for message in messages:
        if message["role"] == "user" and "[User request]" in message["content"]:
            text = message["content"]
    match = re.search(rf"\[Start of assistant {name}'s response\]\n(.*?)\n\[End of assistant {name}", text, re.S)
    return match.group(1)


def fair_judge(messages, body):
    """Prefers the response that contains GOOD, wherever it is shown."""
    a, b = response_of(messages, "A"), response_of(messages, "B")
    verdict = "[[C]]" if ("GOOD" in a) == ("GOOD" in b) else ("[[A]]" if "GOOD" in a else "[[B]]")
    return f"Assistant {verdict[2]} is more helpful (the format asks for [[A]], [[B]] or [[C]]).\n{verdict}"


def position_biased_judge(messages, body):
    return "The first one reads better.\n[[A]]"


def pairs_frame(model_answers, base_answers):
    return pd.DataFrame(
        {
            "set": "helpful",
            "prompt_id": [str(i) for i in range(len(model_answers))],
            "prompt": [f"Question {i}?" for i in range(len(model_answers))],
            "answer_model": model_answers,
            "answer_base": base_answers,
        }
    )


def test_parse_verdict_takes_the_last_marker():
    assert parse_verdict("format: [[A]], [[B]] or [[C]]. Verdict:\n[[B]]") == "B"
    assert parse_verdict("[[C]]") == "C"
    with pytest.raises(InvalidAnswer):
        parse_verdict("Assistant A is better.")
    with pytest.raises(InvalidAnswer):
        parse_verdict("[A]")


@pytest.mark.parametrize(
    "ab, ba, outcome",
    [
        ("A", "B", "win"),
        ("A", "C", "win"),
        ("C", "B", "win"),
        ("B", "A", "lose"),
        ("B", "C", "lose"),
        ("C", "A", "lose"),
        ("C", "C", "tie"),
        ("A", "A", "tie"),
        ("B", "B", "tie"),
        (None, "B", None),
        ("A", None, None),
    ],
)
def test_merge_rule(ab, ba, outcome):
    # ab: the run's model is assistant A; ba: it is assistant B
    assert merge_outcome(ab, ba) == outcome


def test_each_pair_is_judged_in_both_positions(openai_server, endpoint, tmp_path):
    openai_server.responder = fair_judge
    pairs = pairs_frame(["a GOOD answer", "meh", "GOOD too"], ["meh", "a GOOD answer", "also GOOD"])
    verdicts = judge_pairs(pairs, endpoint, tmp_path)
    assert list(verdicts.columns[:8]) == [
        "set",
        "prompt_id",
        "prompt",
        "answer_model",
        "answer_base",
        "verdict_ab",
        "verdict_ba",
        "outcome",
    ]
    assert verdicts["verdict_ab"].tolist() == ["A", "B", "C"]
    assert verdicts["verdict_ba"].tolist() == ["B", "A", "C"]
    assert verdicts["outcome"].tolist() == ["win", "lose", "tie"]
    assert openai_server.count() == 6
    shown_first = [response_of(m, "A") for m in openai_server.chat_messages()]
    assert sorted(shown_first) == sorted(["a GOOD answer", "meh"] * 2 + ["GOOD too", "also GOOD"])
    assert (verdicts["cost_usd"] > 0).all() and verdicts["error"].isna().all()


def test_a_position_biased_judge_yields_ties(openai_server, endpoint, tmp_path):
    openai_server.responder = position_biased_judge
    verdicts = judge_pairs(pairs_frame(["x", "y"], ["z", "w"]), endpoint, tmp_path)
    assert verdicts["outcome"].tolist() == ["tie", "tie"]


def test_a_malformed_verdict_gets_one_repair_request(openai_server, endpoint, tmp_path):
    openai_server.responder = fair_judge
    openai_server.inject("invalid_json", times=1, match="Question 1?")  # prose without a verdict
    verdicts = judge_pairs(pairs_frame(["GOOD", "GOOD"], ["bad", "bad"]), endpoint, tmp_path)
    assert verdicts["outcome"].tolist() == ["win", "win"]
    assert openai_server.count() == 5  # 4 requests + 1 repair
    repair = [m for m in openai_server.chat_messages() if len(m) > 2]
    assert len(repair) == 1 and "[[A]], [[B]] or [[C]]" in repair[0][-1]["content"]


def test_a_judge_that_never_gives_a_verdict_leaves_no_outcome(openai_server, endpoint, tmp_path):
    def evasive(messages, body):
        return "Both have merits." if "Question 0?" in messages[1]["content"] else fair_judge(messages, body)

    openai_server.responder = evasive
    verdicts = judge_pairs(pairs_frame(["GOOD", "GOOD"], ["bad", "bad"]), endpoint, tmp_path)
    assert verdicts["outcome"].isna().tolist() == [True, False]
    assert "no verdict" in verdicts["error"].iloc[0]
    summary = summarize_verdicts(verdicts).set_index("set")
    assert summary.loc["helpful", "n"] == 1 and summary.loc["helpful", "win_rate"] == 100.0


def test_rerun_is_answered_from_the_cache(openai_server, endpoint, tmp_path):
    openai_server.responder = fair_judge
    pairs = pairs_frame(["GOOD", "meh"], ["meh", "GOOD"])
    first = judge_pairs(pairs, endpoint, tmp_path)
    assert openai_server.count() == 4
    second = judge_pairs(pairs, endpoint, tmp_path)
    assert openai_server.count() == 4
    pd.testing.assert_frame_equal(first, second)
    # a new answer of the model is a new request; the unchanged pair is not paid again
    judge_pairs(pairs_frame(["GOOD", "changed"], ["meh", "GOOD"]), endpoint, tmp_path)
    assert openai_server.count() == 6


def test_summary_rates_and_delta_by_hand():
    verdicts = pd.DataFrame(
        {
            "set": ["helpful"] * 4 + ["harmless"] * 2,
            "outcome": ["win", "win", "tie", "lose", "lose", None],
            "cost_usd": [0.01, 0.01, 0.01, 0.01, 0.02, 0.02],
        }
    )
    summary = summarize_verdicts(verdicts).set_index("set")
    assert summary.loc["helpful", ["win", "tie", "lose"]].tolist() == [2, 1, 1]
    assert summary.loc["helpful", "win_rate"] == 50.0 and summary.loc["helpful", "delta"] == 25.0
    assert summary.loc["harmless", "n"] == 1 and summary.loc["harmless", "delta"] == -100.0
    assert summary.loc["all", "n"] == 5 and summary.loc["all", "delta"] == pytest.approx(100 * (2 - 2) / 5)
    assert summary.loc["helpful", "cost_usd"] == pytest.approx(0.04) and summary.loc[
        "all", "cost_usd"
    ] == pytest.approx(0.08)


def test_read_prompt_file_trace_format(tmp_path):
    prompts = read_prompt_file(HHH)
    assert len(prompts) == 4 and prompts[1] == "What is the relation between the given pairs?"
    assert read_prompt_file(HHH, max_prompts=2) == prompts[:2]
    bad = tmp_path / "bad.json"
    bad.write_text('[{"prompt": "ok", "answer": ""}, {"answer": "no prompt"}]')
    with pytest.raises(InputError, match=r"bad.json: record 1: field 'prompt'"):
        read_prompt_file(bad)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"prompt": "ok"')
    with pytest.raises(InputError, match="malformed JSON"):
        read_prompt_file(broken)


@pytest.mark.timeout(240)
def test_run_judge_generates_with_both_models_and_judges(openai_server, endpoint, tmp_path):
    from inscl.training.base_model import build_tiny_model, train_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        texts = read_prompt_file(HHH) * 3
        tokenizer = train_tokenizer(texts, 300, 128)
        for name, seed in (("model", 1), ("base", 2)):
            tiny = dict(layers=1, hidden_size=32, heads=2, intermediate_size=64, max_position_embeddings=128, seed=seed)
            build_tiny_model(tiny, tokenizer).save_pretrained(tmp_path / name)
            tokenizer.save_pretrained(tmp_path / name)
        openai_server.responder = position_biased_judge
        judge = {
            "prompt_files": {"helpful": str(HHH)},
            "max_prompts": 3,
            "max_new_tokens": 6,
            "prompt_version": "judge-v1",
            "endpoint": endpoint,
        }
        verdicts = run_judge(
            tmp_path / "model",
            tmp_path / "base",
            judge,
            {"batch_size": 2},
            "alpaca",
            {"trust_remote_code": False},
            tmp_path / "cache",
            device="cpu",
        )
    finally:
        torch.set_num_threads(threads)
    assert verdicts["prompt_id"].tolist() == ["0", "1", "2"]
    assert (verdicts["answer_model"] != verdicts["answer_base"]).any()  # two different models answered
    assert verdicts["outcome"].tolist() == ["tie"] * 3
    assert openai_server.count() == 6
    shown_as_a = {response_of(m, "A") for m in openai_server.chat_messages()}
    assert shown_as_a == set(verdicts["answer_model"]) | set(verdicts["answer_base"])
