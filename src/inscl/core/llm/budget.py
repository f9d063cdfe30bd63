"""Estimated cost of requests (token counts times the endpoint's prices) and the caps on one run."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

BATCH_DISCOUNT = 0.5


def estimate_cost(prompt_tokens: int, completion_tokens: int, endpoint: dict, batch: bool = False) -> float:
    cost = prompt_tokens / 1000 * endpoint.get("price_input_per_1k", 0.0) + completion_tokens / 1000 * endpoint.get(
        "price_output_per_1k", 0.0
    )
    return cost * (BATCH_DISCOUNT if batch else 1.0)


def expected_cost(messages: list[dict], endpoint: dict, batch: bool) -> float:
    """A request's cost before it is sent: about 4 characters a prompt token, and a full answer."""
    prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) // 4
    return estimate_cost(prompt_tokens, int(endpoint.get("max_tokens", 512)), endpoint, batch)


class Budget:
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
            over_usd = self.max_usd is not None and (
                self.spent >= self.max_usd or (self.made and projected > self.max_usd)
            )
            if over_requests or over_usd:
                self.exhausted = True
                log.warning(
                    "budget reached (max_requests=%s, max_usd=%s; %d requests, $%.4f spent this run): "
                    "stopping; every paid answer is kept in the cache; raise the budget and rerun to continue",
                    self.max_requests,
                    self.max_usd,
                    self.made,
                    self.spent,
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
