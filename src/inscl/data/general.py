"""The general-data file of general-data replay (LIMA-style; `replay.general`) -> rows shaped like the
instances artifact (results/data/general.parquet).

Accepted files:

- a TRACE-format JSON file, a list of {"prompt", "answer"} (TRACE's replay set `Lima/train.json`,
  training/replay.py:261-274; utils/data/raw_datasets.py:92-100), numbered by 0-based index;
- a TRACE dataset folder: its train.json;
- JSON Lines, one {"instruction", "input" (optional), "output"} or {"prompt", "answer"} object per line,
  numbered by 1-based line.

A prompt becomes the instruction with an empty input: a general request has no task instruction apart
from its text. Every row has split train and task = source = `replay.general.name`; the row order is
the file's. An empty or missing answer is an error naming the file, the record and the field (TRACE's
HHH files have empty answers: they are prompts to judge, not training data).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from inscl.core import artifacts
from inscl.core.hashing import content_hash
from inscl.core.io import InputError
from inscl.data.files import index_record, line_record, read_json, read_jsonl
from inscl.data.rows import instance_row, json_object, references, text_field

TRACE_TRAIN = "train.json"


def _record(rec: dict, file, record) -> tuple[str, str, list[str]]:
    """(instruction, input, references) of one record in either format."""
    if "prompt" in rec or "answer" in rec:
        prompt = text_field(rec.get("prompt"), file, record, "prompt")
        answers = references(rec.get("answer"), file, record, "answer")
        field = "answer"
        instruction, text = prompt, ""
    else:
        instruction = text_field(rec.get("instruction"), file, record, "instruction")
        text = text_field(rec.get("input", ""), file, record, "input", allow_empty=True)
        answers = references(rec.get("output"), file, record, "output")
        field = "output"
    if not any(answer.strip() for answer in answers):
        raise InputError(file, "empty answer (general data needs answers to train on)", record=record, field=field)
    return instruction, text, answers


def general_files(path) -> Path:
    """The file a `replay.general.path` names (a TRACE dataset folder: its train.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / TRACE_TRAIN
    if not path.is_file():
        raise InputError("config", f"general-data file not found: {path}", field="replay.general.path")
    return path


def load_general(general: dict, base_dir=".") -> pd.DataFrame:
    """The rows of the general-data file, in file order (module docstring)."""
    name = general["name"]
    file = general_files(Path(base_dir) / general["path"])
    rows = []
    if file.suffix == ".jsonl":
        for number, rec in read_jsonl(file):
            record = line_record(number)
            instruction, text, answers = _record(json_object(rec, file, record), file, record)
            rows.append(instance_row(name, name, name, file, f"{number}", instruction, text, answers, "train"))
    else:
        records = read_json(file)
        if not isinstance(records, list):
            raise InputError(file, f"expected a list of {{prompt, answer}}, got {type(records).__name__}")
        for index, rec in enumerate(records):
            record = index_record(index)
            instruction, text, answers = _record(json_object(rec, file, record), file, record)
            rows.append(instance_row(name, name, name, file, f"{index}", instruction, text, answers, "train"))
    if not rows:
        raise InputError(file, "no records")
    frame = pd.DataFrame(rows)
    frame["instruction_id"] = frame["instruction"].map(content_hash)
    return frame[artifacts.columns("general_data")]
