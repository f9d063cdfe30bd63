"""Upstream records -> rows of the instances artifact, and rows of the dropped report.

Field checks raise InputError naming the file, the record (numbered as inscl.data.files says) and
the field. A loader returns its instance rows and a dropped row for every source task or
instruction a filter removed, so that nothing disappears without a trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inscl.core.io import InputError


@dataclass
class SourceRows:
    """What one data source yields: instance rows and the rows of what its filters dropped."""

    rows: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)


def text_field(value, file, record, name, allow_empty=False) -> str:
    if value is None:
        raise InputError(file, "missing field", record=record, field=name)
    if not isinstance(value, str):
        raise InputError(file, f"expected a string, got {type(value).__name__}", record=record, field=name)
    if not allow_empty and not value.strip():
        raise InputError(file, "empty text", record=record, field=name)
    return value


def references(value, file, record, name="output") -> list[str]:
    """An output as a non-empty list of reference strings (a single string is one reference)."""
    if value is None:
        raise InputError(file, "missing field", record=record, field=name)
    refs = [value] if isinstance(value, str) else value
    if not isinstance(refs, list) or not refs:
        raise InputError(file, "expected a string or a non-empty list of strings", record=record, field=name)
    for ref in refs:
        if not isinstance(ref, str):
            raise InputError(file, f"expected reference strings, got {type(ref).__name__}", record=record, field=name)
    return list(refs)


def json_object(value, file, record) -> dict:
    if not isinstance(value, dict):
        raise InputError(file, f"expected an object, got {type(value).__name__}", record=record)
    return value


def instance_row(source, task, source_task, file, local_id, instruction, text, output, split=None) -> dict:
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


def dropped_row(
    source, file, source_task, task, by, reason, n_dropped, n_kept=0, split=None, instruction_id=None
) -> dict:
    """A row of the dropped artifact; `by` is the config key of the filter that dropped it (e.g. english_only)."""
    return {
        "source": source,
        "source_file": None if file is None else str(file),
        "source_task": source_task,
        "task": task,
        "instruction_id": instruction_id,
        "split": split,
        "n_dropped": int(n_dropped),
        "n_kept": int(n_kept),
        "filter": by,
        "reason": reason,
    }


class IdRegistry:
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
