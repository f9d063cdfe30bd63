"""Your own JSON Lines files -> instance rows.

Records are {instruction, input, output} with optional id, task and split (train, eval or test).
A directory holds one <task>.jsonl per task; a single file's task is each record's `task`, else the
source's `task`, else the file stem. Records are numbered by 1-based line.
"""

from __future__ import annotations

import logging
from pathlib import Path

from inscl.core.io import InputError
from inscl.data.files import line_record, read_jsonl
from inscl.data.rows import IdRegistry, SourceRows, instance_row, json_object, references, text_field

log = logging.getLogger(__name__)

SPLITS = ("train", "eval", "test")


def _files(path: Path, key: str) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError("config", f"JSONL file or directory not found: {path}", field=f"{key}.path")
    files = sorted(path.glob("*.jsonl"))
    if not files:
        raise InputError("config", f"no *.jsonl files in {path}", field=f"{key}.path")
    ignored = sorted(p.name for p in path.iterdir() if p.is_file() and p.suffix != ".jsonl")
    if ignored:
        log.warning("%s: files not ending in .jsonl are not read: %s", path, ", ".join(ignored))
    return files


def load_jsonl(source: dict, base_dir=".", key: str = "data.sources[0]") -> SourceRows:
    name = source["name"]
    path = Path(base_dir) / source["path"]
    ids = IdRegistry()
    rows = []
    for file in _files(path, key):
        default_task = source.get("task") if path.is_file() and source.get("task") else file.stem
        n_records = 0
        for number, rec in read_jsonl(file):
            record = line_record(number)
            rec = json_object(rec, file, record)
            n_records += 1
            task = default_task
            if path.is_file() and "task" in rec:
                task = text_field(rec["task"], file, record, "task").strip()
            split = rec.get("split")
            if split is not None and split not in SPLITS:
                raise InputError(file, f"expected one of {', '.join(SPLITS)}, got {split!r}", record, "split")
            local = ids.add(rec["id"], file, record) if "id" in rec else f"{task}/{file.stem}/{number}"
            instruction = text_field(rec.get("instruction"), file, record, "instruction").strip()
            text = text_field(rec.get("input", ""), file, record, "input", allow_empty=True)
            output = references(rec.get("output"), file, record)
            rows.append(instance_row(name, task, task, file, local, instruction, text, output, split))
        if n_records == 0:
            raise InputError(file, "empty instance list")
    return SourceRows(rows)
