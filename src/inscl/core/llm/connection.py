"""One run's connection to the endpoint: the official `openai` client with our retries on
429/5xx/timeouts (exponential backoff with jitter, honouring Retry-After) instead of its own."""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from inscl.core.hashing import stable_seed
from inscl.core.llm.api_key import get_api_key, redact

log = logging.getLogger(__name__)

RETRY_AFTER_CAP_S = 600.0  # a longer Retry-After (e.g. a daily quota) fails the request; a rerun resumes


class ApiError(RuntimeError):
    """A failure that stops the whole run (bad key, batch timeout). The text never holds the key."""


class RequestFailed(Exception):
    """A request that failed after every retry, or was refused for good; nothing was paid."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def retry_delay(error, attempt: int, endpoint: dict, seed: int) -> float:
    """Retry-After (or retry-after-ms) when the server sends it, else capped exponential backoff with jitter."""
    response = getattr(error, "response", None)
    headers = response.headers if response is not None else {}
    if headers.get("retry-after-ms"):
        try:
            return min(RETRY_AFTER_CAP_S, max(0.0, float(headers["retry-after-ms"]) / 1000))
        except ValueError:
            pass
    if headers.get("retry-after"):
        value = headers["retry-after"]
        try:
            return min(RETRY_AFTER_CAP_S, max(0.0, float(value)))
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(value)
                return min(RETRY_AFTER_CAP_S, max(0.0, parsed.timestamp() - time.time()))
            except (TypeError, ValueError):
                pass
    base, cap = float(endpoint.get("backoff_base_s", 1.0)), float(endpoint.get("backoff_max_s", 60.0))
    return min(cap, base * 2**attempt) * random.Random(seed).uniform(0.5, 1.0)


class Connection:
    """The endpoint config, its model and client. A refused API key stops every request of the run
    and is kept in `fatal`, for the caller to raise once the workers are done."""

    def __init__(self, config: dict):
        from openai import OpenAI

        self.config = config
        self.model = config.get("model", "gpt-4")
        self.api_key = get_api_key()
        self.client = OpenAI(
            api_key=self.api_key,
            base_url=config.get("base_url") or None,
            max_retries=0,  # ours honour the budget and the cache
            timeout=float(config.get("timeout_s", 60)),
        )
        self.stop = threading.Event()
        self.fatal: ApiError | None = None

    def close(self) -> None:
        self.client.close()

    def retrying(self, seed_key: str, request: Callable[[], Any]) -> Any:
        """`request()` with retries on 429/5xx/timeouts/connection errors; RequestFailed when it cannot succeed."""
        import openai

        retries = int(self.config.get("max_retries", 6))
        for attempt in range(retries + 1):
            if self.stop.is_set():
                raise RequestFailed("run stopped")
            try:
                return request()
            except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                self.fatal = ApiError(f"{self.model}: the endpoint refused the API key: {redact(str(e), self.api_key)}")
                self.stop.set()
                raise RequestFailed("endpoint refused the API key") from None
            except (
                openai.APITimeoutError,
                openai.APIConnectionError,
                openai.RateLimitError,
                openai.InternalServerError,
            ) as e:
                error = e
            except openai.APIStatusError as e:
                if e.status_code not in (408, 409) and e.status_code < 500:
                    raise RequestFailed(
                        f"HTTP {e.status_code}: {redact(str(e), self.api_key)}", e.status_code
                    ) from None
                error = e
            status = getattr(error, "status_code", None)
            described = f"HTTP {status}" if status else type(error).__name__
            if attempt == retries:
                raise RequestFailed(f"{described} after {retries + 1} attempts: {redact(str(error), self.api_key)}")
            delay = retry_delay(error, attempt, self.config, stable_seed(seed_key, attempt))
            log.debug("%s; retrying in %.2fs", described, delay)
            if self.stop.wait(delay):
                raise RequestFailed("run stopped")
        raise AssertionError("unreachable")
