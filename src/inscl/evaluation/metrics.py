"""The score matrix R[k][i] and the continual-learning metrics derived from it, aggregated over seeds.

R has T + 1 rows (stage k = 0 is the base model, k = 1..T the model after training on the k-th
task of the order) and T columns (the tasks of the order, 1-based index i). With 1-based indices:

- OP = mean_i R[T][i]
- BWT = 1/(T-1) * sum_{i<T} (R[T][i] - R[i][i])
- FWT = 1/(T-1) * sum_{i>=2} (R[i-1][i] - R[0][i]); absent when only seen tasks are evaluated
  (evaluation.tasks: seen, as TRACE and InsCL do): R then has no cell of a task before its stage.
- forgetting (Chaudhry et al. 2018) = mean_{j<T} (max_{1<=l<T} R[l][j] - R[T][j]); the maximum runs
  over the training stages l = 1..T-1, as in Chaudhry (the base model, stage 0, is not a stage), and
  over the stages that evaluated task j (l >= j) when only seen tasks are evaluated.
- relative gain after stage i >= 2 (InsCL) = 100/(i-1) * sum_{j<i} R[i][j] / U_j, with U_j the
  single-task score of task j for the same seed. Undefined (row omitted, warning) when some U_j
  is 0, or when single_task is not a reference.
- forgetting rate of task j < T = (R[j][j] - R[T][j]) / R[j][j], a fraction (omitted when R[j][j] = 0).

Seed aggregation (summary): per (order, method, metric), the mean and the sample standard
deviation (ddof = 1) over seeds; the std is 0 with a single seed. Per seed, relative_gain is
summarised by its value after the final stage T and forgetting_rate by its mean over tasks.
Reference models add rows with metric OP: `multitask` (mean over the order's tasks of the
jointly trained model) and `single_task` (mean of U_j).
"""

from __future__ import annotations

import logging
from typing import Iterable

import numpy as np
import pandas as pd

from inscl.core import artifacts, runs
from inscl.core.io import InputError

log = logging.getLogger(__name__)

SCORE_COLUMNS = artifacts.columns("scores")
METRIC_ORDER = ["OP", "BWT", "FWT", "forgetting", "relative_gain", "forgetting_rate"]


# --- metrics on one matrix (numpy, row = stage 0..T, column = task 1..T) ------------------------


def _check(R: np.ndarray) -> int:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] + 1 or R.shape[1] < 2:
        raise ValueError(f"score matrix must be (T+1) x T with T >= 2, got shape {R.shape}")
    return R.shape[1]


def overall_performance(R) -> float:
    T = _check(R)
    return float(np.mean(np.asarray(R, float)[T]))


def backward_transfer(R) -> float:
    T = _check(R)
    R = np.asarray(R, float)
    return float(np.mean([R[T, i - 1] - R[i, i - 1] for i in range(1, T)]))


def forward_transfer(R) -> float:
    T = _check(R)
    R = np.asarray(R, float)
    return float(np.mean([R[i - 1, i - 1] - R[0, i - 1] for i in range(2, T + 1)]))


def forgetting(R) -> float:
    T = _check(R)
    R = np.asarray(R, float)
    return float(np.mean([np.nanmax(R[1:T, j - 1]) - R[T, j - 1] for j in range(1, T)]))


def relative_gain(R, upper, stage: int) -> float:
    """InsCL relative gain after `stage` (>= 2); NaN when some single-task score U_j is 0."""
    T = _check(R)
    if not 2 <= stage <= T:
        raise ValueError(f"relative gain needs 2 <= stage <= {T}, got {stage}")
    R, upper = np.asarray(R, float), np.asarray(upper, float)
    bounds = upper[: stage - 1]
    if np.any(bounds == 0):
        return float("nan")
    return float(100.0 / (stage - 1) * np.sum(R[stage, : stage - 1] / bounds))


def forgetting_rate(R, task_index: int) -> float:
    """(R[j][j] - R[T][j]) / R[j][j] for 1 <= j < T; NaN when R[j][j] is 0."""
    T = _check(R)
    if not 1 <= task_index < T:
        raise ValueError(f"forgetting rate needs 1 <= task < {T}, got {task_index}")
    R = np.asarray(R, float)
    learned = R[task_index, task_index - 1]
    if learned == 0:
        return float("nan")
    return float((learned - R[T, task_index - 1]) / learned)


# --- runs and score files ----------------------------------------------------------------------


