"""Per-order replay summary: how many examples each stage replays from each earlier task, by
method and seed, as a table and a stacked-bar figure; and the task-distance heat map."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .io import InputError, atomic_path

log = logging.getLogger(__name__)

COLUMNS = ["order", "method", "seed", "stage", "current_task", "source_task", "n_examples"]
DPI = 100


def composition(runs: dict[tuple[str, int], Path], order: str, tasks: list[str]) -> pd.DataFrame:
    """One row per (method, seed, stage, earlier task) with the number of replayed examples
    (0 when none). `runs` maps (method, seed) to its replay folder of stage files."""
    rows = []
    for (method, seed), folder in runs.items():
        for stage in range(2, len(tasks) + 1):
            path = Path(folder) / f"stage{stage}.parquet"
            if not path.exists():
                raise InputError(folder, f"missing stage{stage}.parquet")
            counts = pd.read_parquet(path, columns=["task"])["task"].value_counts()
            unknown = set(counts.index) - set(tasks[: stage - 1])
            if unknown:
                problem = f"replays a task that is not earlier in order {order}"
                raise InputError(path, problem, record=sorted(unknown)[0], field="task")
            for source in tasks[: stage - 1]:
                rows.append((order, method, seed, stage, tasks[stage - 1], source, int(counts.get(source, 0))))
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.astype({"seed": "int64", "stage": "int64", "n_examples": "int64"})


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path) -> None:
    with atomic_path(path, ".png") as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)


def task_colours(tasks: list[str]) -> dict[str, tuple]:
    palette = colormaps["tab10" if len(tasks) <= 10 else "tab20"].colors
    return {task: palette[k % len(palette)] for k, task in enumerate(tasks)}


def plot_composition(table: pd.DataFrame, tasks: list[str], methods: list[str], path, order: str = "") -> None:
    """One panel per method: stacked bars per stage of the examples replayed from each earlier
    task (mean over seeds)."""
    columns = min(3, max(1, len(methods)))
    rows = math.ceil(len(methods) / columns)
    figure = _figure(4.2 * columns + 1.5, 3.0 * rows + 0.4)
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True)
    colours = task_colours(tasks)
    stages = np.arange(2, len(tasks) + 1)
    mean = table.groupby(["method", "stage", "source_task"])["n_examples"].mean()
    for k, method in enumerate(methods):
        ax = axes[k // columns][k % columns]
        bottom = np.zeros(len(stages))
        for source in tasks[:-1]:
            heights = np.array([mean.get((method, stage, source), 0.0) for stage in stages])
            ax.bar(stages, heights, bottom=bottom, color=colours[source], label=source, width=0.8)
            bottom += heights
        ax.set_title(method, fontsize=10)
        ax.set_xticks(stages, [f"{s}\n{tasks[s - 1]}" for s in stages], fontsize=8)
        if not bottom.any():
            ax.text(0.5, 0.5, "no replay", transform=ax.transAxes, ha="center", va="center", color="grey")
        ax.set_ylabel("replayed examples" if k % columns == 0 else "")
    for k in range(len(methods), rows * columns):
        axes[k // columns][k % columns].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, title="source task", loc="outside right upper", fontsize=8)
    figure.suptitle(f"Replay composition per stage{f' ({order})' if order else ''}", fontsize=11)
    _save(figure, path)


def plot_distances(distances: pd.DataFrame, tasks: list[str], path, order: str = "") -> None:
    """Heat map of W1(task_a, task_b) over the order's tasks, in order."""
    matrix = (
        distances.pivot_table(index="task_a", columns="task_b", values="distance", aggfunc="first")
        .reindex(index=tasks, columns=tasks)
        .to_numpy(dtype=float, copy=True)
    )
    np.fill_diagonal(matrix, 0.0)
    size = 1.8 + 0.55 * len(tasks)
    figure = _figure(size + 1.2, size)
    ax = figure.subplots()
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=0.0)
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
    if len(tasks) <= 16:
        top = np.nanmax(matrix) if np.isfinite(matrix).any() else 1.0
        for row in range(len(tasks)):
            for col in range(len(tasks)):
                if np.isfinite(matrix[row, col]):
                    colour = "black" if matrix[row, col] > 0.6 * top else "white"
                    ax.text(col, row, f"{matrix[row, col]:.2f}", ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=ax, label="W1 (cost 1 - cosine)")
    ax.set_title(f"Task distances{f' ({order})' if order else ''}", fontsize=10)
    _save(figure, path)
