import math

import numpy as np
import pandas as pd
import pytest

from inscl.core.io import InputError
from inscl.evaluation.metrics import (
    backward_transfer,
    build_score_matrix,
    compute_cl_metrics,
    forgetting,
    forgetting_rate,
    forward_transfer,
    load_scores,
    overall_performance,
    relative_gain,
    summarize,
)

# rows: stage 0 (base) .. 3; columns: tasks 1..3 of the order
R = np.array(
    [
        [10, 20, 30],
        [60, 25, 35],
        [50, 70, 40],
        [40, 65, 80],
    ],
    dtype=float,
)
# seed 1: same base and learning curve, a different final model
R_SEED1 = R.copy()
R_SEED1[3] = [50, 75, 90]
U = np.array([80, 100, 50], dtype=float)  # single-task scores


def test_op_bwt_fwt_by_hand():
    assert overall_performance(R) == pytest.approx((40 + 65 + 80) / 3)
    assert backward_transfer(R) == pytest.approx(((40 - 60) + (65 - 70)) / 2)  # -12.5
    assert forward_transfer(R) == pytest.approx(((25 - 20) + (40 - 30)) / 2)  # 7.5


def test_forgetting_chaudhry_by_hand():
    # j=1: max(60, 50) - 40 = 20; j=2: max(25, 70) - 65 = 5
    assert forgetting(R) == pytest.approx(12.5)


def test_forgetting_maximum_excludes_the_base_model_but_includes_stages_before_learning():
    high_base = R.copy()
    high_base[0, 0] = 95  # the base model is not a training stage
    assert forgetting(high_base) == pytest.approx(12.5)
    early_peak = R.copy()
    early_peak[1, 1] = 80  # task 2 scored higher after stage 1 than after learning it
    assert forgetting(early_peak) == pytest.approx((20 + (80 - 65)) / 2)


def test_relative_gain_by_hand():
    assert relative_gain(R, U, 2) == pytest.approx(100 * 50 / 80)  # 62.5
    assert relative_gain(R, U, 3) == pytest.approx(100 / 2 * (40 / 80 + 65 / 100))  # 57.5
    with pytest.raises(ValueError):
        relative_gain(R, U, 1)
    assert math.isnan(relative_gain(R, np.array([0.0, 100, 50]), 3))


def test_forgetting_rate_by_hand():
    assert forgetting_rate(R, 1) == pytest.approx((60 - 40) / 60)
    assert forgetting_rate(R, 2) == pytest.approx((70 - 65) / 70)
    assert forgetting_rate(R_SEED1, 2) == pytest.approx((70 - 75) / 70)  # negative: improved later
    zero = R.copy()
    zero[1, 0] = 0
    assert math.isnan(forgetting_rate(zero, 1))
    with pytest.raises(ValueError):
        forgetting_rate(R, 3)


def test_two_tasks():
    R2 = np.array([[0, 10], [80, 20], [60, 90]], dtype=float)
    assert backward_transfer(R2) == pytest.approx(-20)
    assert forward_transfer(R2) == pytest.approx(10)
    assert forgetting(R2) == pytest.approx(20)


def test_matrix_shape_is_checked():
    with pytest.raises(ValueError, match="T\\+1"):
        overall_performance(np.zeros((3, 3)))


# --- the tidy pipeline over score files ---------------------------------------------------------

TASKS = ["t1", "t2", "t3"]
ORDERS = {"o": TASKS}


def write_scores(root, run, scores: dict):
    path = root / "results" / "runs" / run / "scores.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = {"task": list(scores), "metric": "rouge_l", "primary": True, "score": list(scores.values()), "n": 10}
    pd.DataFrame(frame).to_parquet(path)
    return path


@pytest.fixture
def score_files(tmp_path):
    paths = [write_scores(tmp_path, "base", dict(zip(TASKS, R[0])))]
    for seed, matrix in ((0, R), (1, R_SEED1)):
        for stage in (1, 2, 3):
            paths.append(write_scores(tmp_path, f"o/m/seed{seed}/stage{stage}", dict(zip(TASKS, matrix[stage]))))
        paths.append(write_scores(tmp_path, f"multitask/seed{seed}", dict(zip(TASKS, [70, 80, 90 + 10 * seed]))))
        for task, bound in zip(TASKS, U):
            paths.append(write_scores(tmp_path, f"single_task/seed{seed}/{task}", {task: bound}))
    return paths


def pipeline(paths, references=("single_task", "multitask")):
    scores = load_scores(paths)
    matrix = build_score_matrix(scores, ORDERS, ["m"], [0, 1])
    cl = compute_cl_metrics(matrix, scores, ORDERS, ["m"], [0, 1], list(references))
    return matrix, cl, summarize(cl)


