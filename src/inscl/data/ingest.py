"""Ingestion: SuperNI / TRACE / JSONL / demo sources -> one instance table and a task summary.

Every source yields rows with the columns of the instances artifact. Sources without a test split
(SuperNI, JSONL) are split per source task by ranking a hash of the instance id, so the split is
stable and independent of file order. Caps per experiment task keep the instances with the
smallest hash, again independent of order. Bad input raises InputError naming file, record, field.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from inscl.core import artifacts
from inscl.core.hashing import content_hash, stable_seed
from inscl.core.io import InputError, read_text_utf8
from inscl.data.demo import generate_demo

log = logging.getLogger(__name__)

TRACE_SPLITS = {"train": "train.json", "eval": "eval.json", "test": "test.json"}
LABEL_MAX_CHARS = 40
SHORT_LINE_WORDS = 5


# ---------------------------------------------------------------- field checks


def _text(value, file, record, field, allow_empty=False) -> str:
    if value is None:
        raise InputError(file, "missing field", record=record, field=field)
    if not isinstance(value, str):
        raise InputError(file, f"expected a string, got {type(value).__name__}", record=record, field=field)
    if not allow_empty and not value.strip():
        raise InputError(file, "empty text", record=record, field=field)
    return value


def _references(value, file, record, field="output") -> list[str]:
    """An output as a non-empty list of reference strings (a single string is one reference)."""
    if value is None:
        raise InputError(file, "missing field", record=record, field=field)
    refs = [value] if isinstance(value, str) else value
    if not isinstance(refs, list) or not refs:
        raise InputError(file, "expected a string or a non-empty list of strings", record=record, field=field)
    for ref in refs:
        if not isinstance(ref, str):
            raise InputError(file, f"expected reference strings, got {type(ref).__name__}", record=record, field=field)
    return list(refs)


def _record(value, file, record) -> dict:
    if not isinstance(value, dict):
        raise InputError(file, f"expected an object, got {type(value).__name__}", record=record)
    return value


def _row(source, task, source_task, file, local_id, instruction, text, output, split=None) -> dict:
    return {
        "task": task,
        "split": split,
        "instance_id": f"{source}:{local_id}",
        "instruction": instruction,
        "input": text,
        "output": output,
        "source": source,
        "source_task": source_task,
        "source_file": None if file is None else str(file),
    }


class _IdRegistry:
    """Rejects an upstream id seen twice within one source, naming both places."""

    def __init__(self):
        self.seen: dict[str, tuple[object, object]] = {}

    def add(self, upstream_id, file, record) -> str:
        if not isinstance(upstream_id, (str, int)) or isinstance(upstream_id, bool) or str(upstream_id) == "":
            raise InputError(file, "missing or non-scalar id", record=record, field="id")
        key = str(upstream_id)
        if key in self.seen:
            first_file, first_record = self.seen[key]
            raise InputError(
                file, f"duplicate id '{key}' (first at {first_file} record {first_record})", record=record, field="id"
            )
        self.seen[key] = (file, record)
        return key


def _undecodable_path(value, path=()):
    """JSON path of the first key or string holding bytes that were not UTF-8 (as surrogates)."""
    if isinstance(value, str):
        return path if any("\udc80" <= ch <= "\udcff" for ch in value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and _undecodable_path(key) is not None:
            return path + (key,)
        found = _undecodable_path(item, path + (key,))
        if found is not None:
            return found
    return None


def _located(path: tuple) -> tuple[object, str | None]:
    """(record, field) of a JSON path: an element of a top-level list or of SuperNI's 'Instances' is
    a record and its key the field; anything else is named by its whole path, e.g. 'Definition[0]'."""
    if path and (isinstance(path[0], int) or (path[0] == "Instances" and len(path) > 1 and isinstance(path[1], int))):
        k = 0 if isinstance(path[0], int) else 1
        keys = [p for p in path[k + 1 :] if isinstance(p, str)]
        return path[k], keys[0] if keys else None
    field = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))
    return None, field or None


def _decode(data: bytes, file, record=None):
    """Parse JSON bytes; non-UTF-8 bytes and syntax errors raise InputError naming where they are."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        if record is None:
            line = data[: e.start].count(b"\n") + 1
            problem = f"not valid UTF-8 (byte {e.start}, line {line}"
        else:
            problem = f"not valid UTF-8 (byte {e.start} of the line"
        field = None
        try:
            where = _undecodable_path(json.loads(data.decode("utf-8", "surrogateescape")))
        except json.JSONDecodeError:
            where = None
        if where is not None and record is None:
            record, field = _located(where)
        elif where is not None:
            field = next((p for p in where if isinstance(p, str)), None)
        raise InputError(file, problem + ")", record=record, field=field) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = f"column {e.colno}" if record is not None else f"line {e.lineno} column {e.colno}"
        raise InputError(file, f"malformed JSON at {where}: {e.msg}", record=record) from None


