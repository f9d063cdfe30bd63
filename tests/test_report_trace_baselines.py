"""The report's TRACE-baseline rows and sections: icl (OP only), rcl with offline rationales, the general
data, and the forgetting-category table, from hand-made artifacts written at their DAG paths."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from test_report import SUMMARY, cl_metrics, score_matrix

from inscl.core import artifacts, runs
from inscl.report.report import build_report, load_inputs

pytestmark = pytest.mark.timeout(120)
TASKS = ["alpha", "beta", "gamma"]
ORDERS = {"o1": TASKS}
METHODS = ["no_replay", "inscl", "rcl", "icl"]


def forgetting_rows(method: str, seed: int) -> pd.DataFrame:
    """alpha: 4 learned, 1 kept, 2 instruction-related, 1 unrelated; beta: 2 learned, 1 unrelated, 1 unsettled."""
    categories = [
        ("alpha", "retained", "offline"),
        ("alpha", "instruction_related", "offline"),
        ("alpha", "instruction_related", "offline"),
        ("alpha", "instruction_unrelated", "offline"),
        ("beta", "instruction_unrelated", "offline"),
        ("beta", None, "offline"),
    ]
    return pd.DataFrame(
        [
            dict(order="o1", method=method, seed=seed, task=task, task_index=TASKS.index(task) + 1, instance_id=f"{task}{i}",
                 metric="exact_match", score_learned=100.0, score_final=0.0 if category != "retained" else 100.0,
                 answer_final="x", category=category, reason="r", classifier=classifier, status="ok", cost_usd=0.0)
            for i, (task, category, classifier) in enumerate(categories)
        ]
    )  # fmt: skip


@pytest.fixture
def inputs(tmp_path):
    paths = {
        "matrix": tmp_path / "matrix.parquet",
        "per_run": tmp_path / "cl.parquet",
        "summary": tmp_path / "summary.parquet",
        "rationales": tmp_path / "rationales.parquet",
        "general_data": tmp_path / "general.parquet",
    }
    artifacts.write(score_matrix(), "score_matrix", paths["matrix"])
    artifacts.write(cl_metrics(), "cl_metrics", paths["per_run"])
    icl = dict(order="o1", method="icl", metric="OP", mean=12.5, std=0.5, n_seeds=2)
    artifacts.write(pd.concat([SUMMARY, pd.DataFrame([icl])]), "summary", paths["summary"])
    target = "The task: Add.\nThe input: 2, 3\nThe answer is a number.\nAnswer: 5"
    rationales = pd.DataFrame(
        [dict(task="alpha", instance_id="a1", answer="5", rationale=target.rsplit("\n", 1)[0], target=target,
              backend="offline", model=None, prompt_version="template-v1", prompt_tokens=0, completion_tokens=0,
              cost_usd=0.0, status="ok", error=None)]
    )  # fmt: skip
    artifacts.write(rationales, "rationales", paths["rationales"])
    general = pd.DataFrame(
        [dict(task="lima", split="train", instance_id=f"lima:{i}", instruction_id="h", instruction="Say hi.", input="",
              output=["Hi."], source="lima", source_task="lima", source_file="lima.json") for i in range(3)]
    )  # fmt: skip
    artifacts.write(general, "general_data", paths["general_data"])
    shots = []
    for seed in (0, 1):
        path = tmp_path / runs.icl_folder(seed) / "shots.parquet"
        frame = pd.DataFrame(
            {"task": ["alpha", "alpha", "beta"], "instance_id": ["1", "2", "3"], "shots": [6, 4, 0], "prompt_tokens": 9}
        )
        artifacts.write(frame, "icl_shots", path)
        shots.append(path)
    forgetting = []
    for method in ["no_replay", "inscl"]:
        for seed in (0, 1):
            path = tmp_path / runs.forgetting_file("o1", method, seed)
            artifacts.write(forgetting_rows(method, seed), "forgetting", path)
            forgetting.append(path)
    return load_inputs({**paths, "icl_shots": shots, "forgetting": forgetting})


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_icl_and_rcl_rows_say_what_they_are(inputs):
    page, _ = build_report(inputs, ORDERS, METHODS, TASKS)
    row = re.search(r"<tr><td>icl <span class=\"tag\">no training: OP only</span></td>(.*?)</tr>", page).group(1)
    assert "12.50 ± 0.50" in row and row.count("–") >= 3  # OP, and no BWT, FWT, forgetting
    assert 'rcl <span class="tag">offline template rationales</span>' in page
    text = text_of(page)
    assert "Offline template rationales: each rationale restates the instruction" in text
    assert "The answer is a number. Answer: 5" in text


def test_icl_shots_and_general_data(inputs):
    text = text_of(build_report(inputs, ORDERS, METHODS, TASKS)[0])
    assert "alpha 4 5.00 4–6 9" in text and "beta 2 0.00 0–0 9" in text  # both seeds
    assert "drawn from the task's training split" in text
    assert "3 rows of lima (lima.json)" in text


def test_forgetting_table_counts_and_shares_summed_over_seeds(inputs):
    page, figures = build_report(inputs, ORDERS, METHODS, TASKS)
    text = text_of(page)
    # alpha: 8 learned, 6 forgotten: 4 related, 2 unrelated; beta: 4 learned, 4 forgotten, 2 unrelated, 2 unsettled
    assert "no_replay alpha 8 6 4 (67%) 2 (33%) 0" in text
    assert "no_replay beta 4 4 0 (0%) 2 (50%) 2" in text
    assert "no_replay all tasks 12 10 4 (40%) 4 (40%) 2" in text
    assert "rcl all tasks 0 0 0 0 0" in text  # configured, nothing learned: a row of zeros
    assert "icl all tasks" not in text  # icl trains nothing
    assert "complex reasoning tasks forget mostly the instruction-unrelated way" in text
    assert "forgetting_kinds--o1.png" in figures
