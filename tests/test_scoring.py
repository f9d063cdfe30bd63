import json
import math
from pathlib import Path

import pandas as pd
import pytest

from inscl.core.io import InputError
from inscl.evaluation.score import (
    METRIC_NAMES,
    bleu,
    edit_similarity,
    exact_match,
    example_scorer,
    first_char_accuracy,
    metric_for_task,
    rouge_l,
    sari,
    score_predictions,
    undo_code_literals,
)

TRACE = json.loads((Path(__file__).parent / "fixtures" / "eval" / "trace_examples.json").read_text())


# --- exact match (TRACE accuracy) -----------------------------------------------------------


def test_exact_match_is_raw_equality_after_stripping_surrounding_whitespace():
    assert exact_match("hawkish", ["hawkish"]) == 100.0
    assert exact_match(" hawkish\n", ["hawkish"]) == 100.0
    assert exact_match("Hawkish", ["hawkish"]) == 0.0
    assert exact_match("hawkish.", ["hawkish"]) == 0.0
    assert exact_match("very  hawkish", ["very hawkish"]) == 0.0


def test_exact_match_empty_prediction_is_wrong_even_against_an_empty_reference():
    assert exact_match("", ["hawkish"]) == 0.0
    assert exact_match("   ", [""]) == 0.0


def test_exact_match_normalization_lowercases_and_collapses_whitespace():
    assert exact_match("  Very   HAWKISH ", ["very hawkish"], normalize=True) == 100.0
    assert exact_match("hawkish.", ["hawkish"], normalize=True) == 0.0


def test_exact_match_any_reference():
    assert exact_match("dovish", ["hawkish", "dovish"]) == 100.0
    assert exact_match("neutral", ["hawkish", "dovish"]) == 0.0


def test_exact_match_on_the_trace_fomc_example():
    assert exact_match(TRACE["FOMC"]["answer"], [TRACE["FOMC"]["answer"]]) == 100.0


# --- ROUGE-L ------------------------------------------------------------------------------------


def test_rouge_l_by_hand():
    # LCS("the cat sat on the mat", "the cat lay on the mat") = the cat on the mat = 5 of 6 tokens.
    assert rouge_l("the cat lay on the mat", ["the cat sat on the mat"]) == pytest.approx(100 * 5 / 6)
    # prediction 3 tokens, reference 4, LCS 3: P = 1, R = 3/4, F = 2 * 0.75 / 1.75
    assert rouge_l("a b c", ["a x b c"]) == pytest.approx(100 * 1.5 / 1.75)


def test_rouge_l_uses_the_stemmer_and_the_best_reference():
    assert rouge_l("cats running", ["cat runs"]) == pytest.approx(100.0)
    assert rouge_l("a b c", ["x y z", "a b c"]) == pytest.approx(100.0)
    assert rouge_l("", ["a b c"]) == 0.0


