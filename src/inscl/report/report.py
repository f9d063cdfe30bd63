"""The workflow's HTML report: one self-contained page of tables and embedded PNG plots.

The report only renders: every number it shows is computed by the stage that owns it (metrics,
judge rates, Delta R^G, replay composition) and read here through ``inscl.core.artifacts``.
`load_inputs` reads the artifacts, `build_report` turns them into the page and its figures
(drawn by ``inscl.report.plots``), `write_report` writes both atomically.
"""

from __future__ import annotations

import base64
import html
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from inscl.core import artifacts, runs
from inscl.core.io import InputError, atomic_dir, atomic_path
from inscl.core.methods import METHODS as METHOD_REGISTRY
from inscl.evaluation.forgetting import RELATED, RETAINED, UNRELATED
from inscl.report import plots

log = logging.getLogger(__name__)

# metric -> (column label, higher is better, explanation shown in the page)
METRICS = {
    "OP": (
        "OP",
        True,
        "Overall performance: the mean score over all T tasks after the last stage, OP = 1/T · Σ<sub>i</sub> R[T][i].",
    ),
    "BWT": (
        "BWT",
        True,
        "Backward transfer: how the score of each earlier task changed between the stage that "
        "learned it and the end, BWT = 1/(T−1) · Σ<sub>i&lt;T</sub> (R[T][i] − R[i][i]). "
        "Negative values mean forgetting.",
    ),
    "FWT": (
        "FWT",
        True,
        "Forward transfer: how much the earlier stages help a task before it is trained, "
        "FWT = 1/(T−1) · Σ<sub>i≥2</sub> (R[i−1][i] − R[0][i]).",
    ),
    "forgetting": (
        "Forgetting",
        False,
        "Chaudhry's forgetting: the mean drop of each earlier task from its best "
        "score to its final score, mean<sub>j&lt;T</sub> (max<sub>l&lt;T</sub> R[l][j] − R[T][j]). "
        "Lower is better.",
    ),
    "relative_gain": (
        "Relative gain (%)",
        True,
        "InsCL relative gain after stage i: "
        "100/(i−1) · Σ<sub>j&lt;i</sub> R[i][j] / U<sub>j</sub>, where U<sub>j</sub> is the "
        "single-task model's score on task j; 100 means as good as a dedicated model on every earlier task. It needs the single_task "
        "reference. The table shows it after the last stage, the plot after every stage.",
    ),
    "forgetting_rate": (
        "Forgetting rate",
        False,
        "Forgetting rate of task j: (R[j][j] − R[T][j]) / R[j][j], the "
        "share of what was learned on j that is lost by the end (the table shows the mean over tasks). "
        "Lower is better.",
    ),
}

# load_inputs key -> artifact it names (`replay` is a list of replay folders, read below)
INPUTS = {
    "matrix": "score_matrix",
    "per_run": "cl_metrics",
    "summary": "summary",
    "distances": "distances",
    "tags_raw": "tags_raw",
    "judge": "judge_rates",
    "general": "general_delta",
    "rationales": "rationales",
    "general_data": "general_data",
}
# load_inputs key -> artifact of each file in its list (stacked; icl_shots gains the seed of its folder)
LIST_INPUTS = {"icl_shots": "icl_shots", "forgetting": "forgetting"}
REQUIRED_INPUTS = ("matrix", "per_run", "summary")
# tags_raw also holds the raw LLM answers, which the page does not show
TAG_COST_COLUMNS = [
    "instruction_id",
    "backend",
    "model",
    "prompt_version",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "status",
    "error",
]
COMPOSITION_FILE = "composition.parquet"
API_BACKENDS_WITHOUT_REQUESTS = {"offline", "file"}


@dataclass
class ReportInputs:
    score_matrix: pd.DataFrame
    cl_metrics: pd.DataFrame
    summary: pd.DataFrame
    composition: pd.DataFrame  # every replay folder's composition table (empty when nothing is replayed)
    distances: pd.DataFrame | None = None  # None: not an input, no distance section
    tags_raw: pd.DataFrame | None = None  # None: no tagging-cost section
    judge: pd.DataFrame | None = None  # judge_rates; None: judging disabled
    general: pd.DataFrame | None = None  # general_delta; None: general ability disabled
    icl_shots: pd.DataFrame | None = None  # icl_shots of every seed, with `seed`; None: no icl
    rationales: pd.DataFrame | None = None  # None: no rcl
    general_data: pd.DataFrame | None = None  # None: no general-data replay
    forgetting: pd.DataFrame | None = None  # every chain's forgetting rows; None: analysis disabled


