"""Which tasks are scored (evaluation.tasks: all | seen), how that reaches the metrics and the report, how a
run's prediction work is sharded, and the per-task lengths and truncation of the prompts."""

import pandas as pd
import pytest
from fixtures.eval.tiny_lm import instances_frame
from test_metrics import ORDERS, TASKS, R, U, write_scores
from test_report import METHODS as REPORT_METHODS
from test_report import ORDERS as REPORT_ORDERS
from test_report import SUMMARY, score_matrix, write_artifacts

from inscl.core import artifacts, runs
from inscl.evaluation.lengths import auto_length, cut_at_stop, max_new_tokens_per_task, prompt_room, stop_strings
from inscl.evaluation.metrics import build_score_matrix, compute_cl_metrics, load_scores, summarize
from inscl.evaluation.shards import evaluated_tasks, parse_shard, shard_names
from inscl.report.report import build_report, load_inputs

# --- which tasks a run is scored on ---------------------------------------------------------------

ORDER = {"o": ["t1", "t2", "t3"]}
ALL = ["t1", "t2", "t3"]


def test_seen_scores_the_tasks_trained_so_far_as_trace_and_inscl():
    stage2 = runs.chain("o", "m", 0, 2)
    assert evaluated_tasks(stage2, ORDER, ALL, "seen") == ["t1", "t2"]
    assert evaluated_tasks(stage2, ORDER, ALL, "all") == ALL
    assert evaluated_tasks(runs.BASE, ORDER, ALL, "seen") == []
    assert evaluated_tasks(runs.BASE, ORDER, ALL, "all") == ALL
    assert evaluated_tasks(runs.multitask(0), ORDER, ALL, "seen") == ALL
    assert evaluated_tasks(runs.single_task(0, "t2"), ORDER, ALL, "all") == ["t2"]


def test_shards_by_task_and_by_examples():
    assert shard_names(["a", "b"], "run", 100, None) == []
    assert shard_names(["a", "b"], "task", 100, None) == ["a", "b"]
    assert shard_names(["a"], "examples", 40, 100) == ["a.part0", "a.part1", "a.part2"]
    assert parse_shard("task1355_sent.comp.part2") == ("task1355_sent.comp", 2)
    assert parse_shard("NumGLUE-cm") == ("NumGLUE-cm", None)
    with pytest.raises(ValueError, match="shard_by: examples needs evaluation.max_test_per_task"):
        shard_names(["a"], "examples", 40, None)


# --- metrics and report under seen ------------------------------------------------------------------


def seen_score_files(root):
    """Score files as the workflow writes them under seen: no base model, stage k scores tasks 1..k."""
    paths = []
    for seed in (0, 1):
        for stage in (1, 2, 3):
            paths.append(write_scores(root, f"o/m/seed{seed}/stage{stage}", dict(zip(TASKS[:stage], R[stage]))))
        for task, bound in zip(TASKS, U):
            paths.append(write_scores(root, f"single_task/seed{seed}/{task}", {task: bound}))
    return paths


def test_seen_only_metrics_have_only_seen_cells_and_no_fwt(tmp_path):
    scores = load_scores(seen_score_files(tmp_path))
    matrix = build_score_matrix(scores, ORDERS, ["m"], [0, 1], seen_only=True)
    assert (matrix["stage"] >= matrix["task_index"]).all() and len(matrix) == 2 * (1 + 2 + 3)
    cl = compute_cl_metrics(matrix, scores, ORDERS, ["m"], [0, 1], ["single_task"], seen_only=True)
    assert "FWT" not in set(cl["metric"])
    own = cl[(cl["method"] == "m") & cl["task"].isna() & cl["stage"].isna()]
    every = dict(zip(own["metric"] + own["seed"].astype(str), own["value"]))
    assert every["OP0"] == pytest.approx((40 + 65 + 80) / 3)
    assert every["BWT0"] == pytest.approx(((40 - 60) + (65 - 70)) / 2)
    # forgetting: the maximum over the stages that scored the task (j=1: 60, 50; j=2: 70)
    assert every["forgetting0"] == pytest.approx(((60 - 40) + (70 - 65)) / 2)
    assert "FWT" not in set(summarize(cl)["metric"])