def load_scores(paths: Iterable) -> pd.DataFrame:
    """The primary score of each task in scores.parquet files -> DataFrame(run, task, metric, primary, score, n)."""
    frames = []
    for path in paths:
        df = pd.read_parquet(path)
        missing = [c for c in SCORE_COLUMNS if c not in df.columns]
        if missing:
            raise InputError(path, f"missing column(s) {', '.join(missing)}", field=missing[0])
        df = df[df["primary"].astype(bool)]  # the secondary metrics are reported, not in the matrix
        duplicated = df["task"][df["task"].duplicated()]
        if len(duplicated):
            raise InputError(path, "task has two primary scores", record=duplicated.iloc[0], field="task")
        bad = df["score"].isna() | ~np.isfinite(df["score"].astype(float))
        if bad.any():
            raise InputError(path, "score is not a finite number", record=df["task"][bad].iloc[0], field="score")
        frames.append(df[list(SCORE_COLUMNS)].assign(run=runs.of_path(path).name, source=str(path)))
    if not frames:
        return pd.DataFrame(columns=["run", *SCORE_COLUMNS, "source"])
    return pd.concat(frames, ignore_index=True)[["run", *SCORE_COLUMNS, "source"]]


def _lookup(scores: pd.DataFrame) -> dict:
    return {(r, t): s for r, t, s in zip(scores["run"], scores["task"], scores["score"])}


def _score(table: dict, run: str, task: str) -> float:
    try:
        return float(table[(run, task)])
    except KeyError:
        raise InputError(runs.parse(run).file("scores.parquet"), f"no score for task '{task}'", field="task") from None


# --- the score matrix and the tidy tables ------------------------------------------------------


def build_score_matrix(scores: pd.DataFrame, orders: dict, methods, seeds, seen_only: bool = False) -> pd.DataFrame:
    """R[k][i] for every (order, method, seed) -> tidy DataFrame of the score_matrix artifact; with
    `seen_only`, only the cells of tasks trained by stage k (k >= i >= 1)."""
    table = _lookup(scores)
    rows = []
    for order, tasks in orders.items():
        for method in methods:
            for seed in seeds:
                for stage in range(len(tasks) + 1):
                    run = "base" if stage == 0 else f"{order}/{method}/seed{seed}/stage{stage}"
                    for index, task in enumerate(tasks, start=1):
                        if seen_only and index > stage:
                            continue
                        rows.append((order, method, int(seed), stage, task, index, _score(table, run, task)))
    matrix = pd.DataFrame(rows, columns=artifacts.columns("score_matrix"))
    return matrix.astype({"seed": "int64", "stage": "int64", "task_index": "int64", "score": "float64"})


def matrix_array(matrix: pd.DataFrame, order: str, method: str, seed: int) -> np.ndarray:
    """The (T+1) x T array of one (order, method, seed) from the tidy matrix (NaN where not evaluated)."""
    sub = matrix[(matrix["order"] == order) & (matrix["method"] == method) & (matrix["seed"] == seed)]
    T = int(sub["task_index"].max())
    table = sub.pivot(index="stage", columns="task_index", values="score")
    return table.reindex(index=range(T + 1), columns=range(1, T + 1)).to_numpy()


def _row(order, method, seed, metric, value, task=None, stage=None) -> dict:
    return dict(order=order, method=method, seed=int(seed), metric=metric, task=task, stage=stage, value=float(value))


def compute_cl_metrics(
    matrix: pd.DataFrame, scores: pd.DataFrame, orders: dict, methods, seeds, references=(), seen_only: bool = False
) -> pd.DataFrame:
    """Every CL metric per (order, method, seed), plus reference OP rows -> the cl_metrics artifact.
    With `seen_only` there is no FWT (see the module docstring)."""
    if seen_only:
        log.info("FWT not computed: only seen tasks were evaluated (evaluation.tasks: seen)")
    table = _lookup(scores)
    rows = []
    for order, tasks in orders.items():
        T = len(tasks)
        for seed in seeds:
            upper = None
            if "single_task" in references:
                upper = np.array([_score(table, f"single_task/seed{seed}/{task}", task) for task in tasks])
            for method in methods:
                R = matrix_array(matrix, order, method, seed)
                rows += [
                    _row(order, method, seed, "OP", overall_performance(R)),
                    _row(order, method, seed, "BWT", backward_transfer(R)),
                    *([] if seen_only else [_row(order, method, seed, "FWT", forward_transfer(R))]),
                    _row(order, method, seed, "forgetting", forgetting(R)),
                ]
                if upper is not None:
                    for stage in range(2, T + 1):
                        gain = relative_gain(R, upper, stage)
                        if np.isnan(gain):
                            log.warning(
                                "%s/%s/seed%s: relative gain after stage %d undefined (a single-task score is 0)",
                                order,
                                method,
                                seed,
                                stage,
                            )
                            continue
                        rows.append(_row(order, method, seed, "relative_gain", gain, stage=stage))
                for j in range(1, T):
                    rate = forgetting_rate(R, j)
                    if np.isnan(rate):
                        log.warning(
                            "%s/%s/seed%s: forgetting rate of %s undefined (score 0 after learning it)",
                            order,
                            method,
                            seed,
                            tasks[j - 1],
                        )
                        continue
                    rows.append(_row(order, method, seed, "forgetting_rate", rate, task=tasks[j - 1]))
            if "multitask" in references:
                joint = [_score(table, f"multitask/seed{seed}", task) for task in tasks]
                rows.append(_row(order, "multitask", seed, "OP", np.mean(joint)))
            if upper is not None:
                rows.append(_row(order, "single_task", seed, "OP", upper.mean()))
    cl = pd.DataFrame(rows, columns=artifacts.columns("cl_metrics"))
    return cl.astype({"seed": "int64", "stage": "Int64", "task": "string", "value": "float64"})


