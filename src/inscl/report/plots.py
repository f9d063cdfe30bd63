"""Every figure of the report, drawn with matplotlib's Agg canvas (no pyplot state) and returned as PNG bytes.

The one place for plot helpers: the colours (one per method, one per task), the figure and PNG
helpers and the annotated heat map are shared by every figure. Each figure takes the rows of an
artifact (``inscl.core.artifacts``) and only reshapes them for drawing.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

DPI = 110
MISSING_COLOUR = "#d9d9d9"


def method_colours(methods: list[str]) -> dict[str, tuple]:
    """One stable colour per method, shared by every figure of a report."""
    palette = colormaps["tab10"].colors
    return {method: palette[i % len(palette)] for i, method in enumerate(methods)}


def task_colours(tasks: list[str]) -> dict[str, tuple]:
    palette = colormaps["tab10" if len(tasks) <= 10 else "tab20"].colors
    return {task: palette[i % len(palette)] for i, task in enumerate(tasks)}


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _text_colour(rgba) -> str:
    red, green, blue = rgba[:3]
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.55 else "white"


def _annotated_heatmap(ax, values: np.ndarray, cmap_name: str, vmin: float, vmax: float, fmt: str, marks=None):
    """Draw `values` (NaN = missing, grey) with each cell's value written in it; return the image."""
    cmap = colormaps[cmap_name].with_extremes(bad=MISSING_COLOUR)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    n_rows, n_cols = values.shape
    fontsize = 9 if max(n_rows, n_cols) <= 8 else 7 if max(n_rows, n_cols) <= 14 else 5.5
    span = (vmax - vmin) or 1.0
    for row in range(n_rows):
        for col in range(n_cols):
            value = values[row, col]
            if np.isnan(value):
                ax.text(col, row, "–", ha="center", va="center", fontsize=fontsize, color="#555555")
                continue
            label = format(value, fmt) + ("*" if marks is not None and marks[row, col] else "")
            colour = _text_colour(cmap((value - vmin) / span))
            ax.text(col, row, label, ha="center", va="center", fontsize=fontsize, color=colour)
    return image


def score_matrix_heatmap(matrix: pd.DataFrame, trained_task: dict[int, str], title: str) -> bytes:
    """Heat map of R[k][i]: rows are stages (0 = base model), columns the tasks in training order.

    `trained_task` maps a stage to the task learned in it; that cell is outlined.
    """
    n_stages, n_tasks = matrix.shape
    figure = new_figure(1.6 + 0.85 * n_tasks, 1.4 + 0.45 * n_stages)
    ax = figure.add_subplot()
    image = _annotated_heatmap(ax, matrix.to_numpy(dtype=float), "viridis", 0.0, 100.0, ".1f")
    columns = list(matrix.columns)
    for row, stage in enumerate(matrix.index):
        task = trained_task.get(int(stage))
        if task in columns:
            ax.add_patch(Rectangle((columns.index(task) - 0.5, row - 0.5), 1, 1, fill=False, lw=2, ec="#e4572e"))
    ax.set_xticks(range(n_tasks), columns, rotation=35, ha="right")
    ax.set_yticks(
        range(n_stages),
        [f"{int(s)}: base" if int(s) == 0 else f"{int(s)}: {trained_task.get(int(s), '')}" for s in matrix.index],
    )
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after training stage")
    ax.set_title(title, fontsize=11)
    figure.colorbar(image, ax=ax, label="score (0-100)", shrink=0.9)
    return figure_png(figure)


def _panel_grid(figure: Figure, n_panels: int, max_cols: int, sharey: bool = False):
    n_cols = min(max_cols, n_panels)
    n_rows = math.ceil(n_panels / n_cols)
    axes = figure.subplots(n_rows, n_cols, squeeze=False, sharey=sharey).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return axes[:n_panels]


def forgetting_curves(curves: pd.DataFrame, tasks: list[str], methods: list[str], title: str) -> bytes:
    """One small panel per task: its score after every stage, one line per method (band = ±1 std over seeds).

    `curves` has columns method, task, stage, mean, std; the dotted line marks the stage that trained the task.
    """
    n_cols = min(3, len(tasks))
    n_rows = math.ceil(len(tasks) / n_cols)
    figure = new_figure(3.4 * n_cols, 2.5 * n_rows + 0.8)
    axes = _panel_grid(figure, len(tasks), 3, sharey=True)
    colours = method_colours(methods)
    top = curves["mean"].add(curves["std"].fillna(0)).max()
    top = 100.0 if not np.isfinite(top) else min(100.0, max(10.0, top * 1.08 + 2))
    n_stages = len(tasks)
    for position, (ax, task) in enumerate(zip(axes, tasks)):
        for method in methods:
            line = curves[(curves["task"] == task) & (curves["method"] == method)].sort_values("stage")
            if line.empty:
                continue
            x, mean, std = line["stage"].to_numpy(), line["mean"].to_numpy(float), line["std"].fillna(0).to_numpy(float)
            ax.plot(x, mean, marker="o", markersize=3, lw=1.6, color=colours[method], label=method)
            if np.any(std > 0):
                ax.fill_between(x, mean - std, mean + std, color=colours[method], alpha=0.15, lw=0)
        ax.axvline(position + 1, color="#888888", ls=":", lw=1)
        ax.set_title(f"{position + 1}. {task}", fontsize=10)
        ax.set_xticks(range(0, n_stages + 1))
        ax.set_xlim(-0.2, n_stages + 0.2)
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
        ax.set_xlabel("stage", fontsize=8)
        if position % n_cols == 0:
            ax.set_ylabel("score", fontsize=8)
        ax.tick_params(labelsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize=9)
    figure.suptitle(title, fontsize=11)
    return figure_png(figure)