def read_json(path):
    """A JSON file (NaN accepted, as upstream SuperNI writes it in 'URL')."""
    return _decode(Path(path).read_bytes(), path)


# ---------------------------------------------------------------- SuperNI


def _superni_meta(path: Path) -> dict:
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise InputError(path, f"expected a SuperNI task object, got {type(doc).__name__}")
    return doc


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
    return _text(definition, path, None, "Definition").strip()


def _is_english(doc: dict) -> bool:
    languages = [doc.get("Input_language"), doc.get("Output_language")]
    return all(isinstance(v, list) and v and all(x == "English" for x in v) for v in languages)


def _read_task_list(path: Path) -> list[str]:
    names = []
    for line in read_text_utf8(path).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.removesuffix(".json"))
    return names


def load_superni(source: dict, base_dir=".", key: str = "data.sources[0]") -> list[dict]:
    """Rows of the SuperNI tasks that the source's groups select (split assigned later)."""
    base_dir = Path(base_dir)
    name = source["name"]
    root = base_dir / source["path"]
    if not root.is_dir():
        raise InputError("config", f"SuperNI directory not found: {root}", field=f"{key}.path")
    files = {p.stem: p for p in sorted(root.glob("*.json"))}
    if not files:
        raise InputError("config", f"no SuperNI task files (*.json) in {root}", field=f"{key}.path")
    allowed = set(files)
    if source.get("task_list"):
        listed = _read_task_list(base_dir / source["task_list"])
        allowed &= set(listed)
    english_only = source.get("english_only", True)

    groups = source["groups"]
    explicit: dict[str, str] = {}
    by_category: dict[str, str] = {}
    for group, spec in groups.items():
        gkey = f"{key}.groups.{group}"
        if not spec.get("tasks") and not spec.get("categories"):
            raise InputError("config", "a group needs 'tasks' or 'categories'", field=gkey)
        for i, task in enumerate(spec.get("tasks") or []):
            task = task.removesuffix(".json")
            if task not in files:
                raise InputError("config", f"source task '{task}' not found in {root}", record=i, field=f"{gkey}.tasks")
            if task not in allowed:
                raise InputError(
                    "config",
                    f"source task '{task}' is not in task_list {source['task_list']}",
                    record=i,
                    field=f"{gkey}.tasks",
                )
            if task in explicit:
                raise InputError(
                    "config",
                    f"source task '{task}' is also in group '{explicit[task]}'",
                    record=i,
                    field=f"{gkey}.tasks",
                )
            explicit[task] = group
        for category in spec.get("categories") or []:
            if category in by_category:
                raise InputError(
                    "config",
                    f"category '{category}' is also in group '{by_category[category]}'",
                    field=f"{gkey}.categories",
                )
            by_category[category] = group

    # Explicit task names take precedence over categories; categories need every file's metadata.
    candidates = sorted(allowed) if by_category else sorted(explicit)
    ids = _IdRegistry()
    selected: dict[str, tuple[str, list[dict]]] = {}
    seen_categories: set[str] = set()
    for task in tqdm(candidates, desc=f"{name}: SuperNI tasks", unit="task", disable=None):
        path = files[task]
        doc = _superni_meta(path)
        categories = doc.get("Categories") or []
        if not isinstance(categories, list):
            raise InputError(path, "expected a list of strings", field="Categories")
        seen_categories.update(c for c in categories if isinstance(c, str))
        group = explicit.get(task) or next((by_category[c] for c in categories if c in by_category), None)
        if group is None:
            continue
        if english_only and not _is_english(doc):
            if task in explicit:
                raise InputError(
                    "config",
                    f"source task '{task}' is not English (set english_only: false to keep it)",
                    field=f"{key}.groups.{group}.tasks",
                )
            continue
        selected[task] = (group, _superni_rows(doc, path, name, group, task, ids))
    for category, group in by_category.items():
        if category not in seen_categories:
            raise InputError(
                "config", f"no source task has category '{category}'", field=f"{key}.groups.{group}.categories"
            )
    group_rank = {group: i for i, group in enumerate(groups)}
    ordered = sorted(selected.items(), key=lambda item: (group_rank[item[1][0]], item[0]))
    return [row for _, (_, rows) in ordered for row in rows]


