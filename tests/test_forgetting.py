"""InsCL's forgetting analysis (inscl.evaluation.forgetting): the offline classifier on hand-made cases of
both kinds, which examples count as forgotten (under evaluation.tasks seen and all), and the judge
through the real local OpenAI-compatible server."""

import json

import pandas as pd
import pytest
from openai_server import OpenAIServer, last_user_text

from inscl.core import artifacts
from inscl.core.io import InputError
from inscl.core.llm import InvalidAnswer
from inscl.evaluation.answers import AnswerProfile
from inscl.evaluation.forgetting import (
    RELATED,
    RETAINED,
    UNRELATED,
    analyse_chain,
    classify_offline,
    parse_category,
)

SENTIMENT = AnswerProfile.of(["positive", "negative"] * 5)
SUMS = AnswerProfile.of(["3", "12", "7", "9", "10"])
REVERSE = AnswerProfile.of(["c b a", "a c b", "b a c"])
SUMMARY = AnswerProfile.of(
    [
        "The council approved the budget after a short debate.",
        "Residents asked for more bus lines; the item was referred to committee.",
        "The hearing on the zoning change was postponed to May.",
        "A motion to fund the library passed unanimously.",
        "Staff presented the annual report on street repairs.",
        "The council adopted the parking ordinance with one amendment.",
    ]
)
SUMMARY_INSTRUCTION = "Write a summary of the following meeting transcripts."
TRANSCRIPT = "Thank you. Moving on. We have three hearings. Item 17, communication from the city attorney."


@pytest.mark.parametrize(
    "answer, marker, rationale_run, profile, instruction, expected",
    [
        # instruction-related: the instruction is no longer followed
        ("", False, False, SENTIMENT, "Is the review positive or negative?", RELATED),
        ("neutral", False, False, SENTIMENT, "Is the review positive or negative?", RELATED),
        ("the pizza was great", False, False, SENTIMENT, "Is the review positive or negative?", RELATED),
        ("seven", False, False, SUMS, "Add the two numbers.", RELATED),
        ("3 and 4", False, False, SUMS, "Add the two numbers.", RELATED),
        ("c b", False, False, REVERSE, "Reverse the order of the letters.", RELATED),
        ("cba", False, False, REVERSE, "Reverse the order of the letters.", RELATED),
        ("positive", False, True, SENTIMENT, "Is the review positive or negative?", RELATED),  # rcl, no answer line
        ("The council " + "met and talked " * 40, False, False, SUMMARY, SUMMARY_INSTRUCTION, RELATED),  # too long
        ("Write a summary of the following meeting transcripts.", False, False, SUMMARY, SUMMARY_INSTRUCTION, RELATED),
        # instruction-unrelated: followed, with the wrong content
        ("negative", False, False, SENTIMENT, "Is the review positive or negative?", UNRELATED),
        ("Positive", False, False, SENTIMENT, "Is the review positive or negative?", UNRELATED),
        ("8", False, False, SUMS, "Add the two numbers.", UNRELATED),
        ("b c a", False, False, REVERSE, "Reverse the order of the letters.", UNRELATED),
        ("negative", True, True, SENTIMENT, "Is the review positive or negative?", UNRELATED),
        ("The council rejected the budget and adjourned.", False, False, SUMMARY, SUMMARY_INSTRUCTION, UNRELATED),
    ],
)
def test_offline_classifier_on_hand_made_cases(answer, marker, rationale_run, profile, instruction, expected):
    category, reason = classify_offline(answer, marker, rationale_run, profile, instruction, TRANSCRIPT)
    assert category == expected, reason
    assert reason


def test_copying_the_input_is_instruction_related():
    category, reason = classify_offline(TRANSCRIPT, False, False, SUMMARY, SUMMARY_INSTRUCTION, TRANSCRIPT)
    assert category == RELATED and "copies the input" in reason


# ---- which examples are forgotten


