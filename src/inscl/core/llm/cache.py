"""The response cache: under `<cache_dir>/api/<model>/<prompt version>/`, one JSON file per request
key (named by the key's hash) holding every paid answer for it, written atomically as each answer
arrives. A rerun therefore pays only for what is missing."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from inscl.core.hashing import content_hash
from inscl.core.io import atomic_path, remove_stale_temp_files
from inscl.core.llm.results import Attempt

log = logging.getLogger(__name__)


def _slug(text: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', text)[:48]}-{content_hash(text, 8)}"


def response_cache_path(cache_dir, model: str, prompt_version: str, key: str) -> Path:
    return ResponseCache(cache_dir, model, prompt_version).path(key)


class ResponseCache:
    """The cached answers of one model and prompt version."""

    def __init__(self, cache_dir, model: str, prompt_version: str):
        self.model, self.prompt_version = model, prompt_version
        self.folder = Path(cache_dir) / "api" / _slug(model) / _slug(prompt_version)

    def path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.folder / digest[:2] / f"{digest}.json"

    def remove_stale_temp_files(self) -> None:
        """Sweep the unfinished writes of killed runs."""
        remove_stale_temp_files(self.folder)

    def load(self, key: str) -> list[Attempt]:
        path = self.path(key)
        if not path.exists():
            return []
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            names = Attempt.__dataclass_fields__
            return [Attempt(**{k: v for k, v in attempt.items() if k in names}) for attempt in record["attempts"]]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable cache file %s", path)
            return []

    def store(self, key: str, attempts: list[Attempt]) -> None:
        record = {
            "model": self.model,
            "prompt_version": self.prompt_version,
            "key": key,
            "attempts": [attempt.__dict__ for attempt in attempts],
        }
        with atomic_path(self.path(key), ".json") as tmp:
            tmp.write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
