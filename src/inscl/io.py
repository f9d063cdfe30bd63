"""Shared I/O helpers: one-line input errors, atomic artifact writes, content hashes, seeds."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd


_UMASK = os.umask(0)
os.umask(_UMASK)


class InputError(ValueError):
    """Bad user input. str() is one line naming the file, the record and the field."""

    def __init__(self, file, problem: str, record=None, field: str | None = None):
        self.file, self.record, self.field, self.problem = str(file), record, field, problem
        parts = [self.file]
        if record is not None:
            parts.append(f"record {record}")
        if field is not None:
            parts.append(f"field '{field}'")
        super().__init__(": ".join(parts) + f": {problem}")


def content_hash(text: str, length: int = 16) -> str:
    """Stable hex digest of a text (used for instruction_id and cache keys)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def stable_seed(*parts) -> int:
    """A 63-bit seed derived from any printable parts, identical across runs and machines."""
    key = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") >> 1


@contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; artifacts get the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_parquet(df: pd.DataFrame, path) -> None:
    """Write a parquet artifact atomically: a failure leaves no partial file."""
    with atomic_path(path, ".parquet") as tmp:
        df.to_parquet(tmp, index=False)


def write_json(obj, path) -> None:
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))


def read_text_utf8(path) -> str:
    """Read a text file, naming the file and byte offset when it is not UTF-8."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(path, f"not valid UTF-8 (byte {e.start}, line {line})") from None


def read_json(path):
    """Parse a JSON file, naming the file, line and column on a syntax error."""
    text = read_text_utf8(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(path, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
