"""Chat requests to any OpenAI-compatible endpoint, through the official `openai` client.

`run_chat_requests` sends many independent requests with bounded concurrency, retries 429/5xx/
timeouts with exponential backoff and jitter (honouring Retry-After), validates each answer
(one repair request when it is invalid), and stores every paid answer in a persistent cache
under `<cache_dir>/api/` keyed by (endpoint model, prompt version, hash of the request key),
one JSON file per key, written atomically as soon as the answer arrives. A rerun therefore
pays only for what is missing. Budgets (max_requests, max_usd) stop dispatching cleanly.
An optional Batch API mode uploads a JSONL of requests, polls the batch and feeds the same cache.
The API key is read from OPENAI_API_KEY only and is never logged, stored or put in an error.
"""
from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from .config import ConfigError
from .io import atomic_path, content_hash, stable_seed

log = logging.getLogger(__name__)

API_KEY_ENV = "OPENAI_API_KEY"
MAX_REPAIRS = 1
BATCH_DISCOUNT = 0.5
BATCH_TERMINAL = {"completed", "failed", "expired", "cancelled"}
RETRY_AFTER_CAP_S = 600.0  # a longer Retry-After (e.g. a daily quota) fails the request; a rerun resumes

Messages = list[dict]


class ApiError(RuntimeError):
    """A failure that stops the whole run (bad key, batch timeout). The text never holds the key."""


class InvalidAnswer(ValueError):
    """Raised by a validator when the model's answer is unusable."""


@dataclass
class ChatResult:
    """Outcome of one request key. Tokens and cost cover every paid answer recorded for it."""

    key: str
    status: str  # ok | failed | skipped_budget
    parsed: Any = None
    content: str | None = None
    error: str | None = None
    raw: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    requests: int = 0  # paid requests made for this key in this run
    run_cost_usd: float = 0.0  # estimated cost of those requests
    cached: bool = False  # answered from the cache without a new request
    model: str = ""


@dataclass
class _Attempt:
    content: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    batch: bool = False
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


def get_api_key() -> str:
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise ConfigError(f"{API_KEY_ENV} is not set: the OpenAI-compatible backend reads its API key from this environment variable only")
    return key