def read_compositions(folders) -> pd.DataFrame:
    """The composition tables of the replay folders (results/replay/{order}/{method}/seed{seed}/), stacked."""
    frames = []
    for folder in folders:
        path = Path(folder) / COMPOSITION_FILE
        if not path.is_file():
            raise InputError(folder, f"replay folder without {COMPOSITION_FILE}")
        frames.append(artifacts.read(path, "composition"))
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in artifacts.columns("composition")})
    return pd.concat(frames, ignore_index=True)


def load_inputs(paths: dict) -> ReportInputs:
    """Read the report's inputs, {key: path, list of paths or None} with the keys of INPUTS plus `replay`
    (a list of replay folders); matrix, per_run and summary are required, a missing or None optional
    input leaves its section out."""
    unknown = sorted(set(paths) - set(INPUTS) - set(LIST_INPUTS) - {"replay"})
    if unknown:
        raise ValueError(f"unknown report input {unknown[0]!r} (expected {sorted([*INPUTS, *LIST_INPUTS, 'replay'])})")
    missing = [key for key in REQUIRED_INPUTS if paths.get(key) is None]
    if missing:
        raise ValueError(f"report input {missing[0]!r} is required")
    frames = {
        key: artifacts.read(path, INPUTS[key], TAG_COST_COLUMNS if key == "tags_raw" else None)
        for key, path in paths.items()
        if key in INPUTS and path is not None
    }
    replay = paths.get("replay") or []
    if isinstance(replay, (str, os.PathLike)):
        replay = [replay]
    return ReportInputs(
        score_matrix=frames["matrix"],
        cl_metrics=frames["per_run"],
        summary=frames["summary"],
        composition=read_compositions(replay),
        distances=frames.get("distances"),
        tags_raw=frames.get("tags_raw"),
        judge=frames.get("judge"),
        general=frames.get("general"),
        rationales=frames.get("rationales"),
        general_data=frames.get("general_data"),
        **{key: read_list(paths[key], key) for key in LIST_INPUTS if paths.get(key) is not None},
    )


def read_list(files, key: str) -> pd.DataFrame:
    """The files of a list input, stacked (icl_shots with the seed of its folder)."""
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    frames = []
    for path in files:
        frame = artifacts.read(path, LIST_INPUTS[key])
        frames.append(frame.assign(seed=runs.icl_seed(path)) if key == "icl_shots" else frame)
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in artifacts.columns(LIST_INPUTS[key])})
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- formatting helpers


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def format_mean_std(mean, std, n_seeds=None, digits: int = 2) -> str:
    """`12.35 ± 0.40`; the mean alone for one seed or no std; an en dash when missing."""
    if mean is None or pd.isna(mean):
        return "–"
    if std is None or pd.isna(std) or (n_seeds is not None and not pd.isna(n_seeds) and int(n_seeds) <= 1):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_number(value, digits: int = 2) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{value:,.{digits}f}"


def format_count(value) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{int(value):,}"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", str(text)).strip("_") or "x"


