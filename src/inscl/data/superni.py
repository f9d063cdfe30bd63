"""SuperNI (allenai/natural-instructions) task files -> instance rows, grouped into experiment tasks.

A group takes source tasks by name and/or by SuperNI category; names win over categories. Under
`english_only` a task matched by category whose input or output language is not English is dropped:
it is named in the log and in the dropped artifact, and a group that it leaves empty fails naming
english_only. Language and category fields may be lists (upstream) or plain strings, languages may be codes
('en'), and instances may lack ids (older files).
Files outside `task_list` are never read.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from tqdm import tqdm

from inscl.core.io import InputError
from inscl.data.files import index_record, read_json, read_lines_utf8
from inscl.data.rows import IdRegistry, SourceRows, dropped_row, instance_row, json_object, references, text_field

log = logging.getLogger(__name__)

MAX_NAMED = 10  # source tasks named in one message
ENGLISH = {"english", "en", "eng"}  # older files write language codes ("en", "jap")


def named(items: list[str]) -> str:
    """'a, b, c' (the first MAX_NAMED, then how many more)."""
    more = len(items) - MAX_NAMED
    return ", ".join(items[:MAX_NAMED]) + (f" and {more} more" if more > 0 else "")


def _task_object(path: Path) -> dict:
    doc = read_json(path, records="Instances")
    if not isinstance(doc, dict):
        raise InputError(path, f"expected a SuperNI task object, got {type(doc).__name__}")
    return doc


def string_list(doc: dict, name: str, path) -> list[str]:
    """A metadata field as a list of strings: upstream writes lists, older files a plain string.
    Missing (or NaN) is an empty list."""
    value = doc.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise InputError(path, "expected a string or a list of strings", field=name)


def not_english(doc: dict, path) -> str | None:
    """Why the task's input or output is not English ('Input_language Spanish'), or None if both are."""
    problems = []
    for name in ("Input_language", "Output_language"):
        languages = string_list(doc, name, path)
        if not languages:
            problems.append(f"no {name}")
        elif any(language.strip().lower() not in ENGLISH for language in languages):
            problems.append(f"{name} {', '.join(languages)}")
    return "; ".join(problems) or None


def superni_definition(doc: dict, path) -> str:
    """The task's Definition (upstream it is a list of strings; a plain string is accepted)."""
    definition = doc.get("Definition")
    if isinstance(definition, list):
        for i, part in enumerate(definition):
            if not isinstance(part, str):
                raise InputError(
                    path, f"expected strings, got {type(part).__name__} at position {i}", field="Definition"
                )
        definition = "\n".join(part.strip() for part in definition)
    return text_field(definition, path, None, "Definition").strip()


def _read_task_list(path: Path) -> list[str]:
    names = []
    for line in read_lines_utf8(path):
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.removesuffix(".json"))
    return names


def _group_members(source: dict, files: dict, allowed: set, root: Path, key: str) -> tuple[dict, dict]:
    """(source task -> group, category -> group) of the configured groups, checked against the files."""
    explicit: dict[str, str] = {}
    by_category: dict[str, str] = {}
    for group, spec in source["groups"].items():
        gkey = f"{key}.groups.{group}"
        if not spec.get("tasks") and not spec.get("categories"):
            raise InputError("config", "a group needs 'tasks' or 'categories'", field=gkey)
        for i, task in enumerate(spec.get("tasks") or []):
            task = task.removesuffix(".json")
            if task not in files:
                raise InputError("config", f"source task '{task}' not found in {root}", record=i, field=f"{gkey}.tasks")
            if task not in allowed:
                problem = f"source task '{task}' is not in task_list {source['task_list']}"
                raise InputError("config", problem, record=i, field=f"{gkey}.tasks")
            if task in explicit:
                problem = f"source task '{task}' is also in group '{explicit[task]}'"
                raise InputError("config", problem, record=i, field=f"{gkey}.tasks")
            explicit[task] = group
        for category in spec.get("categories") or []:
            if category in by_category:
                problem = f"category '{category}' is also in group '{by_category[category]}'"
                raise InputError("config", problem, field=f"{gkey}.categories")
            by_category[category] = group
    return explicit, by_category


