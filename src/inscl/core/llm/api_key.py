"""The API key: read from OPENAI_API_KEY only, and never logged, stored or put in an error."""

from __future__ import annotations

import os
import re

from inscl.core.config import ConfigError

API_KEY_ENV = "OPENAI_API_KEY"


def get_api_key() -> str:
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise ConfigError(
            f"{API_KEY_ENV} is not set: the OpenAI-compatible backend reads its API key from this environment variable only"
        )
    return key


def redact(text: str, secret: str | None) -> str:
    """`text` with the secret and anything shaped like an OpenAI key removed."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return re.sub(r"sk-[A-Za-z0-9_\-*.]{4,}", "sk-[redacted]", text)