def redact(text: str, secret: str | None) -> str:
    """`text` with the secret and anything shaped like an OpenAI key removed."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return re.sub(r"sk-[A-Za-z0-9_\-*.]{4,}", "sk-[redacted]", text)


def make_client(endpoint: dict, api_key: str | None = None):
    """The official client, with its own retries off (ours honour the budget and the cache)."""
    from openai import OpenAI

    return OpenAI(
        api_key=api_key or get_api_key(),
        base_url=endpoint.get("base_url") or None,
        max_retries=0,
        timeout=float(endpoint.get("timeout_s", 60)),
    )


def estimate_cost(prompt_tokens: int, completion_tokens: int, endpoint: dict, batch: bool = False) -> float:
    cost = prompt_tokens / 1000 * endpoint.get("price_input_per_1k", 0.0) + completion_tokens / 1000 * endpoint.get(
        "price_output_per_1k", 0.0
    )
    return cost * (BATCH_DISCOUNT if batch else 1.0)


def _slug(text: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', text)[:48]}-{content_hash(text, 8)}"


def response_cache_path(cache_dir, model: str, prompt_version: str, key: str) -> Path:
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return Path(cache_dir) / "api" / _slug(model) / _slug(prompt_version) / digest[:2] / f"{digest}.json"


def default_repair(messages: Messages, bad_answer: str | None, problem: str) -> Messages:
    """Ask once more, showing the model its unusable answer and what was wrong with it."""
    return [
        *messages,
        {"role": "assistant", "content": bad_answer or ""},
        {
            "role": "user",
            "content": f"Your answer could not be used ({problem}). Answer again with only the requested JSON, complete and valid, and nothing else.",
        },
    ]


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


class _Budget:
    """Thread-safe request and cost caps for one run."""

    def __init__(self, max_requests: int | None, max_usd: float | None):
        self.max_requests, self.max_usd = max_requests, max_usd
        self.made, self.in_flight, self.spent = 0, 0, 0.0
        self.exhausted = False
        self._lock = threading.Lock()

    def reserve(self, expected_cost: float = 0.0) -> bool:
        with self._lock:
            if self.exhausted:
                return False
            mean_cost = self.spent / self.made if self.made else 0.0
            over_requests = self.max_requests is not None and self.made + self.in_flight >= self.max_requests
            projected = self.spent + self.in_flight * mean_cost + max(expected_cost, mean_cost)
            over_usd = self.max_usd is not None and (self.spent >= self.max_usd or (self.made and projected > self.max_usd))
            if over_requests or over_usd:
                self.exhausted = True
                log.warning(
                    "budget reached (max_requests=%s, max_usd=%s; %d requests, $%.4f spent this run): "
                    "stopping; every paid answer is kept in the cache; raise the budget and rerun to continue",
                    self.max_requests, self.max_usd, self.made, self.spent,
                )
                return False
            self.in_flight += 1
            return True

    def commit(self, cost: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self.made += 1
            self.spent += cost

    def release(self) -> None:
        with self._lock:
            self.in_flight -= 1


class _Transient(Exception):
    """A request that failed after every retry, or was refused for good; nothing was paid."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ChatSession:
    """Shared state of one `run_chat_requests` call."""

    def __init__(self, endpoint: dict, cache_dir, prompt_version: str, validate, repair):
        self.endpoint = endpoint
        self.model = endpoint.get("model", "gpt-4")
        self.cache_dir, self.prompt_version = cache_dir, prompt_version
        self.validate = validate or (lambda content: content)
        self.repair = repair or default_repair
        self.budget = _Budget(endpoint.get("max_requests"), endpoint.get("max_usd"))
        self.stop = threading.Event()
        self.fatal: ApiError | None = None
        self.api_key: str | None = None
        self.client = None

    # cache -----------------------------------------------------------------------------
    def cache_path(self, key: str) -> Path:
        return response_cache_path(self.cache_dir, self.model, self.prompt_version, key)

    def load_attempts(self, key: str) -> list[_Attempt]:
        path = self.cache_path(key)
        if not path.exists():
            return []
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            names = _Attempt.__dataclass_fields__
            return [_Attempt(**{k: v for k, v in attempt.items() if k in names}) for attempt in record["attempts"]]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable cache file %s", path)
            return []

    def store_attempts(self, key: str, attempts: list[_Attempt]) -> None:
        record = {
            "model": self.model,
            "prompt_version": self.prompt_version,
            "key": key,
            "attempts": [attempt.__dict__ for attempt in attempts],
        }
        with atomic_path(self.cache_path(key), ".json") as tmp:
            tmp.write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")

    # evaluation --------------------------------------------------------------------------
    def evaluate(self, key: str, attempts: list[_Attempt]) -> tuple[ChatResult | None, str | None]:
        """A final result from the recorded attempts, or (None, problem) when another request is due."""
        result = ChatResult(key=key, status="failed", model=self.model)
        result.prompt_tokens = sum(a.prompt_tokens for a in attempts)
        result.completion_tokens = sum(a.completion_tokens for a in attempts)
        result.cost_usd = sum(a.cost_usd for a in attempts)
        problem = None
        for attempt in attempts:
            try:
                if attempt.content is None:
                    raise InvalidAnswer("empty answer")
                result.parsed = self.validate(attempt.content)
            except (InvalidAnswer, ValueError) as e:
                truncated = " (truncated: finish_reason=length)" if attempt.finish_reason == "length" else ""
                problem = f"{str(e) or type(e).__name__}{truncated}"
                continue
            result.status, result.content, result.error = "ok", attempt.content, None
            return result, None
        if len(attempts) > MAX_REPAIRS:
            result.error = f"invalid answer after {MAX_REPAIRS} repair request(s): {problem}"
            result.raw = "\n-----\n".join(a.content or "" for a in attempts)
            return result, None
        return None, problem

    def next_messages(self, messages: Messages, attempts: list[_Attempt], problem: str | None) -> Messages:
        return messages if not attempts else self.repair(messages, attempts[-1].content, problem or "invalid answer")

    def attempt_from_completion(self, completion: dict, batch: bool) -> _Attempt:
        choices = completion.get("choices") or [{}]
        usage = completion.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        return _Attempt(
            content=(choices[0].get("message") or {}).get("content"),
            finish_reason=choices[0].get("finish_reason"),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=estimate_cost(prompt_tokens, completion_tokens, self.endpoint, batch),
        )

    def expected_cost(self, messages: Messages, batch: bool) -> float:
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) // 4
        return estimate_cost(prompt_tokens, int(self.endpoint.get("max_tokens", 512)), self.endpoint, batch)

    # synchronous requests -------------------------------------------------------------------
    def retrying(self, seed_key: str, request: Callable[[], Any]) -> Any:
        """`request()` with retries on 429/5xx/timeouts/connection errors; _Transient when it cannot succeed."""
        import openai

        retries = int(self.endpoint.get("max_retries", 6))
        for attempt in range(retries + 1):
            if self.stop.is_set():
                raise _Transient("run stopped")
            try:
                return request()
            except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                self.fatal = ApiError(f"{self.model}: the endpoint refused the API key: {redact(str(e), self.api_key)}")
                self.stop.set()
                raise _Transient("endpoint refused the API key") from None
            except (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as e:
                error = e
            except openai.APIStatusError as e:
                if e.status_code not in (408, 409) and e.status_code < 500:
                    raise _Transient(f"HTTP {e.status_code}: {redact(str(e), self.api_key)}", e.status_code) from None
                error = e
            status = getattr(error, "status_code", None)
            described = f"HTTP {status}" if status else type(error).__name__
            if attempt == retries:
                raise _Transient(f"{described} after {retries + 1} attempts: {redact(str(error), self.api_key)}")
            delay = retry_delay(error, attempt, self.endpoint, stable_seed(seed_key, attempt))
            log.debug("%s; retrying in %.2fs", described, delay)
            if self.stop.wait(delay):
                raise _Transient("run stopped")
        raise AssertionError("unreachable")

    def call(self, key: str, messages: Messages) -> _Attempt:
        completion = self.retrying(
            key,
            lambda: self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=self.endpoint.get("temperature", 0),
                max_tokens=self.endpoint.get("max_tokens", 512),
            ),
        )
        return self.attempt_from_completion(completion.model_dump(), batch=False)

    def control(self, what: str, request: Callable[[], Any], missing_ok: bool = False) -> Any:
        """A Batch API call (upload, create, poll, download) with the same retries; ApiError if it fails.
        With `missing_ok`, None when the object does not exist (HTTP 404)."""
        try:
            return self.retrying(what, request)
        except _Transient as e:
            if missing_ok and e.status == 404:
                return None
            raise self.fatal or ApiError(f"{what} failed: {e}; rerun to resume") from None

    def process(self, key: str, messages: Messages) -> ChatResult:
        attempts = self.load_attempts(key)
        made = 0
        while True:
            result, problem = self.evaluate(key, attempts)
            if result is not None:
                return _mark_run(result, attempts, made)
            request = self.next_messages(messages, attempts, problem)
            if not self.budget.reserve(self.expected_cost(request, batch=False)):
                return self._unfinished(key, attempts, made, "skipped_budget", "budget reached before this request")
            try:
                attempt = self.call(key, request)
            except _Transient as e:
                self.budget.release()
                return self._unfinished(key, attempts, made, "failed", str(e))
            self.budget.commit(attempt.cost_usd)
            attempts.append(attempt)
            made += 1
            self.store_attempts(key, attempts)

    def _unfinished(self, key, attempts, made, status, error) -> ChatResult:
        result = ChatResult(key=key, status=status, error=error, model=self.model)
        result.prompt_tokens = sum(a.prompt_tokens for a in attempts)
        result.completion_tokens = sum(a.completion_tokens for a in attempts)
        result.cost_usd = sum(a.cost_usd for a in attempts)
        result.raw = "\n-----\n".join(a.content or "" for a in attempts) or None
        return _mark_run(result, attempts, made)

    def run_sync(self, pending: dict[str, Messages], results: dict[str, ChatResult], desc: str) -> None:
        workers = max(1, int(self.endpoint.get("max_concurrency", 8)))
        with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=len(pending), desc=desc, unit="req") as bar:
            futures = {pool.submit(self.process, key, messages): key for key, messages in pending.items()}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)

    # Batch API -------------------------------------------------------------------------------
    def batch_state_path(self, jsonl: bytes) -> Path:
        digest = hashlib.sha256(jsonl).hexdigest()
        return Path(self.cache_dir) / "api" / _slug(self.model) / _slug(self.prompt_version) / "batches" / f"{digest}.json"

    def run_batch(self, pending: dict[str, Messages], results: dict[str, ChatResult], desc: str) -> None:
        made = dict.fromkeys(pending, 0)
        for _ in range(MAX_REPAIRS + 1):
            round_requests = {}
            for key, messages in pending.items():
                if key in results:
                    continue
                attempts = self.load_attempts(key)
                result, problem = self.evaluate(key, attempts)
                if result is not None:
                    results[key] = _mark_run(result, attempts, made[key])
                    continue
                request = self.next_messages(messages, attempts, problem)
                if not self.budget.reserve(self.expected_cost(request, batch=True)):
                    results[key] = self._unfinished(key, attempts, made[key], "skipped_budget", "budget reached before this request")
                    continue
                round_requests[key] = request
            if not round_requests:
                break
            outcomes, state_path = self.submit_batch(round_requests, desc)
            for key, outcome in outcomes.items():
                if isinstance(outcome, _Attempt):
                    self.budget.commit(outcome.cost_usd)
                    attempts = self.load_attempts(key) + [outcome]
                    self.store_attempts(key, attempts)
                    made[key] += 1
                else:
                    self.budget.release()
                    attempts = self.load_attempts(key)
                    results[key] = self._unfinished(key, attempts, made[key], "failed", outcome)
            state_path.unlink(missing_ok=True)
        for key in pending:
            if key not in results:
                attempts = self.load_attempts(key)
                result, _ = self.evaluate(key, attempts)
                results[key] = _mark_run(result, attempts, made[key])

    def submit_batch(self, requests: dict[str, Messages], desc: str) -> tuple[dict[str, _Attempt | str], Path]:
        """Run one batch (or resume the identical one a killed run left); return per key a paid attempt
        or an error text, and the batch's state file, to delete once the answers are stored."""
        ids = {hashlib.sha256(key.encode("utf-8")).hexdigest(): key for key in requests}
        lines = [
            json.dumps(
                {
                    "custom_id": custom_id,
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": self.model,
                        "messages": requests[key],
                        "temperature": self.endpoint.get("temperature", 0),
                        "max_tokens": self.endpoint.get("max_tokens", 512),
                    },
                },
                ensure_ascii=False,
                sort_keys=True,
            )
            for custom_id, key in sorted(ids.items())
        ]
        jsonl = ("\n".join(lines) + "\n").encode("utf-8")
        state_path = self.batch_state_path(jsonl)
        batch = None
        if state_path.exists():
            batch_id = json.loads(state_path.read_text())["batch_id"]
            batch = self.control("batch status", lambda: self.client.batches.retrieve(batch_id), missing_ok=True)
            if batch is None or batch.status in BATCH_TERMINAL - {"completed"}:
                batch = None
            else:
                log.info("resuming batch %s (%s)", batch_id, batch.status)
        if batch is None:
            upload = self.control(
                "batch upload",
                lambda: self.client.files.create(file=("requests.jsonl", jsonl, "application/jsonl"), purpose="batch"),
            )
            batch = self.control(
                "batch creation",
                lambda: self.client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"),
            )
            with atomic_path(state_path, ".json") as tmp:
                tmp.write_text(json.dumps({"batch_id": batch.id, "input_file_id": upload.id, "requests": len(lines)}))
            log.info("created batch %s with %d requests", batch.id, len(lines))
        batch = self.wait_for_batch(batch, len(lines), desc)
        outcomes: dict[str, _Attempt | str] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = self.control("batch download", lambda: self.client.files.content(file_id).content)
            for line in content.decode("utf-8").splitlines():
                if not line.strip():
                    continue
                entry = json.loads(line)
                key = ids.get(entry.get("custom_id"))
                if key is None:
                    continue
                response = entry.get("response") or {}
                if response.get("status_code") == 200 and response.get("body"):
                    outcomes[key] = self.attempt_from_completion(response["body"], batch=True)
                else:
                    detail = entry.get("error") or (response.get("body") or {}).get("error") or response
                    outcomes[key] = f"batch request failed: {redact(json.dumps(detail)[:500], self.api_key)}"
        for key in requests:
            outcomes.setdefault(key, f"batch {batch.id} ended '{batch.status}' without an answer for this request")
        return outcomes, state_path

    def wait_for_batch(self, batch, total: int, desc: str):
        poll_s = float(self.endpoint.get("batch_poll_s", 30))
        deadline = time.monotonic() + float(self.endpoint.get("batch_timeout_s", 86400))
        with tqdm(total=total, desc=f"{desc} (batch)", unit="req") as bar:
            while batch.status not in BATCH_TERMINAL:
                if time.monotonic() > deadline:
                    raise ApiError(
                        f"batch {batch.id} still '{batch.status}' after batch_timeout_s; rerun to resume waiting for it"
                    )
                time.sleep(poll_s)
                batch = self.control("batch status", lambda: self.client.batches.retrieve(batch.id))
                counts = batch.request_counts
                if counts is not None:
                    bar.update(max(0, counts.completed + counts.failed - bar.n))
            bar.update(total - bar.n)
        if batch.status != "completed":
            log.warning("batch %s ended '%s'", batch.id, batch.status)
        return batch