def test_rouge_l_on_the_trace_meetingbank_answer():
    answer = TRACE["MeetingBank"]["answer"]
    assert rouge_l(answer, [answer]) == pytest.approx(100.0)
    half = " ".join(answer.split()[: len(answer.split()) // 2])
    assert 40 < rouge_l(half, [answer]) < 80


# --- edit similarity (TRACE Py150) ------------------------------------------------------------


def test_undo_code_literals_as_trace_py150():
    assert undo_code_literals("x = <NUM_LIT>") == "x = 0"
    assert undo_code_literals("if v < ( <NUM_LIT:2> , <NUM_LIT:7> ) :") == "if v < ( 2 , 7 ) :"
    assert undo_code_literals("s = '<STR_LIT>' + '<STR_LIT:utf-8>' + '<CHAR_LIT>'") == "s = '' + 'utf-8' + ''"
    assert undo_code_literals("c = '<CHAR_LIT:a>'") == "c = 'a'"


def test_edit_similarity_by_hand():
    assert edit_similarity("abcd", ["abcd"]) == pytest.approx(100.0)
    # Indel distance 2 over total length 8: 100 * (1 - 2/8)
    assert edit_similarity("abcd", ["abce"]) == pytest.approx(75.0)
    # literals are undone on both sides before comparing
    assert edit_similarity("x = <NUM_LIT:0>", ["x = <NUM_LIT>"]) == pytest.approx(100.0)
    assert edit_similarity("", ["abc"]) == 0.0
    assert edit_similarity("abcd", ["zzzz", "abce"]) == pytest.approx(75.0)


def test_edit_similarity_on_the_trace_py150_example():
    answer = TRACE["Py150"]["answer"]
    assert edit_similarity(answer, [answer]) == pytest.approx(100.0)
    assert 50 < edit_similarity(answer.replace("REQ", "PUSH"), [answer]) < 100


# --- SARI (HF evaluate semantics) -------------------------------------------------------------

SOURCE = "About 95 species are currently accepted ."
REFERENCES = [
    "About 95 species are currently known .",
    "About 95 species are now accepted .",
    "95 species are now accepted .",
]


def test_sari_matches_the_values_published_in_the_hf_metric_card():
    # https://huggingface.co/spaces/evaluate-metric/sari (metric card examples)
    assert sari(SOURCE, "About 95 you now get in .", REFERENCES) == pytest.approx(26.953601953601954, abs=1e-9)
    assert sari(SOURCE, SOURCE, [SOURCE]) == pytest.approx(100.0)
    # the card's un-tokenized spelling gives the same value after 13a tokenization
    refs = [r.replace(" .", ".") for r in REFERENCES]
    assert sari(SOURCE.replace(" .", "."), "About 95 you now get in.", refs) == pytest.approx(26.953601953601954)


def test_sari_by_hand_addition_recall():
    # 1-grams: keep F1 1, del P 1, add P 1 (0/0) but R 0/1 -> F1 0; 2-grams: add F1 0; 3/4-grams: all 1.
    assert sari("a b", "a", ["a c"]) == pytest.approx(100 * (1 + 1 + 0.5) / 3)


def test_sari_by_hand_two_references():
    # Counts of source and candidate n-grams are multiplied by the number of references (2).
    # 1-grams: keep P = (2/2 + 1/2)/2 = .75, R = 3/3 -> F1 6/7; 2-grams: keep P .5, R 1 -> F1 2/3.
    keep = (6 / 7 + 2 / 3 + 1 + 1) / 4
    assert sari("a b c", "a b", ["a b", "a"]) == pytest.approx(100 * (keep + 1 + 1) / 3)


def test_sari_is_case_insensitive():
    assert sari("A b", "A B", ["a b"]) == pytest.approx(100.0)


# --- per-task scoring -------------------------------------------------------------------------


def predictions_frame():
    return pd.DataFrame(
        [
            dict(task="fomc", instance_id="1", prompt="p", prediction="hawkish", references=["hawkish"]),
            dict(task="fomc", instance_id="2", prompt="p", prediction="dovish", references=["hawkish"]),
            dict(task="fomc", instance_id="3", prompt="p", prediction="", references=["neutral"]),
            dict(task="fomc", instance_id="4", prompt="p", prediction="neutral", references=["neutral"]),
            dict(task="summary", instance_id="5", prompt="p", prediction="a b c", references=["a x b c"]),
            dict(task="code", instance_id="6", prompt="p", prediction="abcd", references=["abce"]),
        ]
    )


def test_metric_for_task_default_and_override():
    cfg = {"default": "rouge_l", "per_task": {"fomc": "exact_match"}}
    assert metric_for_task("fomc", cfg) == "exact_match"
    assert metric_for_task("summary", cfg) == "rouge_l"


def test_score_predictions_per_task_metric():
    cfg = {"metrics": {"default": "rouge_l", "per_task": {"fomc": "exact_match", "code": "edit_similarity"}}}
    scores = score_predictions(predictions_frame(), cfg)
    assert list(scores.columns) == ["task", "metric", "primary", "score", "n"]
    assert scores["primary"].all()
    by_task = scores.set_index("task")
    assert by_task.loc["fomc", "metric"] == "exact_match"
    assert by_task.loc["fomc", "score"] == pytest.approx(50.0)
    assert by_task.loc["fomc", "n"] == 4
    assert by_task.loc["summary", "score"] == pytest.approx(100 * 1.5 / 1.75)
    assert by_task.loc["code", "score"] == pytest.approx(75.0)


def test_score_predictions_sari_uses_the_prompt_as_source():
    df = pd.DataFrame(
        [
            dict(
                task="simplify",
                instance_id="1",
                prompt=SOURCE,
                prediction="About 95 you now get in .",
                references=REFERENCES,
            )
        ]
    )
    scores = score_predictions(df, {"metrics": {"default": "sari"}})
    assert scores["score"].iloc[0] == pytest.approx(26.953601953601954)


def test_score_predictions_names_the_record_without_references():
    df = predictions_frame()
    df.at[1, "references"] = []
    with pytest.raises(InputError, match=r"preds.parquet: record 2: field 'references'"):
        score_predictions(df, {"metrics": {"default": "exact_match"}}, source="preds.parquet")


def test_score_predictions_names_a_missing_column():
    with pytest.raises(InputError, match="field 'prediction'"):
        score_predictions(predictions_frame().drop(columns="prediction"), {}, source="preds.parquet")


# --- TRACE's secondary metrics (BeyonderXX/TRACE metrics.py, evaluations/eval_*.py) ----------------


def test_bleu_by_hand_as_nltk_sentence_bleu_without_smoothing():
    # 4 of 5 unigrams match, same length: BLEU-1 = 4/5
    assert bleu("the cat sat on mats", ["the cat sat on mat"], 1) == pytest.approx(80.0)
    # BLEU-4: p1 = 4/5, p2 = 3/4, p3 = 2/3, p4 = 1/2 -> (4/5 * 3/4 * 2/3 * 1/2) ** (1/4)
    assert bleu("the cat sat on mats", ["the cat sat on mat"], 4) == pytest.approx(100 * 0.2**0.25)
    # brevity penalty: 3 tokens against 6, all matching -> exp(1 - 6/3)
    assert bleu("a b c", ["a b c d e f"], 1) == pytest.approx(100 * math.exp(-1))
    # no 4-gram match -> 0, as nltk without smoothing
    assert bleu("a b c x", ["a b c d"], 4) == 0.0
    # clipped counts: "the the the" against "the cat" -> 1/3
    assert bleu("the the the", ["the cat"], 1) == pytest.approx(100 / 3)
    assert bleu("", ["a"], 1) == 0.0


def test_bleu_tokens_split_at_whitespace_and_periods_as_trace():
    # TRACE tokenizes with re.split(r"\s|\.") and drops empty tokens: "end." == "end"
    assert bleu("It ends right here.", ["It ends right here"], 4) == pytest.approx(100.0)
    # fewer than 4 tokens have no 4-gram: nltk's precision is 0/1 there, so BLEU-4 is 0
    assert bleu("It ends here.", ["It ends here"], 4) == 0.0
    assert bleu("a.b", ["a b"], 1) == pytest.approx(100.0)


def test_first_char_accuracy_is_trace_scienceqa_accuracy():
    assert first_char_accuracy("B\nBecause it floats.", ["B\nBecause wood floats."]) == 100.0
    assert first_char_accuracy(" B", ["B\nx"]) == 100.0
    assert first_char_accuracy("C\nBecause", ["B\nBecause"]) == 0.0
    assert first_char_accuracy("", ["B"]) == 0.0


def test_reasoning_metrics_score_the_text_after_the_answer_letter():
    reasoning_bleu = example_scorer("reasoning_bleu_1")
    assert reasoning_bleu("p", "A\nwood floats", ["B\nwood floats"]) == pytest.approx(100.0)
    assert example_scorer("reasoning_rouge_l")("p", "A\nx y", ["A\nwood floats"]) == 0.0


def test_secondary_metrics_are_rows_beside_the_primary_one():
    frame = pd.DataFrame(
        [
            dict(task="sqa", instance_id="1", prompt="p", prediction="A\nwood floats", references=["A\nwood floats"]),
            dict(task="sqa", instance_id="2", prompt="p", prediction="B\nstone sinks", references=["A\nwood floats"]),
        ]
    )
    cfg = {
        "metrics": {
            "default": "first_char_accuracy",
            "secondary": {"sqa": ["reasoning_bleu_1", "reasoning_bleu_4", "reasoning_rouge_l", "first_char_accuracy"]},
        }
    }
    scores = score_predictions(frame, cfg)
    assert scores["metric"].tolist() == [
        "first_char_accuracy",
        "reasoning_bleu_1",
        "reasoning_bleu_4",
        "reasoning_rouge_l",
    ]
    assert scores["primary"].tolist() == [True, False, False, False]
    assert scores["score"].tolist() == pytest.approx([50.0, 50.0, 0.0, 50.0])  # 2 tokens have no 4-gram


def test_every_metric_name_has_a_scorer_and_a_schema_entry():
    from inscl.core.config import load_schema

    schema = load_schema()["definitions"]["task_metric"]["enum"]
    assert sorted(schema) == sorted(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert 0.0 <= example_scorer(name)("a b", "a b", ["a b"]) <= 100.0