def _superni_rows(doc: dict, path: Path, source: str, group: str, task: str, ids: _IdRegistry) -> list[dict]:
    instruction = superni_definition(doc, path)
    instances = doc.get("Instances")
    if instances is None:
        raise InputError(path, "missing field", field="Instances")
    if not isinstance(instances, list) or not instances:
        raise InputError(path, "empty instance list", field="Instances")
    rows = []
    for i, inst in enumerate(instances):
        inst = _record(inst, path, i)
        local = ids.add(inst.get("id"), path, i)
        text = _text(inst.get("input"), path, i, "input", allow_empty=True)
        rows.append(_row(source, group, task, path, local, instruction, text, _references(inst.get("output"), path, i)))
    return rows


# ---------------------------------------------------------------- TRACE


def _is_label(line: str) -> bool:
    """A field label such as 'Text:', 'Meeting transcripts:' or '文本：'."""
    return line.endswith((":", "：")) and len(line) <= LABEL_MAX_CHARS and len(line.split()) <= SHORT_LINE_WORDS


def split_instruction(prompt: str, rule: str = "first_paragraph", pattern: str | None = None) -> tuple[str, str] | None:
    """(instruction, input) of a TRACE prompt, or None when the rule finds no instruction.

    first_line: the first non-blank line.
    first_paragraph: the leading lines up to the first blank line or the first field-label line
        ('Text:', 'Question:', '文本：'), whichever comes first. Short lines right after a line that
        ends in a colon ('... follow this format:' / 'Answer:' / 'Because') are a format template,
        not labels. Without a blank line or label, it is the first line.
    regex: group 1 of the first match of `pattern`.
    The input is the rest of the prompt, without the blank lines around it.
    """
    if rule == "regex":
        if not pattern:
            raise ValueError("the regex rule needs a pattern")
        match = re.search(pattern, prompt)
        if match is None or match.lastindex is None or not match.group(1).strip():
            return None
        rest = prompt[: match.start(1)] + prompt[match.end(1) :]
        return match.group(1).strip(), rest.strip("\n")
    lines = prompt.strip("\n").split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip()), None)
    if start is None:
        return None
    end = start + 1
    if rule == "first_paragraph":
        end = None
        template = lines[start].strip().endswith((":", "：")) and not _is_label(lines[start].strip())
        for i in range(start + 1, len(lines)):
            line = lines[i].strip()
            if not line:
                end = i
                break
            if template and len(line.split()) <= SHORT_LINE_WORDS:
                continue
            template = False
            if _is_label(line):
                end = i
                break
            template = line.endswith((":", "："))
        end = end if end is not None else start + 1
    elif rule != "first_line":
        raise ValueError(f"unknown instruction rule '{rule}'")
    instruction = "\n".join(lines[start:end]).strip()
    return instruction, "\n".join(lines[end:]).strip("\n")


def load_trace(source: dict, base_dir=".", key: str = "data.sources[0]") -> list[dict]:
    """Rows of TRACE dataset folders (train.json / eval.json / test.json, lists of {prompt, answer})."""
    name = source["name"]
    root = Path(base_dir) / source["path"]
    if not root.is_dir():
        raise InputError("config", f"TRACE directory not found: {root}", field=f"{key}.path")
    datasets = source.get("datasets") or sorted(p.name for p in root.iterdir() if p.is_dir())
    if not datasets:
        raise InputError("config", f"no dataset folders in {root}", field=f"{key}.path")
    spec = source.get("instruction") or {}
    rule, pattern = spec.get("rule", "first_paragraph"), spec.get("pattern")
    if rule == "regex":
        if not pattern:
            raise InputError("config", "the regex rule needs a pattern", field=f"{key}.instruction.pattern")
        try:
            if re.compile(pattern).groups < 1:
                raise InputError(
                    "config",
                    "the pattern needs a capturing group (group 1 is the instruction)",
                    field=f"{key}.instruction.pattern",
                )
        except re.error as e:
            raise InputError("config", f"invalid regex: {e}", field=f"{key}.instruction.pattern") from None
    rows = []
    for i, dataset in enumerate(datasets):
        folder = root / dataset
        if not folder.is_dir():
            raise InputError("config", f"dataset folder not found: {folder}", record=i, field=f"{key}.datasets")
        for split, filename in TRACE_SPLITS.items():
            path = folder / filename
            if not path.exists():
                if split == "eval":
                    continue
                raise InputError(path, f"missing {filename} in dataset folder {folder}")
            records = read_json(path)
            if not isinstance(records, list):
                raise InputError(path, f"expected a list of {{prompt, answer}}, got {type(records).__name__}")
            if not records:
                raise InputError(path, "empty instance list")
            for r, rec in enumerate(records):
                rec = _record(rec, path, r)
                prompt = _text(rec.get("prompt"), path, r, "prompt")
                output = _references(rec.get("answer"), path, r, "answer")
                parts = split_instruction(prompt, rule, pattern)
                if parts is None:
                    raise InputError(
                        path, f"the '{rule}' rule finds no instruction in the prompt", record=r, field="prompt"
                    )
                instruction, text = parts
                rows.append(
                    _row(name, dataset, dataset, path, f"{dataset}/{split}/{r}", instruction, text, output, split)
                )
    return rows


