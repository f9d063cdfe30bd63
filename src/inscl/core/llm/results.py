"""What a run returns, built from the paid answers (attempts) the cache records for each request key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from inscl.core.llm.budget import estimate_cost


@dataclass
class Attempt:
    """One paid answer, as the cache records it."""

    content: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    batch: bool = False
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @classmethod
    def from_completion(cls, completion: dict, endpoint: dict, batch: bool) -> Attempt:
        choices = completion.get("choices") or [{}]
        usage = completion.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        return cls(
            content=(choices[0].get("message") or {}).get("content"),
            finish_reason=choices[0].get("finish_reason"),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=estimate_cost(prompt_tokens, completion_tokens, endpoint, batch),
        )


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

    @classmethod
    def recorded(
        cls, key: str, model: str, attempts: list[Attempt], status: str, error: str | None = None
    ) -> ChatResult:
        """A result with the tokens and cost of every recorded attempt."""
        return cls(
            key=key,
            status=status,
            error=error,
            model=model,
            prompt_tokens=sum(a.prompt_tokens for a in attempts),
            completion_tokens=sum(a.completion_tokens for a in attempts),
            cost_usd=sum(a.cost_usd for a in attempts),
        )

    @classmethod
    def unfinished(
        cls, key: str, model: str, attempts: list[Attempt], made: int, status: str, error: str
    ) -> ChatResult:
        """A request the run gave up on (failed, or stopped by the budget), with what it had paid for."""
        result = cls.recorded(key, model, attempts, status, error)
        result.raw = "\n-----\n".join(a.content or "" for a in attempts) or None
        return result.count_run(attempts, made)

    def count_run(self, attempts: list[Attempt], made: int) -> ChatResult:
        """Mark the last `made` attempts as paid in this run."""
        self.requests, self.cached = made, made == 0
        self.run_cost_usd = sum(a.cost_usd for a in attempts[len(attempts) - made :])
        return self


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