def test_report_says_why_fwt_is_absent(tmp_path):
    paths = write_artifacts(tmp_path)
    matrix = score_matrix()
    artifacts.write(matrix[matrix["stage"] >= matrix["task_index"]], "score_matrix", paths["matrix"])
    artifacts.write(SUMMARY[SUMMARY["metric"] != "FWT"], "summary", paths["summary"])
    page, figures = build_report(load_inputs(paths), REPORT_ORDERS, REPORT_METHODS, list(REPORT_ORDERS["o1"]))
    assert ">FWT</th>" not in page
    assert "No FWT: after each stage only the tasks trained so far were scored (evaluation.tasks: seen" in page
    assert any(name.startswith("score_matrix--") for name in figures)
    full, _ = build_report(load_inputs(write_artifacts(tmp_path / "all")), REPORT_ORDERS, REPORT_METHODS, ["alpha"])
    assert "No FWT" not in full


# --- lengths per task, stop strings, truncation -------------------------------------------------------


class WordTokenizer:
    """One token per whitespace-separated word: lengths in the tests are word counts."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[0] * len(text.split()) for text in texts]}


def test_auto_length_is_a_high_percentile_plus_a_margin():
    assert auto_length([1, 2, 2, 3, 10], 100, 0.25, 4, 512) == 17  # ceil(10 * 1.25) + 4
    assert auto_length([5] * 199 + [400], 99, 0.0, 0, 512) == 5  # one outlier in 200 sets no budget
    assert auto_length([600], 99, 0.25, 4, 512) == 512  # TRACE's answer cap
    assert auto_length([], 99, 0.25, 4, 512) == 4


def test_max_new_tokens_per_task_from_train_answers_with_overrides():
    train = instances_frame("train")
    long_answer = train.iloc[[0]].assign(output=[["one two three four five six seven eight"]], instance_id="x")
    instances = pd.concat([train, long_answer, instances_frame("test")], ignore_index=True)
    auto = {"percentile": 100, "margin": 0.0, "extra_tokens": 2, "max_answer_tokens": 512}
    evaluation = {"max_new_tokens": "auto", "auto_length": auto, "max_new_tokens_per_task": {"reverse": 3}}
    lengths = max_new_tokens_per_task(instances, ["sentiment", "addition", "reverse"], WordTokenizer(), evaluation)
    assert lengths == {"sentiment": 8 + 2, "addition": 1 + 2, "reverse": 3}
    fixed = {**evaluation, "max_new_tokens": 512}
    assert max_new_tokens_per_task(instances, ["sentiment", "reverse"], WordTokenizer(), fixed) == {
        "sentiment": 512,
        "reverse": 3,
    }
    # a task without training rows takes its test references
    test_only = instances_frame("test")
    assert max_new_tokens_per_task(test_only, ["addition"], WordTokenizer(), evaluation) == {"addition": 3}


def test_stop_strings_and_prompt_room():
    evaluation = {"stop": ["\n\n"], "stop_per_task": {"Py150": ["<EOL>"]}}
    assert stop_strings("FOMC", evaluation) == ("\n\n",)
    assert stop_strings("Py150", evaluation) == ("<EOL>",)
    assert cut_at_stop("x = 1 <EOL> y", ("<EOL>",)) == ("x = 1 ", True)
    assert cut_at_stop("a\n\nb", ("b", "\n\n")) == ("a", True)
    assert cut_at_stop("abc", ()) == ("abc", False)
    assert prompt_room(4096, 512, 1024) == 1024  # TRACE: prompts up to 1024 tokens, answers up to 512
    assert prompt_room(1200, 512, 1024) == 688
    assert prompt_room(None, 512, None) is None
    with pytest.raises(ValueError, match="max_new_tokens=256 leaves no room"):
        prompt_room(256, 256, None)