def _mark_run(result: ChatResult, attempts: list[_Attempt], made: int) -> ChatResult:
    result.requests, result.cached = made, made == 0
    result.run_cost_usd = sum(a.cost_usd for a in attempts[len(attempts) - made :])
    return result


def run_chat_requests(
    requests: Sequence[tuple[str, Messages]],
    endpoint: dict,
    cache_dir,
    prompt_version: str,
    validate: Callable[[str], Any] | None = None,
    repair: Callable[[Messages, str | None, str], Messages] | None = default_repair,
    desc: str = "chat requests",
) -> list[ChatResult]:
    """Answer every (key, messages) request, one ChatResult per request in input order.

    `key` identifies the request's content for the cache (e.g. the instruction text); equal keys
    are sent once. `validate(content)` returns the parsed answer or raises ValueError/InvalidAnswer,
    which triggers one repair request built by `repair(messages, bad_answer, problem)`.
    """
    session = ChatSession(endpoint, cache_dir, prompt_version, validate, repair)
    unique: dict[str, Messages] = {}
    for key, messages in requests:
        unique.setdefault(key, messages)
    results: dict[str, ChatResult] = {}
    pending: dict[str, Messages] = {}
    for key, messages in unique.items():
        attempts = session.load_attempts(key)
        result, _ = session.evaluate(key, attempts)
        if result is not None:
            result.cached = True
            results[key] = result
        else:
            pending[key] = messages
    log.info("%s: %d distinct requests, %d answered from the cache, %d to send", desc, len(unique), len(results), len(pending))
    if pending:
        session.api_key = get_api_key()
        session.client = make_client(endpoint, session.api_key)
        logging.getLogger("httpx2").setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        try:
            if endpoint.get("batch"):
                session.run_batch(pending, results, desc)
            else:
                session.run_sync(pending, results, desc)
        finally:
            session.client.close()
        if session.fatal is not None:
            raise session.fatal
    ordered = [results[key] for key, _ in requests]
    log.info("%s: %s", desc, json.dumps(summarize(ordered)))
    return ordered


def summarize(results: Sequence[ChatResult]) -> dict:
    """Counts, tokens and estimated cost: `cost_usd_run` paid now, `cost_usd_recorded` including cached answers."""
    return {
        "requests": len(results),
        "ok": sum(r.status == "ok" for r in results),
        "failed": sum(r.status == "failed" for r in results),
        "skipped_budget": sum(r.status == "skipped_budget" for r in results),
        "from_cache": sum(r.cached for r in results),
        "paid_requests_run": sum(r.requests for r in results),
        "prompt_tokens": sum(r.prompt_tokens for r in results),
        "completion_tokens": sum(r.completion_tokens for r in results),
        "cost_usd_run": round(sum(r.run_cost_usd for r in results), 6),
        "cost_usd_recorded": round(sum(r.cost_usd for r in results), 6),
    }