def composition_means(composition: pd.DataFrame) -> pd.DataFrame:
    """Composition rows (artifact "composition", one order, any seeds) -> method, stage, source_task and
    n_examples averaged over the method's seeds (a seed without a row for a pair counts as 0)."""
    seeds = composition.groupby("method")["seed"].nunique()
    totals = composition.groupby(["method", "stage", "source_task"], as_index=False)["n_examples"].sum()
    return totals.assign(n_examples=totals["n_examples"] / totals["method"].map(seeds))


def replay_composition(composition: pd.DataFrame, methods: list[str], order_tasks: list[str], title: str) -> bytes:
    """Stacked bars per method: replayed examples per stage, coloured by the earlier task they come from.

    `composition` holds the composition rows of one order (method, seed, stage, source_task, n_examples);
    the bars are the mean over seeds. A method without rows (it replays nothing) gets a "no replay" panel.
    """
    means = composition_means(composition)
    panel_width = max(3.6, 1.2 + 0.3 * len(order_tasks))
    figure = new_figure(panel_width * min(3, len(methods)), 2.9 * math.ceil(len(methods) / 3) + 0.9)
    axes = _panel_grid(figure, len(methods), 3, sharey=True)
    colours = task_colours(order_tasks)
    stages = np.arange(1, len(order_tasks) + 1)
    drawn = {}
    for position, (ax, method) in enumerate(zip(axes, methods)):
        rows = means[means["method"] == method]
        table = rows.pivot_table(index="stage", columns="source_task", values="n_examples", aggfunc="sum")
        table = table.reindex(index=stages, fill_value=0).fillna(0)
        bottom = np.zeros(len(stages))
        for task in [t for t in order_tasks if t in table.columns] + [t for t in table.columns if t not in order_tasks]:
            heights = table[task].to_numpy(float)
            drawn[task] = ax.bar(stages, heights, bottom=bottom, color=colours.get(task, "#999999"), width=0.75)
            bottom += heights
        if not bottom.any():
            ax.text(0.5, 0.5, "no replay", transform=ax.transAxes, ha="center", va="center", color="#777777")
        ax.set_title(method, fontsize=10)
        if len(order_tasks) <= 8:
            ax.set_xticks(
                stages, [f"{s}: {t}" for s, t in zip(stages, order_tasks)], fontsize=7, rotation=40, ha="right"
            )
        else:  # too many to name: stage numbers (the order is printed above the figure)
            ax.set_xticks(stages, [str(s) for s in stages], fontsize=7)
            ax.set_xlabel("stage", fontsize=8)
        if position % 3 == 0:
            ax.set_ylabel("replayed examples", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    if drawn:
        figure.legend(
            list(drawn.values()),
            list(drawn),
            title="replayed task",
            loc="outside right center",
            fontsize=8,
            title_fontsize=8,
        )
    figure.suptitle(title, fontsize=11)
    return figure_png(figure)


def distance_matrix(distances: pd.DataFrame, tasks: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Distance rows (artifact "distances") -> the square matrix over `tasks` (row = task_a, column =
    task_b, 0 on a missing diagonal, NaN elsewhere when missing) and the matrix of non-converged solves."""
    table = distances.pivot_table(index="task_a", columns="task_b", values="distance", aggfunc="mean")
    table = table.reindex(index=tasks, columns=tasks)
    for task in tasks:
        if pd.isna(table.loc[task, task]):
            table.loc[task, task] = 0.0
    failed = distances.assign(failed=~distances["converged"].fillna(False).astype(bool))
    not_converged = failed.pivot_table(index="task_a", columns="task_b", values="failed", aggfunc="max")
    not_converged = not_converged.reindex(index=tasks, columns=tasks).fillna(False).astype(bool)
    return table, not_converged


def distance_heatmap(distances: pd.DataFrame, tasks: list[str], title: str) -> bytes:
    """Square heat map of the task distances over `tasks` (row = task_a, column = task_b) from the rows of
    the distances artifact; `*` marks a solve that did not converge."""
    table, not_converged = distance_matrix(distances, tasks)
    n_tasks = len(tasks)
    figure = new_figure(2.2 + 0.8 * n_tasks, 1.6 + 0.6 * n_tasks)
    ax = figure.add_subplot()
    values = table.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    image = _annotated_heatmap(ax, values, "magma_r", 0.0, vmax, ".3f", marks=not_converged.to_numpy(dtype=bool))
    ax.set_xticks(range(n_tasks), tasks, rotation=35, ha="right")
    ax.set_yticks(range(n_tasks), tasks)
    ax.set_title(title, fontsize=11)
    figure.colorbar(image, ax=ax, label="Wasserstein distance (1 − cosine cost)", shrink=0.9)
    return figure_png(figure)


def relative_gain_curves(gains: pd.DataFrame, methods: list[str], n_stages: int, title: str) -> bytes:
    """InsCL relative gain after each stage, one line per method; `gains` has method, stage, mean, std."""
    figure = new_figure(6.4, 3.8)
    ax = figure.add_subplot()
    colours = method_colours(methods)
    for method in methods:
        line = gains[gains["method"] == method].sort_values("stage")
        if line.empty:
            continue
        ax.errorbar(
            line["stage"],
            line["mean"],
            yerr=line["std"].fillna(0),
            marker="o",
            markersize=4,
            capsize=3,
            lw=1.6,
            color=colours[method],
            label=method,
        )
    ax.axhline(100, color="#888888", ls=":", lw=1)
    ax.set_xticks(range(2, n_stages + 1))
    ax.set_xlabel("after training stage")
    ax.set_ylabel("relative gain (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=11)
    return figure_png(figure)


def outcome_bars(rates: pd.DataFrame, title: str) -> bytes:
    """Horizontal stacked bars of win/tie/lose rates (%), one per row of `rates` (artifact "judge_rates":
    run, set, win_rate, tie_rate, lose_rate)."""
    labels = [f"{run} · {judged_set}" for run, judged_set in zip(rates["run"], rates["set"])]
    figure = new_figure(7.5, 1.2 + 0.42 * len(labels))
    ax = figure.add_subplot()
    left = np.zeros(len(labels))
    for outcome, colour in [("win", "#3a9d5d"), ("tie", "#b8bec9"), ("lose", "#d1495b")]:
        widths = rates[f"{outcome}_rate"].fillna(0).to_numpy(float)
        ax.barh(range(len(labels)), widths, left=left, color=colour, label=outcome, height=0.7)
        for y, (x0, width) in enumerate(zip(left, widths)):
            if width >= 7:
                ax.text(x0 + width / 2, y, f"{width:.0f}", ha="center", va="center", fontsize=8)
        left += widths
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of judged prompts")
    figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8)
    ax.set_title(title, fontsize=11)
    return figure_png(figure)


FORGETTING_COLOURS = {"instruction_related": "#d1495b", "instruction_unrelated": "#2f6fb3", "unsettled": "#b8bec9"}


def forgetting_categories(counts: pd.DataFrame, methods: list[str], tasks: list[str], title: str) -> bytes:
    """Stacked bars per method panel: for each task, the share (%) of its forgotten examples that are
    instruction-related, instruction-unrelated or unsettled (the judge gave no verdict); the number
    above a bar is how many were forgotten. `counts` has method, task, forgotten and one column per
    category (summed over seeds)."""
    figure = new_figure(
        max(3.6, 1.2 + 0.55 * len(tasks)) * min(3, len(methods)), 3.0 * math.ceil(len(methods) / 3) + 0.9
    )
    axes = _panel_grid(figure, len(methods), 3, sharey=True)
    positions = np.arange(len(tasks))
    handles = {}
    for position, (ax, method) in enumerate(zip(axes, methods)):
        rows = counts[counts["method"] == method].set_index("task").reindex(tasks)
        forgotten = rows["forgotten"].fillna(0).to_numpy(float)
        bottom = np.zeros(len(tasks))
        for category, colour in FORGETTING_COLOURS.items():
            values = rows[category].fillna(0).to_numpy(float) if category in rows else np.zeros(len(tasks))
            shares = np.divide(100 * values, forgotten, out=np.zeros(len(tasks)), where=forgotten > 0)
            handles[category] = ax.bar(positions, shares, bottom=bottom, color=colour, width=0.7)
            bottom += shares
        for x, n in zip(positions, forgotten):
            ax.text(x, 102, f"{int(n)}", ha="center", va="bottom", fontsize=7, color="#444444")
        ax.set_ylim(0, 115)
        ax.set_xticks(positions, tasks, fontsize=7, rotation=40, ha="right")
        ax.set_title(method, fontsize=10)
        if position % 3 == 0:
            ax.set_ylabel("% of forgotten examples", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    labels = [category.replace("_", "-") for category in handles]
    figure.legend(list(handles.values()), labels, loc="outside lower center", ncols=3, fontsize=8)
    figure.suptitle(title, fontsize=11)
    return figure_png(figure)
