"""Content hashes and seeds that are identical across runs, processes and machines (stdlib only)."""

from __future__ import annotations

import hashlib


def content_hash(text: str, length: int = 16) -> str:
    """Stable hex digest of a text (used for instruction_id and cache keys)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def stable_seed(*parts) -> int:
    """A 63-bit seed derived from any printable parts, identical across runs and machines."""
    key = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") >> 1
