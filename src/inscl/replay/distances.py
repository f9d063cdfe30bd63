"""Task distances: W1 between the instruction-embedding sets of two tasks, cost 1 - cosine.

The exact solver (POT's network simplex) stops silently at its iteration cap and returns a
wrong value; here the cap is sized to the problem, checked, and escalated, and a solve that
still does not converge is an error. Entropic Sinkhorn is optional for very large sets.
"""

from __future__ import annotations

import itertools
import logging
import time
import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
import ot
import pandas as pd
from tqdm import tqdm

from inscl.core.io import InputError

log = logging.getLogger(__name__)

EMD_OPTIMAL = 1  # POT network simplex result code for an optimal solution
ESCALATION_FACTOR = 10
ESCALATIONS = 3
SINKHORN_STOP = 1e-9
KERNEL_UNDERFLOW = 700.0  # exp(-700) is near float64's smallest normal number


class ConvergenceError(RuntimeError):
    """The solver did not converge within the largest iteration cap tried."""


@dataclass(frozen=True)
class Transport:
    distance: float
    solver: str
    converged: bool
    n_iter: int | None  # Sinkhorn iterations; POT does not report network-simplex iterations
    max_iter: int  # the iteration cap of the final (converged) solve
    seconds: float


def cosine_cost(x_a: np.ndarray, x_b: np.ndarray) -> np.ndarray:
    """1 - cosine similarity, in float64, clipped at 0 against rounding."""
    x_a = np.asarray(x_a, dtype=np.float64)
    x_b = np.asarray(x_b, dtype=np.float64)
    x_a = x_a / np.linalg.norm(x_a, axis=1, keepdims=True)
    x_b = x_b / np.linalg.norm(x_b, axis=1, keepdims=True)
    return np.maximum(1.0 - x_a @ x_b.T, 0.0)


def _masses(weights, n: int) -> np.ndarray:
    masses = np.full(n, 1.0) if weights is None else np.asarray(weights, dtype=np.float64)
    if masses.shape != (n,) or (masses < 0).any() or masses.sum() <= 0:
        raise ValueError(f"weights must be {n} non-negative numbers with a positive sum")
    return masses / masses.sum()


def default_emd_cap(n_a: int, n_b: int) -> int:
    """POT's default cap (100,000) is too low beyond a few thousand points; scale with n_a * n_b."""
    return max(100_000, n_a * n_b)


def _solve_emd(a, b, cost, max_iter):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the result code is checked instead
        value, info = ot.emd2(a, b, cost, numItermax=int(max_iter), log=True)
    return float(value), info["result_code"] == EMD_OPTIMAL, None


def sinkhorn_method(cost: np.ndarray, reg: float) -> str:
    """Plain Sinkhorn (fast) unless a whole row or column of the kernel exp(-cost / reg)
    underflows to zero; then the (much slower) log-domain iteration."""
    worst = max(cost.min(axis=1).max(), cost.min(axis=0).max())
    return "sinkhorn" if worst / reg < KERNEL_UNDERFLOW else "sinkhorn_log"


def _solve_sinkhorn(a, b, cost, reg, method, max_iter):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # convergence is checked from the log instead
        warnings.simplefilter("ignore", RuntimeWarning)  # so is the finiteness of the result
        value, info = ot.sinkhorn2(
            a, b, cost, reg, method=method, numItermax=int(max_iter), stopThr=SINKHORN_STOP, log=True
        )
    errors = info.get("err") or [np.inf]
    value = float(value)
    converged = bool(np.isfinite(value) and np.isfinite(errors[-1]) and errors[-1] < SINKHORN_STOP)
    return value, converged, int(info["niter"])