def predictions(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """(task, instance_id, prediction, reference) rows -> a predictions frame."""
    frame = pd.DataFrame(rows, columns=["task", "instance_id", "prediction", "reference"])
    return frame.assign(prompt="p", references=[[r] for r in frame.pop("reference")])


INSTANCES = pd.DataFrame(
    [
        ("sentiment", "train", f"s{i}", "Positive or negative?", f"text {i}", [label])
        for i, label in enumerate(["positive", "negative"] * 3)
    ]
    + [("sentiment", "test", f"st{i}", "Positive or negative?", f"test {i}", ["positive"]) for i in range(4)]
    + [("addition", "train", f"a{i}", "Add.", f"{i}, 1", [str(i + 1)]) for i in range(5)]
    + [("addition", "test", f"at{i}", "Add.", f"{i}, 2", [str(i + 2)]) for i in range(3)]
    + [
        ("reverse", "train", "r0", "Reverse.", "a b c", ["c b a"]),
        ("reverse", "test", "rt0", "Reverse.", "b c a", ["a c b"]),
    ],
    columns=["task", "split", "instance_id", "instruction", "input", "output"],
)
TASKS = ["sentiment", "addition", "reverse"]
STAGE1 = [  # just after learning sentiment: st0-st2 right, st3 wrong
    ("sentiment", "st0", "positive", "positive"),
    ("sentiment", "st1", "positive", "positive"),
    ("sentiment", "st2", "positive", "positive"),
    ("sentiment", "st3", "negative", "positive"),
]
STAGE2 = [("addition", "at0", "2", "2"), ("addition", "at1", "3", "3"), ("addition", "at2", "9", "4")]
FINAL = [  # st0 kept, st1 a wrong label, st2 no label; at0 kept, at1 not a number; st3 was never learned
    ("sentiment", "st0", "positive", "positive"),
    ("sentiment", "st1", "negative", "positive"),
    ("sentiment", "st2", "4 5", "positive"),
    ("sentiment", "st3", "positive", "positive"),
    ("addition", "at0", "2", "2"),
    ("addition", "at1", "c b a", "3"),
    ("addition", "at2", "4", "4"),
    ("reverse", "rt0", "a c b", "a c b"),
]
EVALUATION = {"metrics": {"default": "exact_match"}, "normalize_exact_match": False}


def chain(seen: bool, rationale: bool = False) -> pd.DataFrame:
    """Stage predictions as evaluation.tasks seen (only the tasks trained so far) or all would hold them."""
    other = [] if seen else [("reverse", "rt0", "x", "a c b")]
    stage1 = STAGE1 + ([] if seen else STAGE2 + other)
    stage2 = STAGE1 + STAGE2 + other
    frames = {1: predictions(stage1), 2: predictions(stage2), 3: predictions(FINAL)}
    if rationale:
        frames = {k: f.assign(prediction="Because.\nAnswer: " + f["prediction"]) for k, f in frames.items()}
    return analyse_chain("o", "m", 0, TASKS, frames, INSTANCES, EVALUATION, {"threshold": 50}, rationale_run=rationale)


@pytest.mark.parametrize("seen", [True, False])
def test_learned_then_wrong_examples_are_classified(seen, tmp_path):
    rows = chain(seen)
    artifacts.write(rows, "forgetting", tmp_path / "f.parquet")
    got = {r.instance_id: r.category for r in rows.itertuples()}
    assert got == {"st0": RETAINED, "st1": UNRELATED, "st2": RELATED, "at0": RETAINED, "at1": RELATED}
    assert set(rows["task_index"]) == {1, 2} and "reverse" not in set(rows["task"])  # the last task is not analysed
    assert rows.loc[rows["instance_id"] == "at1", ["score_learned", "score_final"]].values.tolist() == [[100.0, 0.0]]
    assert set(rows.loc[rows["category"] == RETAINED, "classifier"]) == {"none"}


def test_rcl_answers_are_extracted_before_scoring_and_classifying():
    rows = chain(seen=True, rationale=True)
    assert {r.instance_id: r.category for r in rows.itertuples()} == {
        "st0": RETAINED,
        "st1": UNRELATED,
        "st2": RELATED,
        "at0": RETAINED,
        "at1": RELATED,
    }
    assert rows.loc[rows["instance_id"] == "st1", "answer_final"].item() == "negative"


def test_a_stage_without_its_task_is_a_clear_error():
    frames = {1: predictions(STAGE2), 2: predictions(STAGE1 + STAGE2), 3: predictions(FINAL)}
    with pytest.raises(InputError, match="no predictions for the task"):
        analyse_chain(
            "o", "m", 0, TASKS, frames, INSTANCES, EVALUATION, {"threshold": 50}, sources={1: "stage1.parquet"}
        )


# ---- the judge


@pytest.mark.parametrize(
    "answer, expected",
    [
        ('{"category": "instruction-related", "reason": "not a label"}', (RELATED, "not a label")),
        ('Sure.\n```json\n{"category": "Instruction-Unrelated", "reason": "wrong sum"}\n```', (UNRELATED, "wrong sum")),
    ],
)
def test_parse_category(answer, expected):
    assert parse_category(answer) == expected


@pytest.mark.parametrize("answer", ["no json here", '{"category": "both"}', '{"category": '])
def test_unusable_verdicts(answer):
    with pytest.raises(InvalidAnswer):
        parse_category(answer)


def judge_responder(messages: list[dict], body: dict) -> str:
    """instruction-related when the model answer is not a number, else unrelated."""
    answer = last_user_text(messages).split("Model answer:\n", 1)[1].split("\n\nReply with", 1)[0]
    category = "instruction-unrelated" if answer.strip().isdigit() else "instruction-related"
    return json.dumps({"category": category, "reason": f"judged {answer.strip()}"})


def test_judge_classifies_through_the_server_and_pays_once(api_key, endpoint, tmp_path):
    with OpenAIServer(responder=judge_responder, api_key=api_key) as server:
        forgetting = {
            "threshold": 50,
            "classifier": "openai",
            "prompt_version": "forget-v1",
            "openai": {**endpoint, "base_url": server.base_url},
        }
        frames = {1: predictions(STAGE1 + STAGE2), 2: predictions(STAGE1 + STAGE2), 3: predictions(FINAL)}
        server.inject("server_error", times=100, match="Model answer:\nnegative")  # one example fails for good
        rows = analyse_chain("o", "m", 0, TASKS, frames, INSTANCES, EVALUATION, forgetting, cache_dir=tmp_path)
        forgotten = rows[rows["classifier"] != "none"].set_index("instance_id")
        assert forgotten.loc["at1", "category"] == RELATED and forgotten.loc["at1", "reason"] == "judged c b a"
        assert forgotten.loc["st2", "category"] == RELATED
        assert forgotten.loc["st1", "status"] == "failed" and pd.isna(forgotten.loc["st1", "category"])
        assert forgotten["classifier"].str.startswith("openai:gpt-4:forget-v1").all()
        paid = server.count(status=200)
        server.reset()
        again = analyse_chain("o", "m", 0, TASKS, frames, INSTANCES, EVALUATION, forgetting, cache_dir=tmp_path)
        assert server.count(status=200) == 1  # only the failed one is asked again
        assert paid == 2
        assert again.set_index("instance_id").loc["st1", "category"] == RELATED  # "negative" is no number


def test_first_character_tasks_are_classified_on_their_answer_letter():
    """TRACE's ScienceQA: "A\\nBecause ..." answers scored on the letter (first_char_accuracy)."""
    train = [
        ("sqa", "train", f"q{i}", "Choose an answer.", f"question {i}", [f"{c}\nBecause {i}."])
        for i, c in enumerate("ABCABC")
    ]
    test = [("sqa", "test", f"qt{i}", "Choose an answer.", f"test {i}", ["A\nBecause."]) for i in range(3)]
    other = [("add", "train", "a0", "Add.", "1, 1", ["2"]), ("add", "test", "at0", "Add.", "1, 2", ["3"])]
    instances = pd.DataFrame(train + test + other, columns=INSTANCES.columns)
    learned = predictions([("sqa", f"qt{i}", "A\nBecause it is.", "A\nBecause.") for i in range(3)])
    final = predictions(
        [
            ("sqa", "qt0", "A\nBecause something else.", "A\nBecause."),  # the letter is right: kept
            ("sqa", "qt1", "C\nBecause the leaf is green.", "A\nBecause."),  # another of its letters
            ("sqa", "qt2", "The leaf is green.", "A\nBecause."),  # no answer letter first
            ("add", "at0", "3", "3"),
        ]
    )
    evaluation = {"metrics": {"default": "exact_match", "per_task": {"sqa": "first_char_accuracy"}}}
    rows = analyse_chain("o", "m", 0, ["sqa", "add"], {1: learned, 2: final}, instances, evaluation, {"threshold": 50})
    assert {r.instance_id: r.category for r in rows.itertuples()} == {
        "qt0": RETAINED,
        "qt1": UNRELATED,
        "qt2": RELATED,
    }