def test_score_matrix_table(score_files):
    matrix, _, _ = pipeline(score_files)
    assert list(matrix.columns) == ["order", "method", "seed", "stage", "task", "task_index", "score"]
    assert len(matrix) == 2 * 4 * 3
    seed1 = matrix[matrix["seed"] == 1].pivot(index="stage", columns="task_index", values="score")
    np.testing.assert_array_equal(seed1.to_numpy(), R_SEED1)
    assert matrix[(matrix["task"] == "t2")]["task_index"].unique().tolist() == [2]


def pick(cl, metric, seed=0, method="m", **where):
    rows = cl[(cl["seed"] == seed) & (cl["method"] == method) & (cl["metric"] == metric)]
    for column, wanted in where.items():
        rows = rows[rows[column] == wanted]
    return rows


def test_cl_metrics_table(score_files):
    _, cl, _ = pipeline(score_files)
    assert list(cl.columns) == ["order", "method", "seed", "metric", "task", "stage", "value"]
    assert pick(cl, "BWT")["value"].item() == pytest.approx(-12.5)
    assert pick(cl, "relative_gain", stage=2)["value"].item() == pytest.approx(62.5)
    assert pick(cl, "relative_gain", stage=3)["value"].item() == pytest.approx(57.5)
    assert pick(cl, "forgetting_rate", task="t1")["value"].item() == pytest.approx(1 / 3)
    assert set(pick(cl, "forgetting_rate")["task"]) == {"t1", "t2"}
    assert pick(cl, "OP")["task"].isna().all()
    assert pick(cl, "OP", seed=1, method="multitask")["value"].item() == pytest.approx((70 + 80 + 100) / 3)
    assert set(cl[cl["method"] == "multitask"]["metric"]) == {"OP"}
    assert pick(cl, "OP", method="single_task")["value"].item() == pytest.approx(U.mean())


def test_summary_mean_and_sample_std_over_seeds(score_files):
    _, _, summary = pipeline(score_files)
    assert list(summary.columns) == ["order", "method", "metric", "mean", "std", "n_seeds"]
    row = summary.set_index(["method", "metric"])
    assert row.loc[("m", "BWT"), "mean"] == pytest.approx((-12.5 + -2.5) / 2)
    assert row.loc[("m", "BWT"), "std"] == pytest.approx(np.std([-12.5, -2.5], ddof=1))
    assert row.loc[("m", "BWT"), "n_seeds"] == 2
    # relative gain: value after the final stage; forgetting rate: mean over tasks, per seed
    assert row.loc[("m", "relative_gain"), "mean"] == pytest.approx((57.5 + 50 * (50 / 80 + 75 / 100)) / 2)
    rates = [((60 - 40) / 60 + (70 - 65) / 70) / 2, ((60 - 50) / 60 + (70 - 75) / 70) / 2]
    assert row.loc[("m", "forgetting_rate"), "mean"] == pytest.approx(np.mean(rates))
    assert row.loc[("multitask", "OP"), "mean"] == pytest.approx((80 + (70 + 80 + 100) / 3) / 2)
    assert summary["method"].tolist()[0] == "m"
    assert not summary[["mean", "std"]].isna().any().any()


def test_single_seed_std_is_zero(score_files):
    scores = load_scores(score_files)
    matrix = build_score_matrix(scores, ORDERS, ["m"], [0])
    summary = summarize(compute_cl_metrics(matrix, scores, ORDERS, ["m"], [0], ["multitask"]))
    assert (summary["std"] == 0).all() and (summary["n_seeds"] == 1).all()


def test_relative_gain_omitted_without_single_task(score_files):
    _, cl, summary = pipeline(score_files, references=("multitask",))
    assert "relative_gain" not in set(cl["metric"])
    assert "single_task" not in set(cl["method"])
    assert "relative_gain" not in set(summary["metric"])


def test_missing_score_names_the_run_file_and_task(score_files, tmp_path):
    write_scores(tmp_path, "o/m/seed1/stage2", {"t1": 1.0, "t3": 2.0})
    with pytest.raises(InputError, match=r"o/m/seed1/stage2/scores.parquet: field 'task': no score for task 't2'"):
        pipeline(score_files)


def test_bad_score_file_names_the_record(tmp_path):
    path = write_scores(tmp_path, "base", {"t1": 1.0, "t2": float("nan")})
    with pytest.raises(InputError, match="record t2: field 'score'"):
        load_scores([path])