def load_superni(source: dict, base_dir=".", key: str = "data.sources[0]") -> SourceRows:
    """Rows of the SuperNI tasks that the source's groups select (split assigned later), and the
    tasks english_only dropped."""
    base_dir = Path(base_dir)
    name = source["name"]
    root = base_dir / source["path"]
    if not root.is_dir():
        raise InputError("config", f"SuperNI directory not found: {root}", field=f"{key}.path")
    files = {p.stem: p for p in sorted(root.glob("*.json"))}
    if not files:
        raise InputError("config", f"no SuperNI task files (*.json) in {root}", field=f"{key}.path")
    allowed = set(files)
    task_list = source.get("task_list")
    if task_list:
        listed = _read_task_list(base_dir / task_list)
        absent = [task for task in listed if task not in files]
        if absent:
            log.warning(
                "%s: %d tasks of task_list %s have no file in %s: %s", name, len(absent), task_list, root, named(absent)
            )
        allowed &= set(listed)
    english_only = source.get("english_only", True)
    explicit, by_category = _group_members(source, files, allowed, root, key)

    # Explicit task names take precedence over categories; categories need every file's metadata.
    candidates = sorted(allowed) if by_category else sorted(explicit)
    ids = IdRegistry()
    out = SourceRows()
    selected: dict[str, tuple[str, list[dict]]] = {}
    seen_categories: set[str] = set()
    for task in tqdm(candidates, desc=f"{name}: SuperNI tasks", unit="task", disable=None):
        path = files[task]
        doc = _task_object(path)
        categories = string_list(doc, "Categories", path)
        seen_categories.update(categories)
        group = explicit.get(task) or next((by_category[c] for c in categories if c in by_category), None)
        if group is None:
            continue
        why = not_english(doc, path) if english_only else None
        if why is not None:
            if task in explicit:
                problem = f"source task '{task}' is not English ({why}; set english_only: false to keep it)"
                raise InputError("config", problem, field=f"{key}.groups.{group}.tasks")
            instances = doc.get("Instances")
            n = len(instances) if isinstance(instances, list) else 0
            out.dropped.append(dropped_row(name, path, task, group, "english_only", f"not English: {why}", n))
            continue
        selected[task] = (group, _task_rows(doc, path, name, group, task, ids))

    in_list = f" in task_list {task_list}" if task_list else ""
    for category, group in by_category.items():
        if category not in seen_categories:
            problem = f"no source task{in_list} has category '{category}'"
            raise InputError("config", problem, field=f"{key}.groups.{group}.categories")
    filled = {group for group, _ in selected.values()}
    for group in source["groups"]:
        if group not in filled:
            emptied = [f"{d['source_task']} ({d['reason']})" for d in out.dropped if d["task"] == group]
            problem = (
                f"english_only removed every source task of this group: {named(emptied)}; "
                "set english_only: false to keep them"
                if emptied
                else "no source task is left for this group: the tasks of its categories are named by other groups"
            )
            raise InputError("config", problem, field=f"{key}.groups.{group}")
    if out.dropped:
        log.warning(
            "%s: english_only dropped %d source tasks matched by category (%d instances): %s",
            name,
            len(out.dropped),
            sum(d["n_dropped"] for d in out.dropped),
            named([f"{d['source_task']} from group {d['task']} ({d['reason']})" for d in out.dropped]),
        )
    group_rank = {group: i for i, group in enumerate(source["groups"])}
    ordered = sorted(selected.items(), key=lambda item: (group_rank[item[1][0]], item[0]))
    out.rows = [row for _, (_, rows) in ordered for row in rows]
    return out


def _task_rows(doc: dict, path: Path, source: str, group: str, task: str, ids: IdRegistry) -> list[dict]:
    instruction = superni_definition(doc, path)
    instances = doc.get("Instances")
    if instances is None:
        raise InputError(path, "missing field", field="Instances")
    if not isinstance(instances, list) or not instances:
        raise InputError(path, "empty instance list", field="Instances")
    rows = []
    for i, inst in enumerate(instances):
        record = index_record(i, "Instances")
        inst = json_object(inst, path, record)
        # older files have no instance ids: the position in the file stands in
        local = ids.add(inst["id"], path, record) if "id" in inst else f"{task}/{i}"
        text = text_field(inst.get("input"), path, record, "input", allow_empty=True)
        output = references(inst.get("output"), path, record)
        rows.append(instance_row(source, group, task, path, local, instruction, text, output))
    return rows