def wasserstein(
    x_a: np.ndarray,
    x_b: np.ndarray,
    weights_a=None,
    weights_b=None,
    solver: str = "emd",
    reg: float = 0.01,
    max_iter: int | None = None,
    escalations: int | None = None,
) -> Transport:
    """W1 between two weighted point sets (rows are embeddings), cost 1 - cosine.

    Weights default to uniform and are normalised to sum 1. A solve that hits its iteration cap
    is repeated with the cap x10, up to `escalations` times (default 3 for emd, 1 for the
    costlier Sinkhorn), then raises ConvergenceError.
    """
    a, b = _masses(weights_a, len(x_a)), _masses(weights_b, len(x_b))
    cost = cosine_cost(x_a, x_b)
    if solver == "emd":
        cap = max_iter or default_emd_cap(len(a), len(b))
        escalations = ESCALATIONS if escalations is None else escalations
        solve = partial(_solve_emd, a, b, cost)
    elif solver == "sinkhorn":
        cap = max_iter or 10_000
        escalations = 1 if escalations is None else escalations
        solver = sinkhorn_method(cost, reg)
        solve = partial(_solve_sinkhorn, a, b, cost, reg, solver)
    else:
        raise ValueError(f"unknown solver {solver!r}")
    start = time.perf_counter()
    for attempt in range(escalations + 1):
        value, converged, n_iter = solve(cap)
        if converged:
            return Transport(value, solver, True, n_iter, int(cap), time.perf_counter() - start)
        if attempt < escalations:
            log.warning(
                "%s did not converge within %d iterations; retrying with %d", solver, cap, cap * ESCALATION_FACTOR
            )
            cap *= ESCALATION_FACTOR
    advice = "use distance.solver: sinkhorn" if solver == "emd" else "raise distance.sinkhorn_reg"
    raise ConvergenceError(
        f"{solver} did not converge within {cap} iterations ({len(a)} x {len(b)} points); "
        f"raise distance.max_iter or {advice}"
    )


def task_point_sets(
    instances: pd.DataFrame,
    embeddings: pd.DataFrame,
    tasks,
    weights: str = "proportional",
    source="embeddings.parquet",
    instances_source="instances.parquet",
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per task: (instruction embedding matrix, weights) over the instructions of its training
    examples; weights are the example counts (`proportional`) or ones (`uniform`)."""
    if weights not in ("proportional", "uniform"):
        raise ValueError(f"unknown weights {weights!r}")
    train = instances[(instances["split"] == "train") & instances["task"].isin(list(tasks))]
    counts = train.groupby(["task", "instruction_id"]).size()
    vectors = pd.Series(list(embeddings["vector"]), index=embeddings["instruction_id"])
    vectors = vectors[~vectors.index.duplicated()]
    sets = {}
    for task in tasks:
        if task not in counts.index.get_level_values(0):
            raise InputError(instances_source, "task has no training examples", record=task, field="task")
        per_instruction = counts.loc[task]
        missing = ~per_instruction.index.isin(vectors.index)
        if missing.any():
            raise InputError(source, "no embedding for instruction", record=per_instruction.index[missing][0])
        matrix = np.stack([np.asarray(v, dtype=np.float64) for v in vectors.loc[per_instruction.index]])
        mass = per_instruction.to_numpy(dtype=np.float64) if weights == "proportional" else np.ones(len(matrix))
        sets[task] = (matrix, mass)
    return sets


def task_distances(
    point_sets: dict[str, tuple[np.ndarray, np.ndarray]],
    solver: str = "emd",
    reg: float = 0.01,
    max_iter: int | None = None,
    escalations: int | None = None,
    source="embeddings.parquet",
) -> pd.DataFrame:
    """Every ordered pair (task_a, task_b), a != b. W1 is symmetric, so each unordered pair is
    solved once and written in both directions."""
    tasks = sorted(point_sets)
    rows = []
    for task_a, task_b in tqdm(list(itertools.combinations(tasks, 2)), desc="distances", unit="pair"):
        (x_a, w_a), (x_b, w_b) = point_sets[task_a], point_sets[task_b]
        try:
            result = wasserstein(x_a, x_b, w_a, w_b, solver=solver, reg=reg, max_iter=max_iter, escalations=escalations)
        except ConvergenceError as error:
            raise InputError(source, str(error), record=f"{task_a} / {task_b}") from None
        for first, second, n_first, n_second in (
            (task_a, task_b, len(x_a), len(x_b)),
            (task_b, task_a, len(x_b), len(x_a)),
        ):
            rows.append(
                {
                    "task_a": first,
                    "task_b": second,
                    "distance": result.distance,
                    "solver": result.solver,
                    "converged": result.converged,
                    "n_iter": result.n_iter,
                    "max_iter": result.max_iter,
                    "seconds": result.seconds,
                    "n_a": n_first,
                    "n_b": n_second,
                }
            )
    columns = ["task_a", "task_b", "distance", "solver", "converged", "n_iter", "max_iter", "seconds", "n_a", "n_b"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["n_iter"] = frame["n_iter"].astype("Int64")
    return frame.sort_values(["task_a", "task_b"]).reset_index(drop=True)
