"""Shared I/O helpers: one-line input errors, atomic writes, reading JSON and UTF-8 text."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


TEMP_SUFFIX = ".tmp"
STALE_TEMP_S = 3600.0  # no write takes this long: an older temporary file's writer was killed


@contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    The temporary name, `.<name>.<random><suffix>.tmp`, ends in TEMP_SUFFIX so that no glob for
    finished files (`*.json`, `shard-*.npz`) matches what a killed writer leaves behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{suffix}{TEMP_SUFFIX}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; artifacts get the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temp_files(folder, max_age_s: float = STALE_TEMP_S) -> None:
    """Delete what killed `atomic_path` writers left in `folder` and below. Younger files are kept:
    they may belong to a live writer in another process."""
    cutoff = time.time() - max_age_s
    for tmp in Path(folder).rglob(f".*{TEMP_SUFFIX}"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
        except FileNotFoundError:  # moved into place or swept meanwhile
            pass


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
