"""The Batch API runner: uploads the requests as JSONL, creates a batch, polls it and feeds the
answers to the same cache; an unusable answer is repaired in a second batch. A batch that a killed
run left is found again by its state file and resumed rather than paid twice."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from inscl.core.io import atomic_path
from inscl.core.llm.answers import MAX_REPAIRS, AnswerCheck, Messages
from inscl.core.llm.api_key import redact
from inscl.core.llm.budget import Budget, expected_cost
from inscl.core.llm.cache import ResponseCache
from inscl.core.llm.connection import ApiError, Connection, RequestFailed
from inscl.core.llm.results import Attempt, ChatResult

log = logging.getLogger(__name__)

BATCH_TERMINAL = {"completed", "failed", "expired", "cancelled"}


class BatchRunner:
    def __init__(self, connection: Connection, cache: ResponseCache, answers: AnswerCheck, budget: Budget):
        self.connection, self.cache, self.answers, self.budget = connection, cache, answers, budget

    def run(self, pending: dict[str, Messages], results: dict[str, ChatResult], desc: str) -> None:
        model = self.connection.model
        made = dict.fromkeys(pending, 0)
        for _ in range(MAX_REPAIRS + 1):
            round_requests = {}
            for key, messages in pending.items():
                if key in results:
                    continue
                attempts = self.cache.load(key)
                result, problem = self.answers.verdict(key, attempts)
                if result is not None:
                    results[key] = result.count_run(attempts, made[key])
                    continue
                request = self.answers.next_request(messages, attempts, problem)
                if not self.budget.reserve(expected_cost(request, self.connection.config, batch=True)):
                    results[key] = ChatResult.unfinished(
                        key, model, attempts, made[key], "skipped_budget", "budget reached before this request"
                    )
                    continue
                round_requests[key] = request
            if not round_requests:
                break
            outcomes, state_path = self.submit(round_requests, desc)
            for key, outcome in outcomes.items():
                if isinstance(outcome, Attempt):
                    self.budget.commit(outcome.cost_usd)
                    attempts = self.cache.load(key) + [outcome]
                    self.cache.store(key, attempts)
                    made[key] += 1
                else:
                    self.budget.release()
                    attempts = self.cache.load(key)
                    results[key] = ChatResult.unfinished(key, model, attempts, made[key], "failed", outcome)
            state_path.unlink(missing_ok=True)
        for key in pending:
            if key not in results:
                attempts = self.cache.load(key)
                result, _ = self.answers.verdict(key, attempts)
                results[key] = result.count_run(attempts, made[key])

    def state_path(self, jsonl: bytes) -> Path:
        """Where the batch for exactly these requests is remembered until its answers are stored."""
        return self.cache.folder / "batches" / f"{hashlib.sha256(jsonl).hexdigest()}.json"

    def control(self, what: str, request: Callable[[], Any], missing_ok: bool = False) -> Any:
        """A Batch API call (upload, create, poll, download) with the usual retries; ApiError if it fails.
        With `missing_ok`, None when the object does not exist (HTTP 404)."""
        try:
            return self.connection.retrying(what, request)
        except RequestFailed as e:
            if missing_ok and e.status == 404:
                return None
            raise self.connection.fatal or ApiError(f"{what} failed: {e}; rerun to resume") from None

    def submit(self, requests: dict[str, Messages], desc: str) -> tuple[dict[str, Attempt | str], Path]:
        """Run one batch (or resume the identical one a killed run left); return per key a paid attempt
        or an error text, and the batch's state file, to delete once the answers are stored."""
        config = self.connection.config
        ids = {hashlib.sha256(key.encode("utf-8")).hexdigest(): key for key in requests}
        lines = [
            json.dumps(
                {
                    "custom_id": custom_id,
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": self.connection.model,
                        "messages": requests[key],
                        "temperature": config.get("temperature", 0),
                        "max_tokens": config.get("max_tokens", 512),
                    },
                },
                ensure_ascii=False,
                sort_keys=True,
            )
            for custom_id, key in sorted(ids.items())
        ]
        jsonl = ("\n".join(lines) + "\n").encode("utf-8")
        state_path = self.state_path(jsonl)
        batch = None
        if state_path.exists():
            batch_id = json.loads(state_path.read_text())["batch_id"]
            batch = self.control(
                "batch status", lambda: self.connection.client.batches.retrieve(batch_id), missing_ok=True
            )
            if batch is None or batch.status in BATCH_TERMINAL - {"completed"}:
                batch = None
            else:
                log.info("resuming batch %s (%s)", batch_id, batch.status)
        if batch is None:
            upload = self.control(
                "batch upload",
                lambda: self.connection.client.files.create(
                    file=("requests.jsonl", jsonl, "application/jsonl"), purpose="batch"
                ),
            )
            batch = self.control(
                "batch creation",
                lambda: self.connection.client.batches.create(
                    input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
                ),
            )
            with atomic_path(state_path, ".json") as tmp:
                tmp.write_text(json.dumps({"batch_id": batch.id, "input_file_id": upload.id, "requests": len(lines)}))
            log.info("created batch %s with %d requests", batch.id, len(lines))
        batch = self.wait(batch, len(lines), desc)
        outcomes: dict[str, Attempt | str] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = self.control("batch download", lambda: self.connection.client.files.content(file_id).content)
            for line in content.decode("utf-8").splitlines():
                if not line.strip():
                    continue
                entry = json.loads(line)
                key = ids.get(entry.get("custom_id"))
                if key is None:
                    continue
                response = entry.get("response") or {}
                if response.get("status_code") == 200 and response.get("body"):
                    outcomes[key] = Attempt.from_completion(response["body"], config, batch=True)
                else:
                    detail = entry.get("error") or (response.get("body") or {}).get("error") or response
                    outcomes[key] = f"batch request failed: {redact(json.dumps(detail)[:500], self.connection.api_key)}"
        for key in requests:
            outcomes.setdefault(key, f"batch {batch.id} ended '{batch.status}' without an answer for this request")
        return outcomes, state_path

    def wait(self, batch, total: int, desc: str):
        """Poll the batch until it ends; ApiError after batch_timeout_s (a rerun resumes it)."""
        poll_s = float(self.connection.config.get("batch_poll_s", 30))
        deadline = time.monotonic() + float(self.connection.config.get("batch_timeout_s", 86400))
        with tqdm(total=total, desc=f"{desc} (batch)", unit="req") as bar:
            while batch.status not in BATCH_TERMINAL:
                if time.monotonic() > deadline:
                    raise ApiError(
                        f"batch {batch.id} still '{batch.status}' after batch_timeout_s; rerun to resume waiting for it"
                    )
                time.sleep(poll_s)
                batch = self.control("batch status", lambda: self.connection.client.batches.retrieve(batch.id))
                counts = batch.request_counts
                if counts is not None:
                    bar.update(max(0, counts.completed + counts.failed - bar.n))
            bar.update(total - bar.n)
        if batch.status != "completed":
            log.warning("batch %s ended '%s'", batch.id, batch.status)
        return batch