# ---------------------------------------------------------------- JSONL


def load_jsonl(source: dict, base_dir=".", key: str = "data.sources[0]") -> list[dict]:
    """Rows of {instruction, input, output[, id, task, split]} records.

    A directory holds one <task>.jsonl per task. A single file's task is each record's 'task',
    else the source's `task`, else the file stem. Records are numbered by line (1-based).
    """
    name = source["name"]
    path = Path(base_dir) / source["path"]
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise InputError("config", f"no *.jsonl files in {path}", field=f"{key}.path")
    elif path.is_file():
        files = [path]
    else:
        raise InputError("config", f"JSONL file or directory not found: {path}", field=f"{key}.path")
    ids = _IdRegistry()
    rows = []
    for file in files:
        default_task = source.get("task") if path.is_file() and source.get("task") else file.stem
        n_records = 0
        for lineno, line in enumerate(Path(file).read_bytes().split(b"\n"), start=1):
            if not line.strip():
                continue
            rec = _decode(line, file, record=lineno)
            rec = _record(rec, file, lineno)
            n_records += 1
            task = default_task
            if path.is_file() and "task" in rec:
                task = _text(rec["task"], file, lineno, "task").strip()
            split = rec.get("split")
            if split is not None and split not in ("train", "test"):
                raise InputError(file, f"expected 'train' or 'test', got {split!r}", record=lineno, field="split")
            local = ids.add(rec["id"], file, lineno) if "id" in rec else f"{task}/{file.stem}/{lineno}"
            rows.append(
                _row(
                    name,
                    task,
                    task,
                    file,
                    local,
                    _text(rec.get("instruction"), file, lineno, "instruction").strip(),
                    _text(rec.get("input", ""), file, lineno, "input", allow_empty=True),
                    _references(rec.get("output"), file, lineno),
                    split,
                )
            )
        if n_records == 0:
            raise InputError(file, "empty instance list")
    return rows


# ---------------------------------------------------------------- demo


def load_demo(source: dict, base_dir=".", key: str = "data.sources[0]") -> list[dict]:
    name = source["name"]
    rows = []
    generated = generate_demo(
        seed=source.get("seed", 0),
        n_train=source.get("n_train", 240),
        n_test=source.get("n_test", 60),
        tasks=source.get("tasks"),
        config_key=key,
    )
    for g in generated:
        local = f"{g['task']}/{g['split']}/{g['index']:05d}"
        rows.append(
            _row(name, g["task"], g["task"], None, local, g["instruction"], g["input"], g["output"], g["split"])
        )
    return rows


LOADERS = {"demo": load_demo, "superni": load_superni, "trace": load_trace, "jsonl": load_jsonl}


# ---------------------------------------------------------------- split, caps, summary


def _hash_keys(ids, *parts) -> np.ndarray:
    return np.fromiter((stable_seed(*parts, i) for i in ids), dtype=np.int64, count=len(ids))


