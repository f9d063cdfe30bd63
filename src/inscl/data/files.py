"""Reading upstream data files: UTF-8 (a leading BOM accepted), JSON and JSON Lines.

Errors are one line naming the file, the record and the field, and every record number says how it
counts: a JSON list is numbered by 0-based index (as Python and `jq` do), a JSONL file by 1-based
line (as editors and `sed -n` do). A JSON file that does not parse is reported with the byte offset
of the break, and with the last complete record before it, so a truncated download is easy to spot.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from inscl.core.io import InputError, read_text_utf8

BOM = b"\xef\xbb\xbf"
_DECODER = json.JSONDecoder()  # accepts NaN, as upstream SuperNI writes it in "URL"
_SPACE = re.compile(r"[ \t\n\r]*")


def index_record(i: int, container: str = "the list") -> str:
    """A record of a JSON list: '3 (0-based index in the list)'."""
    return f"{i} (0-based index in {container})"


def line_record(n: int) -> str:
    """A record of a JSONL file: '5 (1-based line)'."""
    return f"{n} (1-based line)"


def strip_bom(data: bytes) -> tuple[bytes, int]:
    """(data without a leading UTF-8 BOM, the number of bytes removed)."""
    return (data[len(BOM) :], len(BOM)) if data.startswith(BOM) else (data, 0)


def read_lines_utf8(path) -> list[str]:
    """The lines of a UTF-8 text file (a leading BOM dropped)."""
    return read_text_utf8(path).removeprefix("\ufeff").splitlines()


# ---------------------------------------------------------------- where a broken file breaks


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


def _located(path: tuple, records: str | None) -> tuple[str | None, str | None]:
    """(record, field) of a JSON path. An element of the record list (the top-level list, or the list
    under key `records`) is a record and its first key the field; anything else is named by its whole
    path, e.g. 'Definition[0]'."""
    if records is None and path and isinstance(path[0], int):
        keys = [p for p in path[1:] if isinstance(p, str)]
        return index_record(path[0]), keys[0] if keys else None
    if records is not None and len(path) > 1 and path[0] == records and isinstance(path[1], int):
        keys = [p for p in path[2:] if isinstance(p, str)]
        return index_record(path[1], records), keys[0] if keys else None
    field = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))
    return None, field or None


def _skip(text: str, pos: int) -> int:
    return _SPACE.match(text, pos).end()


def _value_of(text: str, pos: int, key: str) -> int | None:
    """Position of the value of `key` in the object starting at `pos`; None if the object breaks first."""
    if text[pos : pos + 1] != "{":
        return None
    pos = _skip(text, pos + 1)
    while text[pos : pos + 1] == '"':
        try:
            name, pos = _DECODER.raw_decode(text, pos)
            pos = _skip(text, pos)
            if text[pos : pos + 1] != ":":
                return None
            pos = _skip(text, pos + 1)
            if name == key:
                return pos
            _, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            return None
        pos = _skip(text, pos)
        if text[pos : pos + 1] != ",":
            return None
        pos = _skip(text, pos + 1)
    return None


def complete_records(text: str, records: str | None = None) -> int | None:
    """How many records of the record list (the top-level list, or the list under key `records` of a
    top-level object) parse before the first one that does not; None if the text breaks before the list."""
    pos = _skip(text, 0)
    if records is not None:
        pos = _value_of(text, pos, records)
        if pos is None:
            return None
    if text[pos : pos + 1] != "[":
        return None
    pos = _skip(text, pos + 1)
    count = 0
    while True:
        try:
            _, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            return count
        count += 1
        pos = _skip(text, pos)
        if text[pos : pos + 1] != ",":
            return count
        pos = _skip(text, pos + 1)


def _syntax_problem(error: json.JSONDecodeError, text: str, where: str) -> str:
    """'Unterminated string starting at byte 812 (line 3 column 9)', with a note when the text ends
    inside the JSON value (a truncated file or line)."""
    message = error.msg if error.msg.endswith(" at") else f"{error.msg} at"
    problem = f"malformed JSON: {message} {where}"
    if error.msg.startswith("Unterminated string") or not text[error.pos :].strip():
        problem += "; the text ends inside the JSON (truncated?)"
    return problem


# ---------------------------------------------------------------- JSON and JSONL


def _decode_utf8(data: bytes) -> str:
    """UTF-8 text. A character cut off at the very end (a truncated file) is dropped when the text
    without it is not complete JSON, so that the JSON parser reports the truncation."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.end == len(data) and e.reason == "unexpected end of data":
            text = data[: e.start].decode("utf-8")
            try:
                json.loads(text)
            except json.JSONDecodeError:
                return text
        raise


def read_json(path, records: str | None = None):
    """A JSON file (a leading BOM accepted, NaN accepted). `records` names where its records are for
    error messages: None = the top-level list (TRACE), or a key of the top-level object ('Instances')."""
    data, offset = strip_bom(Path(path).read_bytes())
    try:
        text = _decode_utf8(data)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        try:
            where = _undecodable_path(json.loads(data.decode("utf-8", "surrogateescape")))
        except json.JSONDecodeError:
            where = None
        record, field = _located(where, records) if where is not None else (None, None)
        raise InputError(path, f"not valid UTF-8 (byte {e.start + offset}, line {line})", record, field) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        byte = len(text[: e.pos].encode("utf-8")) + offset
        problem = _syntax_problem(e, text, f"byte {byte} (line {e.lineno} column {e.colno})")
        count = complete_records(text, records)
        if count is None:
            problem += f"; it breaks before {records or 'the list of records'}"
        elif count == 0:
            problem += "; no record is complete before it"
        else:
            problem += f"; the last complete record is {index_record(count - 1, records or 'the list')}"
        raise InputError(path, problem) from None


def read_jsonl(path):
    """(line number, parsed value) of every non-blank line of a JSONL file (a BOM accepted)."""
    data = Path(path).read_bytes()
    start = 0  # byte offset of the current line in the file
    last = None  # the last line that parsed
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line, bom = strip_bom(raw)
        line_start, start = start, start + len(raw) + 1
        if not line.strip():
            continue
        record = line_record(number)
        try:
            text = _decode_utf8(line)
        except UnicodeDecodeError as e:
            try:
                where = _undecodable_path(json.loads(line.decode("utf-8", "surrogateescape")))
            except json.JSONDecodeError:
                where = None
            field = next((p for p in where if isinstance(p, str)), None) if where else None
            at = f"byte {e.start + bom} of the line, byte {line_start + bom + e.start} of the file"
            raise InputError(path, f"not valid UTF-8 ({at})", record, field) from None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            byte = line_start + bom + len(text[: e.pos].encode("utf-8"))
            problem = _syntax_problem(e, text, f"column {e.colno} (byte {byte} of the file)")
            problem += f"; the last complete record is {line_record(last)}" if last else "; no earlier line is a record"
            raise InputError(path, problem, record) from None
        last = number
        yield number, value
