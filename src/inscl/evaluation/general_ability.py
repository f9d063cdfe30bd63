"""General ability through lm-evaluation-harness, and Delta R^G = mean over tasks of (after - before).

The harness runs its `hf` model on the run's folder: `pretrained=<model>` for full weights, or
`pretrained=<base model>, peft=<adapter>` for a LoRA run. Custom tasks come from
`general.include_path` (task YAMLs; a local file works offline with `dataset_path: json` and
`dataset_kwargs: {data_files: ...}`).

Results are stored one row per (harness task, metric); a metric computed after a filter is
named `metric,filter` (e.g. `exact_match,strict-match`), with the `none` filter left out.
Fractions (accuracy, exact match, F1) are put on the 0-100 scale of every other score.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import pandas as pd

from inscl.core import artifacts
from inscl.core.io import InputError

log = logging.getLogger(__name__)

FRACTION_METRICS = {"acc", "acc_norm", "acc_mutual_info", "exact_match", "em", "f1", "mcc", "contains"}
# The headline metric of a task, by preference: MMLU/BoolQ/PIQA accuracy, GSM8K/BBH exact match, TyDiQA F1.
PRIMARY_METRICS = [
    "acc",
    "exact_match,strict-match",
    "exact_match",
    "exact_match,flexible-extract",
    "f1",
    "em",
    "acc_norm",
]


def harness_model_args(model_dir, base_dir, model_cfg: dict, device: str) -> dict:
    """`model_args` of the harness's `hf` model for a run folder (full weights or PEFT adapter)."""
    from inscl.training.models import has_tokenizer, inference_dtype, is_adapter, pick_device, resolve_model_path

    target = pick_device(device)
    args = {
        "dtype": str(inference_dtype(target)).removeprefix("torch."),
        "trust_remote_code": bool(model_cfg.get("trust_remote_code", False)),
        "device": str(target),
    }
    if is_adapter(model_dir):
        args["pretrained"] = resolve_model_path(base_dir)
        args["peft"] = str(model_dir)
    else:
        args["pretrained"] = resolve_model_path(model_dir)
    tokenizer_dir = model_dir if has_tokenizer(model_dir) else base_dir
    args["tokenizer"] = resolve_model_path(tokenizer_dir)
    return args


def results_table(results: dict) -> pd.DataFrame:
    """The harness's `results` dict -> DataFrame(task, metric, value), fractions scaled to 0-100."""
    rows = []
    for task, values in sorted(results.get("results", {}).items()):
        for key, value in values.items():
            if "," not in key or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            metric, filter_name = key.split(",", 1)
            name = metric if filter_name == "none" else key
            scale = 100.0 if metric in FRACTION_METRICS else 1.0
            rows.append({"task": task, "metric": name, "value": float(value) * scale})
    return pd.DataFrame(rows, columns=artifacts.columns("general"))


@lru_cache(maxsize=4)
def task_manager(include_path: str | None):
    """The harness's task index (slow to build: thousands of YAMLs), once per process."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path) if include_path else TaskManager()


def run_harness(model_dir, base_dir, model_cfg: dict, general: dict, device: str = "auto") -> pd.DataFrame:
    """Evaluate a run's model on `general.tasks` -> DataFrame(task, metric, value)."""
    from lm_eval import simple_evaluate

    include = general.get("include_path")
    if include and not Path(include).is_dir():
        raise InputError("config", f"folder {include} does not exist", field="general.include_path")
    manager = task_manager(str(Path(include).resolve()) if include else None)
    unknown = [t for t in general["tasks"] if t not in manager.all_tasks]
    if unknown:
        raise InputError("config", f"lm-evaluation-harness has no task named {unknown[0]!r}", field="general.tasks")
    model_args = harness_model_args(model_dir, base_dir, model_cfg, device)
    log.info("lm-evaluation-harness on %s: %s", model_args["pretrained"], ", ".join(general["tasks"]))
    try:
        results = simple_evaluate(
            model="hf",
            model_args=model_args,
            tasks=list(general["tasks"]),
            num_fewshot=general.get("num_fewshot"),
            batch_size=general.get("batch_size", 8),
            limit=general.get("limit"),
            task_manager=manager,
            log_samples=False,
        )
    except ConnectionError as error:
        raise InputError(
            "config",
            f"a harness dataset is neither cached nor reachable ({error}); cache it first or use local tasks",
            field="general.tasks",
        ) from None
    table = results_table(results)
    if table.empty:
        raise RuntimeError("lm-evaluation-harness returned no metrics")
    return table


def primary_metric(metrics) -> str:
    """The headline metric among a task's metrics (PRIMARY_METRICS order, else the first one)."""
    metrics = list(metrics)
    for name in PRIMARY_METRICS:
        if name in metrics:
            return name
    return metrics[0]


def general_delta(before: pd.DataFrame, after: pd.DataFrame, tasks=None) -> tuple[pd.DataFrame, float]:
    """Per-task (before, after, delta) on each task's headline metric, and Delta R^G (their mean).

    `tasks` (default: every task in both tables) selects the tasks that enter the mean, e.g.
    the configured `general.tasks`, whose group rows aggregate their subtasks.
    """
    shared = sorted(set(before["task"]) & set(after["task"]))
    tasks = [t for t in (tasks or shared) if t in shared]
    rows = []
    for task in tasks:
        b = before[before["task"] == task].set_index("metric")["value"]
        a = after[after["task"] == task].set_index("metric")["value"]
        common = [m for m in b.index if m in a.index]
        if not common:
            log.warning("general ability: task %s has no metric in common before and after", task)
            continue
        metric = primary_metric(common)
        rows.append(
            {"task": task, "metric": metric, "before": b[metric], "after": a[metric], "delta": a[metric] - b[metric]}
        )
    table = pd.DataFrame(rows, columns=["task", "metric", "before", "after", "delta"])
    return table, float(table["delta"].mean()) if len(table) else float("nan")
