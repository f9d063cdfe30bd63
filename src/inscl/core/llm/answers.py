"""Whether the recorded answers settle a request (the caller's validator), and the one repair
request that follows an unusable answer. An answer cut at max_tokens (finish_reason "length") is
unusable whatever the validator says: a cut rationale or verdict can still parse."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inscl.core.llm.results import Attempt, ChatResult

MAX_REPAIRS = 1

Messages = list[dict]
Validate = Callable[[str], Any]
Repair = Callable[[Messages, str | None, str], Messages]


class InvalidAnswer(ValueError):
    """Raised by a validator when the model's answer is unusable."""


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


class AnswerCheck:
    """The caller's validator and repair, applied to what the cache records for a request."""

    def __init__(self, model: str, validate: Validate | None, repair: Repair | None):
        self.model = model
        self.validate = validate or (lambda content: content)
        self.repair = repair or default_repair

    def verdict(self, key: str, attempts: list[Attempt]) -> tuple[ChatResult | None, str | None]:
        """A final result from the recorded attempts, or (None, problem) when another request is due."""
        result = ChatResult.recorded(key, self.model, attempts, "failed")
        problem = None
        for attempt in attempts:
            try:
                if attempt.content is None:
                    raise InvalidAnswer("empty answer")
                if attempt.finish_reason == "length":
                    raise InvalidAnswer("truncated: finish_reason=length, the answer reached max_tokens")
                result.parsed = self.validate(attempt.content)
            except (InvalidAnswer, ValueError) as e:
                problem = str(e) or type(e).__name__
                continue
            result.status, result.content = "ok", attempt.content
            return result, None
        if len(attempts) > MAX_REPAIRS:
            result.error = f"invalid answer after {MAX_REPAIRS} repair request(s): {problem}"
            result.raw = "\n-----\n".join(a.content or "" for a in attempts)
            return result, None
        return None, problem

    def next_request(self, messages: Messages, attempts: list[Attempt], problem: str | None) -> Messages:
        """The request itself, or after an unusable answer, its repair."""
        return messages if not attempts else self.repair(messages, attempts[-1].content, problem or "invalid answer")
