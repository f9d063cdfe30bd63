"""TRACE (BeyonderXX/TRACE) dataset folders -> instance rows.

Each dataset folder holds train.json, eval.json and test.json, each a JSON list of
{"prompt", "answer"} (TRACE utils/data/raw_datasets.py:92-100). The prompt carries the task
instruction and the input; a rule splits them. eval.json rows are kept as split "eval" and counted
as n_eval in the tasks artifact, for a validation loss; they are never trained on or scored (TRACE
reads them but its evaluation of them is commented out, model/base_model.py:100-106). A folder
without eval.json is logged.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from inscl.core.io import InputError
from inscl.data.files import index_record, read_json
from inscl.data.rows import SourceRows, instance_row, json_object, references, text_field

log = logging.getLogger(__name__)

SPLIT_FILES = {"train": "train.json", "eval": "eval.json", "test": "test.json"}
LABEL_MAX_CHARS = 40
SHORT_LINE_WORDS = 5


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
    With the two line rules the input is the rest of the prompt after the instruction's line break,
    blank lines included, so that instruction + "\n" + input gives the prompt back (the `raw`
    template, inscl.core.prompts) unless the prompt starts with blank lines. With regex it is the
    prompt without group 1 and without the blank lines around it.
    """
    if rule == "regex":
        if not pattern:
            raise ValueError("the regex rule needs a pattern")
        match = re.search(pattern, prompt)
        if match is None or match.lastindex is None or not match.group(1).strip():
            return None
        rest = prompt[: match.start(1)] + prompt[match.end(1) :]
        return match.group(1).strip(), rest.strip("\n")
    lines = prompt.split("\n")
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
    return instruction, "\n".join(lines[end:])


def _checked_rule(source: dict, key: str) -> tuple[str, str | None]:
    spec = source.get("instruction") or {}
    rule, pattern = spec.get("rule", "first_paragraph"), spec.get("pattern")
    if rule == "regex":
        field = f"{key}.instruction.pattern"
        if not pattern:
            raise InputError("config", "the regex rule needs a pattern", field=field)
        try:
            groups = re.compile(pattern).groups
        except re.error as e:
            raise InputError("config", f"invalid regex: {e}", field=field) from None
        if groups < 1:
            raise InputError("config", "the pattern needs a capturing group (group 1 is the instruction)", field=field)
    return rule, pattern


def load_trace(source: dict, base_dir=".", key: str = "data.sources[0]") -> SourceRows:
    """Rows of TRACE dataset folders (train.json, eval.json, test.json)."""
    name = source["name"]
    root = Path(base_dir) / source["path"]
    if not root.is_dir():
        raise InputError("config", f"TRACE directory not found: {root}", field=f"{key}.path")
    datasets = source.get("datasets") or sorted(p.name for p in root.iterdir() if p.is_dir())
    if not datasets:
        raise InputError("config", f"no dataset folders in {root}", field=f"{key}.path")
    rule, pattern = _checked_rule(source, key)
    rows = []
    for i, dataset in enumerate(datasets):
        folder = root / dataset
        if not folder.is_dir():
            raise InputError("config", f"dataset folder not found: {folder}", record=i, field=f"{key}.datasets")
        for split, filename in SPLIT_FILES.items():
            path = folder / filename
            if not path.exists():
                if split == "eval":
                    log.warning("%s: %s has no eval.json, so dataset %s has no eval split", name, folder, dataset)
                    continue
                raise InputError(path, f"missing {filename} in dataset folder {folder}")
            records = read_json(path)
            if not isinstance(records, list):
                raise InputError(path, f"expected a list of {{prompt, answer}}, got {type(records).__name__}")
            if not records:
                raise InputError(path, "empty instance list")
            for r, rec in enumerate(records):
                record = index_record(r)
                rec = json_object(rec, path, record)
                prompt = text_field(rec.get("prompt"), path, record, "prompt")
                output = references(rec.get("answer"), path, record, "answer")
                parts = split_instruction(prompt, rule, pattern)
                if parts is None:
                    problem = f"the '{rule}' rule finds no instruction in the prompt"
                    raise InputError(path, problem, record=record, field="prompt")
                instruction, text = parts
                local = f"{dataset}/{split}/{r}"
                rows.append(instance_row(name, dataset, dataset, path, local, instruction, text, output, split))
    return SourceRows(rows)