def html_table(header: list[str], rows: list[list[str]], numeric_from: int = 1, css: str = "") -> str:
    """A table from already-escaped cell HTML; columns from `numeric_from` on are right-aligned."""

    def cell(tag: str, i: int, content: str) -> str:
        return f'<{tag} class="num">{content}</{tag}>' if i >= numeric_from else f"<{tag}>{content}</{tag}>"

    head = "".join(cell("th", i, content) for i, content in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    attribute = f' class="{css}"' if css else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def ordered(preferred: list[str], present) -> list[str]:
    """`preferred` items that are present, in that order, then the other present items sorted."""
    present = [str(p) for p in pd.unique(pd.Series(list(present), dtype=object)) if pd.notna(p)]
    return [p for p in dict.fromkeys(preferred) if p in present] + sorted(p for p in present if p not in preferred)


# ---------------------------------------------------------------- the page


@dataclass
class Section:
    anchor: str
    title: str
    body: str


class ReportBuilder:
    """Collects figures (embedded and kept for Snakemake's report) while the sections are built."""

    def __init__(self, inputs: ReportInputs, orders: dict[str, list[str]], methods: list[str], tasks: list[str]):
        self.inputs, self.orders, self.methods, self.tasks = inputs, orders, list(methods), list(tasks)
        self.plots: dict[str, bytes] = {}

    def figure(self, section: str, name_parts: list[str], png: bytes, alt: str, caption: str = "") -> str:
        """Keep the PNG as `<section>--<part>--<part>.png` and return an <img> that embeds it."""
        self.plots["--".join([section, *map(slug, name_parts)]) + ".png"] = png
        data = base64.b64encode(png).decode("ascii")
        text = f"<figcaption>{caption}</figcaption>" if caption else ""
        return f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">{text}</figure>'

    # ---- per order

    def methods_table(self, order: str) -> str:
        summary = self.inputs.summary[self.inputs.summary["order"] == order]
        if summary.empty:
            return '<p class="note">No metrics for this order in summary.parquet.</p>'
        metrics = [m for m in METRICS if summary.loc[summary["metric"] == m, "mean"].notna().any()]
        metrics += sorted(set(summary["metric"].dropna()) - set(METRICS))
        methods = ordered(self.methods, list(self.methods) + list(summary["method"]))
        cells = {(r.method, r.metric): r for r in summary.itertuples(index=False)}
        best = {}
        for metric in metrics:
            values = summary.loc[(summary["metric"] == metric) & summary["mean"].notna()]
            values = values[values["method"].isin(self.methods)]
            if len(values) >= 2:
                higher = METRICS.get(metric, (metric, True))[1]
                best[metric] = values["mean"].max() if higher else values["mean"].min()
        rows = []
        for method in methods:
            seeds = summary.loc[summary["method"] == method, "n_seeds"]
            row = [esc(method) + self.method_tag(method)]
            for metric in metrics:
                record = cells.get((method, metric))
                if record is None:
                    row.append("–")
                    continue
                digits = 3 if metric == "forgetting_rate" else 2
                text = esc(format_mean_std(record.mean, record.std, record.n_seeds, digits=digits))
                if metric in best and method in self.methods and np.isclose(record.mean, best[metric]):
                    text = f"<strong>{text}</strong>"
                row.append(text)
            row.append(format_count(seeds.max()) if seeds.notna().any() else "–")
            rows.append(row)
        header = ["method"] + [esc(METRICS.get(m, (m,))[0]) for m in metrics] + ["seeds"]
        note = (
            '<p class="note">Mean ± standard deviation over seeds (scores 0-100). Bold: the best continual-learning '
            "method per column (higher is better except for forgetting and forgetting rate).</p>"
        )
        if "relative_gain" not in metrics:
            note += '<p class="note">No relative gain: the single_task reference was not run.</p>'
        if "FWT" not in metrics and self.seen_only(order):
            note += (
                '<p class="note">No FWT: after each stage only the tasks trained so far were scored '
                "(evaluation.tasks: seen, as TRACE and InsCL evaluate), so no task has a score before its "
                "stage. Set evaluation.tasks: all to measure forward transfer.</p>"
            )
        return html_table(header, rows, css="metrics") + note

    def method_tag(self, method: str) -> str:
        """What sets a method apart in the tables: a reference, no training, offline rationales, a memory."""
        if method not in self.methods:
            return ' <span class="tag">reference</span>'
        spec = METHOD_REGISTRY.get(method)
        if spec is not None and not spec.trains:
            return ' <span class="tag">no training: OP only</span>'
        if spec is not None and spec.rationales and self.offline_rationales():
            return ' <span class="tag">offline template rationales</span>'
        if spec is not None and spec.memory:
            return ' <span class="tag">replay set = episodic memory, not trained on</span>'
        return ""

    def offline_rationales(self) -> bool:
        rationales = self.inputs.rationales
        return rationales is not None and (rationales["backend"] == "offline").any()

    def seen_only(self, order: str) -> bool:
        """The order's score matrix has no cell of a task before the stage that trains it."""
        matrix = self.inputs.score_matrix
        matrix = matrix[matrix["order"] == order]
        return not matrix.empty and not (matrix["stage"] < matrix["task_index"]).any()

    def forgetting_rate_table(self, order: str, order_tasks: list[str]) -> str:
        rates = self.inputs.cl_metrics
        rates = rates[(rates["order"] == order) & (rates["metric"] == "forgetting_rate") & rates["value"].notna()]
        if rates.empty:
            return ""
        table = rates.groupby(["method", "task"])["value"].agg(["mean", "std", "count"])
        tasks = [t for t in order_tasks if t in set(rates["task"])]
        rows = []
        for method in ordered(self.methods, rates["method"]):
            row = [esc(method)]
            for task in tasks:
                if (method, task) in table.index:
                    cell = table.loc[(method, task)]
                    row.append(esc(format_mean_std(cell["mean"], cell["std"], cell["count"], digits=3)))
                else:
                    row.append("–")
            rows.append(row)
        return "<h4>Forgetting rate per task</h4>" + html_table(
            ["method"] + [esc(t) for t in tasks], rows, css="compact"
        )

    def score_matrices(self, order: str, order_tasks: list[str]) -> str:
        matrix = self.inputs.score_matrix
        matrix = matrix[matrix["order"] == order]
        if matrix.empty:
            return '<p class="note">No score matrix for this order.</p>'
        trained = {k: task for k, task in enumerate(order_tasks, start=1)}
        columns = order_tasks + sorted(set(matrix["task"]) - set(order_tasks))
        stages = sorted(set(range(len(order_tasks) + 1)) | set(int(s) for s in matrix["stage"].dropna()))
        figures = []
        for method in ordered(self.methods, matrix["method"]):
            rows = matrix[matrix["method"] == method]
            mean = rows.pivot_table(index="stage", columns="task", values="score", aggfunc="mean")
            mean = mean.reindex(index=stages, columns=columns)
            n_seeds = rows["seed"].nunique()
            title = f"{method} · order {order} · mean of {n_seeds} seed{'s' if n_seeds != 1 else ''}"
            png = plots.score_matrix_heatmap(mean, trained, title)
            figures.append(self.figure("score_matrix", [order, method], png, f"score matrix of {method}"))
        return (
            '<p class="note">R[k][i]: rows are training stages (0 = the base model), columns the tasks in training '
            "order. The outlined cell is the task trained in that stage; cells above it measure forward transfer, "
            "cells below it what is kept of the task. Grey = not evaluated.</p>"
            + f'<div class="grid">{"".join(figures)}</div>'
        )

    def forgetting_section(self, order: str, order_tasks: list[str]) -> str:
        matrix = self.inputs.score_matrix
        matrix = matrix[matrix["order"] == order]
        if matrix.empty:
            return ""
        curves = matrix.groupby(["method", "task", "stage"], as_index=False)["score"].agg(["mean", "std"])
        png = plots.forgetting_curves(
            curves,
            [t for t in order_tasks if t in set(matrix["task"])],
            ordered(self.methods, matrix["method"]),
            f"Score of each task across stages · order {order}",
        )
        return self.figure(
            "forgetting",
            [order],
            png,
            f"forgetting curves for order {order}",
            "Each panel is one task: its score after every stage, one line per method (band: ±1 std over seeds). "
            "The dotted line marks the stage that trains the task; a falling line after it is forgetting.",
        )

    def relative_gain_section(self, order: str, order_tasks: list[str]) -> str:
        gains = self.inputs.cl_metrics
        gains = gains[(gains["order"] == order) & (gains["metric"] == "relative_gain") & gains["value"].notna()]
        if gains.empty:
            return ""
        curves = gains.groupby(["method", "stage"], as_index=False)["value"].agg(["mean", "std"])
        png = plots.relative_gain_curves(
            curves, ordered(self.methods, gains["method"]), len(order_tasks), f"Relative gain · order {order}"
        )
        return self.figure(
            "relative_gain",
            [order],
            png,
            f"relative gain for order {order}",
            "InsCL relative gain on the earlier tasks after each stage (100 = the single-task models).",
        )

    def composition_section(self, order: str, order_tasks: list[str]) -> str:
        composition = self.inputs.composition
        composition = composition[composition["order"] == order]
        if composition.empty:
            return '<p class="note">No replay composition for this order.</p>'
        trained = [m for m in self.methods if m not in METHOD_REGISTRY or METHOD_REGISTRY[m].trains]
        methods = ordered(trained, trained + list(composition["method"]))
        title = f"Replayed examples per stage · order {order}"
        png = plots.replay_composition(composition, methods, order_tasks, title)
        return self.figure(
            "composition",
            [order],
            png,
            f"replay composition for order {order}",
            "Examples replayed at each stage (x label: stage and the task it trains), stacked by the earlier task "
            "they come from, averaged over seeds.",
        )

    def order_sections(self) -> list[Section]:
        sections = []
        items = list(self.orders.items())
        for order, order_tasks in tqdm(items, desc="report: orders", disable=len(items) < 2):
            anchor = f"order-{slug(order)}"
            body = (
                f'<p class="order">{" → ".join(esc(t) for t in order_tasks)}</p>'
                + "<h3>Methods × metrics</h3>"
                + self.methods_table(order)
                + self.forgetting_rate_table(order, order_tasks)
                + self.relative_gain_section(order, order_tasks)
                + "<h3>Score matrices</h3>"
                + self.score_matrices(order, order_tasks)
                + "<h3>Forgetting curves</h3>"
                + self.forgetting_section(order, order_tasks)
                + "<h3>Replay composition</h3>"
                + self.composition_section(order, order_tasks)
            )
            sections.append(Section(anchor, f"Order {esc(order)}", body))
        return sections

    # ---- shared sections

    def distance_section(self) -> Section:
        distances = self.inputs.distances
        if distances.empty:
            return Section("distances", "Task distances", '<p class="note">No task distances.</p>')
        in_orders = list(dict.fromkeys(t for ts in self.orders.values() for t in ts))
        tasks = ordered(in_orders + self.tasks, pd.concat([distances["task_a"], distances["task_b"]]))
        png = plots.distance_heatmap(distances, tasks, "Task distances (row → column)")
        solvers = ", ".join(esc(s) for s in sorted(distances["solver"].dropna().unique()))
        not_converged = not distances["converged"].fillna(False).astype(bool).all()
        caption = (
            "Wasserstein distance between the instruction embeddings of two tasks (cost 1 − cosine). InsCL gives "
            "an earlier task more replay the farther it is from the current task."
            + (f" Solver: {solvers}." if solvers else "")
            + (" * marks a solve that did not converge." if not_converged else "")
        )
        return Section("distances", "Task distances", self.figure("distances", ["all"], png, "task distances", caption))

    def tagging_cost(self) -> str:
        tags = self.inputs.tags_raw
        if tags.empty:
            return '<p class="note">No tagging records.</p>'
        tags = tags.assign(**{column: tags[column].fillna("–").astype(str) for column in ["model", "prompt_version"]})
        rows = []
        for (backend, model, version), group in tags.groupby(["backend", "model", "prompt_version"], sort=True):
            status = group["status"].value_counts()
            calls = int(status.get("ok", 0) + status.get("failed", 0))
            if backend in API_BACKENDS_WITHOUT_REQUESTS:
                calls = 0
            rows.append(
                [
                    esc(backend),
                    esc(model),
                    esc(version),
                    format_count(len(group)),
                    format_count(status.get("ok", 0)),
                    format_count(status.get("failed", 0)),
                    format_count(status.get("skipped_budget", 0)),
                    format_count(calls),
                    format_count(group["prompt_tokens"].sum(min_count=1)),
                    format_count(group["completion_tokens"].sum(min_count=1)),
                    format_number(group["cost_usd"].sum(min_count=1), digits=4),
                ]
            )
        header = [
            "backend",
            "model",
            "prompt version",
            "instructions",
            "ok",
            "failed",
            "skipped (budget)",
            "requests",
            "prompt tokens",
            "completion tokens",
            "cost (USD)",
        ]
        body = html_table(header, rows, numeric_from=3)
        body += (
            '<p class="note">Requests: instructions sent to the API (answered, or failed after the retries), '
            "responses served from the cache included; the offline and file backends make none.</p>"
        )
        failed = tags[tags["status"] != "ok"]
        if not failed.empty:
            errors = failed["error"].fillna(failed["status"]).astype(str).value_counts().head(5)
            body += "<h4>Most frequent failures</h4>" + html_table(
                ["error", "instructions"], [[esc(e), format_count(n)] for e, n in errors.items()]
            )
        return body

    def cost_section(self) -> Section:
        return Section("cost", "Tagging cost", self.tagging_cost())

    def judge_section(self) -> Section:
        rates = self.inputs.judge
        # a run judged on one prompt set: its "all" row repeats that set's row
        sets = rates[rates["set"] != "all"].groupby("run")["set"].nunique()
        shown = rates[(rates["set"] != "all") | (rates["run"].map(sets).fillna(0) != 1)]
        shown = shown.sort_values("run", kind="stable").reset_index(drop=True)
        rows = [
            [
                esc(r.run),
                esc(r.set),
                format_count(r.n),
                format_number(r.win_rate, 1),
                format_number(r.tie_rate, 1),
                format_number(r.lose_rate, 1),
                "–" if pd.isna(r.delta) else f"{r.delta:+.1f}",
                format_number(r.cost_usd, digits=4),
            ]
            for r in shown.itertuples(index=False)
        ]
        body = (
            '<p class="note">The final model of each chain against the base model, judged pairwise by an LLM judge, '
            "each pair twice with the answer positions swapped. Rates in % of the judged prompts; "
            "Δ = win − lose. Cost: what judging the set cost (USD, estimated from the endpoint's prices).</p>"
            + html_table(["run", "set", "prompts", "win %", "tie %", "lose %", "Δ", "cost (USD)"], rows, numeric_from=2)
        )
        if shown.empty:
            body += '<p class="note">No judged runs.</p>'
        else:
            png = plots.outcome_bars(shown, "Judged outcomes against the base model")
            body += self.figure("judge", ["outcomes"], png, "judged win/tie/lose rates")
        return Section("judge", "Instruction following and safety (judge)", body)

    def general_section(self) -> Section:
        deltas = self.inputs.general.sort_values(["run", "task"], kind="stable")
        if deltas.empty:
            body = '<p class="note">No general-ability results.</p>'
            return Section("general", "General ability (lm-evaluation-harness)", body)
        rows = [
            [
                esc(r.run),
                esc(r.task),
                esc(r.metric),
                format_number(r.before),
                format_number(r.after),
                format_number(r.delta),
            ]
            for r in deltas.itertuples(index=False)
        ]
        body = (
            '<p class="note">Each task\'s headline metric (scores 0-100) for the base model (before) and the final '
            "model (after); Δ = after − before.</p>"
            + html_table(["run", "task", "metric", "before (base)", "after", "Δ"], rows, numeric_from=3)
        )
        overall = deltas.groupby("run", sort=True)["delta"].mean()
        body += (
            "<h4>ΔR<sup>G</sup></h4>"
            + '<p class="note">ΔR<sup>G</sup>: the mean of Δ over the tasks of the table above.</p>'
            + html_table(["run", "ΔR<sup>G</sup>"], [[esc(run), format_number(v)] for run, v in overall.items()])
        )
        return Section("general", "General ability (lm-evaluation-harness)", body)

    def metric_glossary(self) -> Section:
        items = "".join(f"<dt>{esc(label)}</dt><dd>{text}</dd>" for label, _, text in METRICS.values())
        body = (
            '<p class="note">R[k][i] is the score (0-100) on task i\'s test set after training stage k '
            "(k = 0 is the base model), for T tasks. Every metric is computed per seed from this matrix, then "
            f"averaged.</p><dl>{items}</dl>"
        )
        return Section("metrics", "What the metrics mean", body)

    def build(self) -> str:
        """The page; the distance, tagging-cost, judge and general sections only when their input was given."""
        sections = [self.metric_glossary(), *self.order_sections()]
        optional = [
            (self.inputs.distances, self.distance_section),
            (self.inputs.tags_raw, self.cost_section),
            (self.inputs.judge, self.judge_section),
            (self.inputs.general, self.general_section),
        ]
        sections += [section() for given, section in optional if given is not None]
        if any(x is not None for x in (self.inputs.icl_shots, self.inputs.rationales, self.inputs.general_data)):
            sections.append(self.trace_baselines_section())
        if self.inputs.forgetting is not None:
            sections.append(self.forgetting_analysis_section())
        return render_page(sections, self.orders, self.methods, self.inputs)

    # ---- TRACE's baselines and InsCL's forgetting analysis

    def trace_baselines_section(self) -> Section:
        parts = []
        if self.inputs.icl_shots is not None:
            parts.append("<h3>In-context learning (icl)</h3>" + self.icl_table())
        if self.inputs.rationales is not None:
            parts.append("<h3>Reasoning-augmented CL (rcl)</h3>" + self.rationale_summary())
        if self.inputs.general_data is not None:
            parts.append("<h3>General-data replay</h3>" + self.general_data_summary())
        return Section("trace-baselines", "TRACE baselines: ICL, RCL, general replay", "".join(parts))

    def icl_table(self) -> str:
        shots = self.inputs.icl_shots
        if shots.empty:
            return '<p class="note">No ICL prompts.</p>'
        table = shots.groupby("task", sort=False).agg(
            prompts=("shots", "size"),
            mean=("shots", "mean"),
            low=("shots", "min"),
            high=("shots", "max"),
            tokens=("prompt_tokens", "mean"),
        )
        tasks = ordered(self.tasks, table.index)
        rows = [
            [
                esc(task),
                format_count(table.loc[task, "prompts"]),
                format_number(table.loc[task, "mean"]),
                f"{int(table.loc[task, 'low'])}–{int(table.loc[task, 'high'])}",
                format_number(table.loc[task, "tokens"], 0),
            ]
            for task in tasks
        ]
        note = (
            '<p class="note">The base model, untrained, answers each test prompt after k demonstrations drawn '
            "from the task's <b>training</b> split (TRACE draws them from the test split it scores), in TRACE's "
            "layout: instruction, examples header, demonstrations, test input; a prompt that does not fit drops "
            "demonstrations down to 0. It learns nothing, so the methods table shows its OP (mean over the order's "
            "tasks) and no BWT, FWT or forgetting. Demonstrations per prompt, over all seeds:</p>"
        )
        return note + html_table(["task", "prompts", "mean shots", "range", "mean prompt tokens"], rows)

    def rationale_summary(self) -> str:
        rationales = self.inputs.rationales
        rows = []
        for (backend, model, version), group in rationales.groupby(
            [rationales["backend"], rationales["model"].fillna("–"), rationales["prompt_version"].fillna("–")]
        ):
            status = group["status"].value_counts()
            rows.append(
                [
                    esc(backend),
                    esc(model),
                    esc(version),
                    format_count(len(group)),
                    format_count(status.get("ok", 0)),
                    format_count(len(group) - status.get("ok", 0)),
                    format_number(group["cost_usd"].sum(), 4),
                ]
            )
        body = html_table(
            ["backend", "model", "prompt version", "targets", "with rationale", "answer only", "cost (USD)"],
            rows,
            numeric_from=3,
        )
        if self.offline_rationales():
            body += (
                '<p class="note"><b>Offline template rationales:</b> each rationale restates the instruction, the '
                "input and the kind of answer; it contains no reasoning. They exercise RCL's data path "
                "(targets, answer extraction, scoring) without an API key; they are not TRACE's GPT-4 rationales, "
                "and rcl's scores here say nothing about reasoning augmentation.</p>"
            )
        example = rationales[rationales["status"] == "ok"].head(1)
        if len(example):
            body += (
                f'<p class="note">A training target ({esc(example["task"].iloc[0])}); scoring takes the text after '
                'the last line starting with "Answer:":</p>'
                f"<pre>{esc(example['target'].iloc[0])}</pre>"
            )
        return body

    def general_data_summary(self) -> str:
        general = self.inputs.general_data
        if general.empty:
            return '<p class="note">The general-data file has no rows.</p>'
        files = ", ".join(esc(f) for f in general["source_file"].dropna().unique())
        return (
            f'<p class="note">{format_count(len(general))} rows of <code>{esc(general["task"].iloc[0])}</code> '
            f"({files}). general_replay mixes them into every stage beside its random replay; the replay "
            "composition plots show them as their own source.</p>"
        )

    def forgetting_analysis_section(self) -> Section:
        rows = self.inputs.forgetting
        body = (
            '<p class="note">InsCL\'s analysis: per task, the test examples that were right (primary score at '
            "least the threshold) just after the task was learned and wrong after the last stage, summed over "
            "seeds. <b>Instruction-related</b>: the final answer no longer follows the instruction (format, label "
            "set, answer type); <b>instruction-unrelated</b>: it follows the instruction with the wrong content. "
            "InsCL finds that complex reasoning tasks forget mostly the instruction-unrelated way. "
            f"Classifier: {esc(', '.join(sorted(set(rows.loc[rows['category'] != RETAINED, 'classifier'].dropna()))) or '–')}.</p>"
        )
        for order, order_tasks in self.orders.items():
            part = rows[rows["order"] == order]
            if part.empty:
                continue
            counts = forgetting_counts(part)
            trained = [m for m in self.methods if m not in METHOD_REGISTRY or METHOD_REGISTRY[m].trains]
            methods = ordered(trained, list(part["method"]) + trained)  # a method that learned nothing: zeros
            table_rows = []
            for method in methods:
                for task in [t for t in order_tasks if t in set(counts["task"])] + ["all tasks"]:
                    sub = counts[counts["method"] == method]
                    record = (
                        sub[sub["task"] == task].sum(numeric_only=True)
                        if task != "all tasks"
                        else sub.sum(numeric_only=True)
                    )
                    forgotten = record["forgotten"]
                    table_rows.append(
                        [
                            esc(method),
                            ("<b>all tasks</b>" if task == "all tasks" else esc(task)),
                            format_count(record["learned"]),
                            format_count(forgotten),
                            share_cell(record[RELATED], forgotten),
                            share_cell(record[UNRELATED], forgotten),
                            format_count(record["unsettled"]),
                        ]
                    )
            body += f"<h3>Order {esc(order)}</h3>" + html_table(
                ["method", "task", "learned", "forgotten", "instruction-related", "instruction-unrelated", "unsettled"],
                table_rows,
                numeric_from=2,
                css="compact",
            )
            tasks = [t for t in order_tasks if t in set(counts["task"])]
            png = plots.forgetting_categories(counts, methods, tasks, f"Forgotten examples by kind · order {order}")
            body += self.figure(
                "forgetting_kinds",
                [order],
                png,
                f"forgetting categories for order {order}",
                "Share of each task's forgotten examples by kind (number forgotten above each bar, all seeds).",
            )
        return Section("forgetting-analysis", "Forgetting analysis (InsCL)", body)


def forgetting_counts(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (method, task), summed over seeds: learned, forgotten, each category and the unsettled
    (forgotten examples the judge gave no verdict)."""
    forgotten = rows["category"] != RETAINED
    frame = rows.assign(
        learned=1,
        forgotten=forgotten.astype(int),
        **{RELATED: (rows["category"] == RELATED).astype(int), UNRELATED: (rows["category"] == UNRELATED).astype(int)},
        unsettled=(forgotten & rows["category"].isna()).astype(int),
    )
    columns = ["learned", "forgotten", RELATED, UNRELATED, "unsettled"]
    return frame.groupby(["method", "task"], as_index=False, sort=False)[columns].sum()


def share_cell(count, total) -> str:
    if not total:
        return format_count(count)
    return f"{int(count):,} ({100 * count / total:.0f}%)"


def render_page(sections: list[Section], orders, methods, inputs: ReportInputs) -> str:
    seeds = sorted(inputs.score_matrix["seed"].dropna().unique().tolist())
    facts = [
        ("orders", ", ".join(esc(o) for o in orders)),
        ("methods", ", ".join(esc(m) for m in methods)),
        ("seeds", ", ".join(esc(s) for s in seeds) or "–"),
        ("tasks", format_count(len({t for ts in orders.values() for t in ts}))),
    ]
    header = "".join(f"<span><b>{name}</b> {value}</span>" for name, value in facts)
    nav = "".join(f'<a href="#{s.anchor}">{s.title}</a>' for s in sections)
    body = "".join(f'<section id="{s.anchor}"><h2>{s.title}</h2>{s.body}</section>' for s in sections)
    return PAGE.format(style=STYLE, facts=header, nav=nav, body=body)


STYLE = """
:root { --ink:#1d2330; --muted:#5b6475; --line:#dde1e8; --accent:#2f6fb3; --bg:#f6f7f9; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink);
       background:var(--bg); }
header { background:#fff; border-bottom:1px solid var(--line); padding:18px 32px 10px; }
header h1 { margin:0 0 6px; font-size:22px; }
.facts span { margin-right:22px; color:var(--muted); font-size:14px; }
.facts b { color:var(--ink); font-weight:600; margin-right:4px; }
nav { position:sticky; top:0; z-index:2; background:#fff; border-bottom:1px solid var(--line); padding:8px 32px; }
nav a { color:var(--accent); text-decoration:none; margin-right:18px; font-size:14px; }
main { max-width:1280px; margin:0 auto; padding:8px 32px 48px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:8px 24px 20px; margin:20px 0; }
h2 { font-size:19px; margin:14px 0 8px; } h3 { font-size:16px; margin:22px 0 6px; }
h4 { font-size:14px; margin:16px 0 4px; }
.order { font-family:ui-monospace,Menlo,Consolas,monospace; color:var(--muted); }
table { border-collapse:collapse; margin:8px 0; font-size:14px; }
th, td { padding:5px 12px; border-bottom:1px solid var(--line); text-align:left; white-space:nowrap; }
th { background:#eef1f5; font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
tbody tr:nth-child(even) { background:#fafbfc; }
table.compact td, table.compact th { padding:3px 9px; font-size:13px; }
.note { color:var(--muted); font-size:13px; margin:4px 0; }
.tag { font-size:11px; color:var(--muted); border:1px solid var(--line); border-radius:4px; padding:0 4px; }
.grid { display:flex; flex-wrap:wrap; gap:14px; }
figure { margin:10px 0; } figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; }
figcaption { color:var(--muted); font-size:13px; max-width:900px; }
dl { display:grid; grid-template-columns:max-content 1fr; gap:6px 18px; font-size:14px; }
dt { font-weight:600; } dd { margin:0; }
pre { background:#f3f5f8; border:1px solid var(--line); border-radius:4px; padding:8px 12px; font-size:13px;
      white-space:pre-wrap; max-width:900px; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>inscl report</title>
<style>{style}</style>
</head>
<body>
<header><h1>inscl · continual instruction tuning report</h1><div class="facts">{facts}</div></header>
<nav>{nav}</nav>
<main>{body}</main>
</body>
</html>
"""


def build_report(
    inputs: ReportInputs, orders: dict[str, list[str]], methods: list[str], tasks: list[str]
) -> tuple[str, dict[str, bytes]]:
    """Return the page's HTML and its figures as {file name: PNG bytes}."""
    builder = ReportBuilder(inputs, orders, methods, tasks)
    page = builder.build()
    return page, builder.plots


def write_report(
    inputs: ReportInputs, orders: dict[str, list[str]], methods: list[str], tasks: list[str], html_path, plots_dir
) -> None:
    """Write index.html and the plots folder; a failure leaves neither half-written."""
    page, figures = build_report(inputs, orders, methods, tasks)
    # The page and the plots folder are each replaced atomically.
    with atomic_dir(plots_dir) as staging:
        for name, png in figures.items():
            (staging / name).write_bytes(png)
        with atomic_path(html_path, ".html") as tmp:
            tmp.write_text(page, encoding="utf-8")
    log.info("wrote %s (%d figures, %.0f kB)", html_path, len(figures), len(page) / 1024)
