"""The synchronous runner: one chat completion per request, with bounded concurrency, retries,
the budget, and one repair request after an unusable answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed

from tqdm import tqdm

from inscl.core.llm.answers import AnswerCheck, Messages
from inscl.core.llm.budget import Budget, expected_cost
from inscl.core.llm.cache import ResponseCache
from inscl.core.llm.connection import Connection, RequestFailed
from inscl.core.llm.results import Attempt, ChatResult


class SyncRunner:
    def __init__(self, connection: Connection, cache: ResponseCache, answers: AnswerCheck, budget: Budget):
        self.connection, self.cache, self.answers, self.budget = connection, cache, answers, budget

    def run(self, pending: dict[str, Messages], results: dict[str, ChatResult], desc: str) -> None:
        workers = max(1, int(self.connection.config.get("max_concurrency", 8)))
        with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=len(pending), desc=desc, unit="req") as bar:
            futures = {pool.submit(self.answer, key, messages): key for key, messages in pending.items()}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)

    def answer(self, key: str, messages: Messages) -> ChatResult:
        """Request (and repair) until the recorded answers settle `key`, storing each paid answer."""
        model = self.connection.model
        attempts = self.cache.load(key)
        made = 0
        while True:
            result, problem = self.answers.verdict(key, attempts)
            if result is not None:
                return result.count_run(attempts, made)
            request = self.answers.next_request(messages, attempts, problem)
            if not self.budget.reserve(expected_cost(request, self.connection.config, batch=False)):
                return ChatResult.unfinished(
                    key, model, attempts, made, "skipped_budget", "budget reached before this request"
                )
            try:
                attempt = self.complete(key, request)
            except RequestFailed as e:
                self.budget.release()
                return ChatResult.unfinished(key, model, attempts, made, "failed", str(e))
            self.budget.commit(attempt.cost_usd)
            attempts.append(attempt)
            made += 1
            self.cache.store(key, attempts)

    def complete(self, key: str, messages: Messages) -> Attempt:
        config = self.connection.config
        completion = self.connection.retrying(
            key,
            lambda: self.connection.client.chat.completions.create(
                model=self.connection.model,
                messages=messages,
                temperature=config.get("temperature", 0),
                max_tokens=config.get("max_tokens", 512),
            ),
        )
        return Attempt.from_completion(completion.model_dump(), config, batch=False)
