"""`run_chat_requests`: answer what the cache already settles, send the rest through the
synchronous or the Batch API runner, and return one result per request in input order."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from inscl.core.llm.answers import AnswerCheck, Messages, Repair, Validate, default_repair
from inscl.core.llm.batch_runner import BatchRunner
from inscl.core.llm.budget import Budget
from inscl.core.llm.cache import ResponseCache
from inscl.core.llm.connection import Connection
from inscl.core.llm.results import ChatResult, summarize
from inscl.core.llm.sync_runner import SyncRunner

log = logging.getLogger(__name__)


def run_chat_requests(
    requests: Sequence[tuple[str, Messages]],
    endpoint: dict,
    cache_dir,
    prompt_version: str,
    validate: Validate | None = None,
    repair: Repair | None = default_repair,
    desc: str = "chat requests",
) -> list[ChatResult]:
    """Answer every (key, messages) request, one ChatResult per request in input order.

    `key` identifies the request's content for the cache (e.g. the instruction text); equal keys
    are sent once. `validate(content)` returns the parsed answer or raises ValueError/InvalidAnswer,
    which triggers one repair request built by `repair(messages, bad_answer, problem)`.
    """
    model = endpoint.get("model", "gpt-4")
    cache = ResponseCache(cache_dir, model, prompt_version)
    cache.remove_stale_temp_files()
    answers = AnswerCheck(model, validate, repair)
    unique: dict[str, Messages] = {}
    for key, messages in requests:
        unique.setdefault(key, messages)
    results: dict[str, ChatResult] = {}
    pending: dict[str, Messages] = {}
    for key, messages in unique.items():
        attempts = cache.load(key)
        result, _ = answers.verdict(key, attempts)
        if result is not None:
            result.cached = True
            results[key] = result
        else:
            pending[key] = messages
    log.info(
        "%s: %d distinct requests, %d answered from the cache, %d to send",
        desc,
        len(unique),
        len(results),
        len(pending),
    )
    if pending:
        connection = Connection(endpoint)
        logging.getLogger("httpx2").setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        budget = Budget(endpoint.get("max_requests"), endpoint.get("max_usd"))
        runner = BatchRunner if endpoint.get("batch") else SyncRunner
        try:
            runner(connection, cache, answers, budget).run(pending, results, desc)
        finally:
            connection.close()
        if connection.fatal is not None:
            raise connection.fatal
    ordered = [results[key] for key, _ in requests]
    log.info("%s: %s", desc, json.dumps(summarize(ordered)))
    return ordered
