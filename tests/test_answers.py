"""inscl.evaluation.answers: RCL's answer-extraction rule and the answer profile of a task."""

import pandas as pd
import pytest

from inscl.core import runs
from inscl.core.methods import METHODS
from inscl.evaluation.answers import (
    AnswerProfile,
    answer_rule,
    extract_answer,
    is_number,
    rationale_target,
    run_answer_rule,
    shape,
    split_rationale,
    with_extracted_answers,
)
from inscl.evaluation.score import score_predictions


@pytest.mark.parametrize(
    "generation, answer, marker",
    [
        ("The review praises the food.\nAnswer: positive", "positive", True),
        ("Reasoning.\nAnswer:positive  ", "positive", True),
        ("  Answer: 12", "12", True),  # the marker on the first line
        ("First try.\nAnswer: 3\nOn second thought.\nAnswer: 4", "4", True),  # the last answer line wins
        ("Steps.\nAnswer: A\nBecause the leaf is green.", "A\nBecause the leaf is green.", True),  # multi-line answer
        ("The answer: is not at a line start.\nso 7", "so 7", False),  # no marker line: the last non-empty line
        ("Only reasoning, no answer line\n\n", "Only reasoning, no answer line", False),
        ("", "", False),
        ("answer: lower case is not the marker\nx", "x", False),
    ],
)
def test_rationale_rule_takes_the_text_after_the_last_answer_line(generation, answer, marker):
    assert split_rationale(generation) == (answer, marker)
    assert extract_answer(generation, "rationale") == answer


def test_the_target_is_extracted_back_to_the_answer():
    for answer in ["positive", "12", "c b a", "A\nBecause the leaf is green."]:
        target = rationale_target("The task asks for a label.\nThe input is short.", answer)
        assert target.endswith(f"\nAnswer: {answer}")
        assert extract_answer(target, "rationale") == answer


def test_other_methods_keep_the_generation_as_it_is():
    assert extract_answer("Reasoning\nAnswer: x", "as_is") == "Reasoning\nAnswer: x"
    with pytest.raises(ValueError, match="unknown answer rule"):
        extract_answer("x", "first_line")


def test_the_rule_of_a_run_comes_from_its_method():
    assert answer_rule(METHODS["rcl"]) == "rationale"
    assert answer_rule(METHODS["no_replay"]) == answer_rule(None) == "as_is"
    assert run_answer_rule(runs.chain("o", "rcl", 0, 2)) == "rationale"
    assert run_answer_rule(runs.chain("o", "random", 0, 2)) == "as_is"
    assert run_answer_rule(runs.BASE) == run_answer_rule(runs.multitask(0)) == "as_is"


def test_rcl_predictions_are_scored_on_the_extracted_answer():
    predictions = pd.DataFrame(
        {
            "task": ["t", "t", "t"],
            "instance_id": ["1", "2", "3"],
            "prompt": ["p"] * 3,
            "prediction": ["The text is upbeat.\nAnswer: positive", "Hmm.\nAnswer: negative", "positive"],
            "references": [["positive"], ["positive"], ["positive"]],
        }
    )
    evaluation = {"metrics": {"default": "exact_match"}}
    raw = score_predictions(predictions, evaluation)
    extracted = score_predictions(with_extracted_answers(predictions, "rationale"), evaluation)
    assert raw["score"].tolist() == pytest.approx([100 / 3])
    assert extracted["score"].tolist() == pytest.approx([200 / 3])  # 1 and 3 right ("positive" is its last line)


def test_answer_profile_of_classification_numeric_and_free_text_tasks():
    labels = AnswerProfile.of(["positive", "negative", "positive", "negative", "positive"])
    assert labels.labels == ("positive", "negative") and labels.is_label(" Negative ")
    assert not labels.is_label("neutral")
    numbers = AnswerProfile.of(["12", "3", "1,024", "-4.5"])
    assert numbers.numeric and numbers.labels is None  # each answer seen once: not a label set
    letters = AnswerProfile.of(["c b a", "b a c", "a c b"])
    assert letters.shapes == frozenset({"a a a"}) and not letters.numeric
    free = AnswerProfile.of([f"summary number {i} with {'words ' * i}" for i in range(8)])
    assert free.shapes is None and free.labels is None and (free.min_words, free.max_words) == (4, 11)
    assert AnswerProfile.of(["A", "B", "C", "A", "B", "C"], max_labels=2).labels is None


def test_numbers_and_shapes():
    assert all(is_number(x) for x in ["7", "-3", "+2.5", "1,000", ".5", "1e3"])
    assert not any(is_number(x) for x in ["seven", "7 apples", "", "1,00"])
    assert shape("c b a") == "a a a" and shape("12") == "9" and shape("3.5 kg") == "9.9 a" and shape("x\n\ny") == "a a"