def assign_splits(df: pd.DataFrame, test_fraction: float, split_seed: int) -> pd.DataFrame:
    """Split rows without a split, per (source, source_task): the round(n * test_fraction) rows with
    the smallest hash of (split_seed, instance_id) go to test; with n >= 2 each side keeps at least one."""
    todo = df["split"].isna()
    if not todo.any():
        return df
    df = df.copy()
    part = df.loc[todo, ["source", "source_task", "instance_id"]].copy()
    part["key"] = _hash_keys(part["instance_id"].tolist(), split_seed, "split")
    groups = part.groupby(["source", "source_task"], sort=False)
    rank = groups["key"].rank(method="first").astype(int) - 1
    size = groups["key"].transform("size")
    n_test = (size * test_fraction).round().astype(int)
    n_test = n_test.where(size < 2, n_test.clip(lower=1)).clip(upper=(size - 1).clip(lower=0))
    df.loc[todo, "split"] = np.where(rank < n_test, "test", "train")
    return df


def apply_caps(df: pd.DataFrame, max_train: int | None, max_test: int | None, split_seed: int) -> pd.DataFrame:
    """Keep at most max_train / max_test rows per task: those with the smallest hash of the id."""
    caps = {"train": max_train, "test": max_test}
    if all(c is None for c in caps.values()):
        return df
    key = pd.Series(_hash_keys(df["instance_id"].tolist(), split_seed, "cap"), index=df.index)
    rank = key.groupby([df["task"], df["split"]]).rank(method="first") - 1
    cap = df["split"].map(lambda s: caps.get(s)).astype("float64").fillna(np.inf)
    return df[rank < cap]


def summarize_tasks(df: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment task, in order of first appearance."""
    rows = []
    for task, part in df.groupby("task", sort=False):
        rows.append(
            {
                "task": task,
                "source": ",".join(dict.fromkeys(part["source"])),
                "n_train": int((part["split"] == "train").sum()),
                "n_test": int((part["split"] == "test").sum()),
                "n_instructions": int(part["instruction_id"].nunique()),
            }
        )
    return pd.DataFrame(rows, columns=artifacts.columns("tasks"))


def check_orders(tasks: pd.DataFrame, orders: dict) -> None:
    """Every task named in an order must have been ingested."""
    known = list(tasks["task"])
    for name, order in (orders or {}).items():
        for i, task in enumerate(order):
            if task not in known:
                raise InputError(
                    "config",
                    f"task '{task}' is not produced by any data source (ingested tasks: {', '.join(known)})",
                    record=i,
                    field=f"orders.{name}",
                )


def ingest(data: dict, orders: dict | None = None, base_dir=".") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load every configured source; return (instances, tasks) as described in docs/artifacts.md."""
    frames = []
    task_source: dict[str, str] = {}
    names: set[str] = set()
    for i, source in enumerate(data["sources"]):
        key = f"data.sources[{i}]"
        if source["name"] in names:
            raise InputError("config", f"duplicate source name '{source['name']}'", field=f"{key}.name")
        names.add(source["name"])
        rows = LOADERS[source["type"]](source, base_dir=base_dir, key=key)
        if not rows:
            raise InputError("config", f"source '{source['name']}' yields no instances", field=key)
        frame = pd.DataFrame(rows)
        for task in dict.fromkeys(frame["task"]):
            if task in task_source:
                raise InputError(
                    "config",
                    f"task '{task}' is produced by both sources '{task_source[task]}' and '{source['name']}'",
                    field=key,
                )
            task_source[task] = source["name"]
        log.info(
            "source %s (%s): %d instances, %d tasks",
            source["name"],
            source["type"],
            len(frame),
            frame["task"].nunique(),
        )
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    df["split"] = df["split"].astype(object)
    df = assign_splits(df, data.get("test_fraction", 0.2), data.get("split_seed", 0))
    df = apply_caps(df, data.get("max_train_per_task"), data.get("max_test_per_task"), data.get("split_seed", 0))
    duplicated = df["instance_id"].duplicated()
    if duplicated.any():
        row = df[duplicated].iloc[0]
        raise InputError(row["source_file"] or "config", f"instance id '{row['instance_id']}' occurs twice", field="id")
    df["instruction_id"] = df["instruction"].map(content_hash)
    columns = artifacts.columns("instances")
    df = df[columns].reset_index(drop=True)
    df = df.astype({c: "str" for c in columns if c != "output"})
    tasks = summarize_tasks(df)
    source_index = {s["name"]: i for i, s in enumerate(data["sources"])}
    for row in tasks.itertuples():
        if row.n_train == 0 or row.n_test == 0:
            missing = "training" if row.n_train == 0 else "test"
            raise InputError(
                "config",
                f"task '{row.task}' has no {missing} examples after splitting and caps",
                field=f"data.sources[{source_index[row.source]}]",
            )
    check_orders(tasks, orders)
    return df, tasks