def icl_metrics(score_paths: Iterable, orders: dict) -> pd.DataFrame:
    """The icl method's cl_metrics rows: per order and seed, OP = the mean over the order's tasks of the
    base model's primary score with demonstrations (results/icl/seed<seed>/scores.parquet). ICL trains
    nothing, so its score matrix would repeat one row at every stage: it has no BWT, FWT, forgetting
    or relative gain, and no rows for them."""
    rows = []
    for path in score_paths:
        scores = artifacts.read(path, "scores")
        primary = dict(zip(scores.loc[scores["primary"], "task"], scores.loc[scores["primary"], "score"]))
        seed = runs.icl_seed(path)
        for order, tasks in orders.items():
            missing = [task for task in tasks if task not in primary]
            if missing:
                raise InputError(path, "no score for the task", record=missing[0], field="task")
            rows.append(_row(order, "icl", seed, "OP", np.mean([primary[task] for task in tasks])))
    cl = pd.DataFrame(rows, columns=artifacts.columns("cl_metrics"))
    return cl.astype({"seed": "int64", "stage": "Int64", "task": "string", "value": "float64"})


def summarize(cl: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (order, method, metric) -> the summary artifact (NaN-free)."""
    if cl.empty:
        return pd.DataFrame(columns=artifacts.columns("summary"))
    keys = ["order", "method", "seed", "metric"]
    gains = cl[cl["metric"] == "relative_gain"]
    final_gain = gains[gains["stage"] == gains.groupby(keys)["stage"].transform("max")]
    per_seed = pd.concat(
        [
            cl[~cl["metric"].isin(["relative_gain", "forgetting_rate"])][keys + ["value"]],
            final_gain[keys + ["value"]],
            cl[cl["metric"] == "forgetting_rate"].groupby(keys, as_index=False)["value"].mean(),
        ],
        ignore_index=True,
    )
    grouped = per_seed.groupby(["order", "method", "metric"], sort=False)["value"]
    summary = grouped.agg(mean="mean", std=lambda v: float(v.std(ddof=1)) if len(v) > 1 else 0.0, n_seeds="count")
    summary = summary.reset_index()
    method_rank = {m: i for i, m in enumerate(dict.fromkeys(cl["method"]))}
    summary["_m"] = summary["method"].map(method_rank)
    summary["_k"] = summary["metric"].map({m: i for i, m in enumerate(METRIC_ORDER)})
    summary = summary.sort_values(["order", "_m", "_k"], kind="stable").drop(columns=["_m", "_k"])
    return summary[artifacts.columns("summary")].reset_index(drop=True).astype({"n_seeds": "int64"})


# --- judge and general-ability summaries of the final models -------------------------------------


def judge_rates(summary_paths: Iterable) -> pd.DataFrame:
    """The judge's win/tie/lose rates of every judged run (results/judge/<run>/summary.parquet)."""
    frames = [
        artifacts.read(path, "judge_summary").assign(run=runs.of_path(path, runs.JUDGE).name) for path in summary_paths
    ]
    if not frames:
        return pd.DataFrame(columns=artifacts.columns("judge_rates"))
    return pd.concat(frames, ignore_index=True)[artifacts.columns("judge_rates")]


def general_deltas(result_paths: Iterable) -> pd.DataFrame:
    """Per final model and harness task: before (base model), after and delta on the task's
    headline metric (see inscl.evaluation.general_ability.general_delta)."""
    from inscl.evaluation.general_ability import general_delta

    results = {}
    for path in result_paths:
        results[runs.of_path(path, runs.GENERAL).name] = artifacts.read(path, "general")
    if "base" not in results:
        raise InputError(f"{runs.GENERAL}/base/results.parquet", "the base model's results are needed for Delta R^G")
    frames = [
        general_delta(results["base"], after)[0].assign(run=run) for run, after in results.items() if run != "base"
    ]
    if not frames:
        return pd.DataFrame(columns=artifacts.columns("general_delta"))
    return pd.concat(frames, ignore_index=True)[artifacts.columns("general_delta")]
