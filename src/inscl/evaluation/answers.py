"""What counts as a model's answer before scoring, and what a task's answers look like.

- **RCL's answer line.** An `rcl` chain trains on targets "<rationale>\\nAnswer: <answer>"
  (`inscl.instructions.rationales`), so its generations carry reasoning before the answer. The rule,
  applied to every answer of an rcl run before scoring (`extract_answer`): the answer is the text after
  the last line that starts with the marker "Answer:" (to the end of the generation, so a multi-line
  answer stays whole), stripped of surrounding whitespace. A generation without such a line gives its
  last non-empty line (a model that skipped the marker is scored on what it ended with); an empty
  generation stays empty. Every other method's answer is the generation as it is (`as_is`).
- **Answer profile of a task** (`AnswerProfile.of`, from its training answers): its label set when it
  is a classification task (at most `max_labels` distinct answers, each given at least twice), whether
  every answer is a number, the shapes of its answers (letter runs -> ``a``, digit runs -> ``9``,
  whitespace runs -> one space, other characters kept) when they are a format: at most `MAX_SHAPES`
  of them, each given by two answers on average (a few free-text answers share no format by chance),
  and the range of answer lengths in words. ICL draws label-diverse demonstrations from it; the
  offline forgetting classifier checks a wrong answer against it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

ANSWER_MARKER = "Answer:"
ANSWER_RULES = ("as_is", "rationale")
MAX_SHAPES = 5

_MARKER_LINE = re.compile(rf"^[ \t]*{re.escape(ANSWER_MARKER)}[ \t]*", re.MULTILINE)
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_SHAPE = re.compile(r"(?P<a>[^\W\d_]+)|(?P<d>\d+)|(?P<s>\s+)")


def answer_rule(method) -> str:
    """The extraction rule of a method (an inscl.core.methods.Method, or None for base and references)."""
    return "rationale" if method is not None and method.rationales else "as_is"


def split_rationale(text: str) -> tuple[str, bool]:
    """(answer, whether an "Answer:" line was found) of a generation (module docstring)."""
    text = text or ""
    found = list(_MARKER_LINE.finditer(text))
    if found:
        return text[found[-1].end() :].strip(), True
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[-1].strip() if lines else ""), False


def extract_answer(text: str, rule: str = "as_is") -> str:
    """The answer that is scored: the generation itself, or under `rationale` its answer line."""
    if rule == "as_is":
        return text or ""
    if rule == "rationale":
        return split_rationale(text)[0]
    raise ValueError(f"unknown answer rule {rule!r}; expected one of {ANSWER_RULES}")


def rationale_target(rationale: str, answer: str) -> str:
    """The RCL training target: the rationale, then the answer on a line after the marker."""
    return f"{rationale.strip()}\n{ANSWER_MARKER} {answer}"


def is_number(text: str) -> bool:
    return _NUMBER.fullmatch(_THOUSANDS.sub("", text.strip())) is not None


def shape(text: str) -> str:
    """Letter runs -> a, digit runs -> 9, whitespace runs -> one space, other characters kept."""

    def one(match: re.Match) -> str:
        return "a" if match.group("a") else "9" if match.group("d") else " "

    return _SHAPE.sub(one, text.strip())


@dataclass(frozen=True)
class AnswerProfile:
    labels: tuple[str, ...] | None  # the label set of a classification task, most frequent first
    numeric: bool  # every answer is a number
    shapes: frozenset[str] | None  # the answers' shapes, None when there are more than MAX_SHAPES
    min_words: int
    max_words: int

    @classmethod
    def of(cls, answers, max_labels: int = 10) -> "AnswerProfile":
        answers = [str(a).strip() for a in answers if str(a).strip()]
        counts = Counter(answers)
        labels = None
        if answers and len(counts) <= max_labels and min(counts.values()) >= 2:
            labels = tuple(label for label, _ in counts.most_common())
        shapes = {shape(a) for a in answers}
        words = [len(a.split()) for a in answers] or [0]
        return cls(
            labels,
            bool(answers) and all(is_number(a) for a in answers),
            frozenset(shapes) if len(shapes) <= MAX_SHAPES and len(answers) >= 2 * len(shapes) else None,
            min(words),
            max(words),
        )

    def is_label(self, answer: str) -> bool:
        return self.labels is not None and answer.strip().casefold() in {label.casefold() for label in self.labels}


def with_extracted_answers(predictions, rule: str):
    """The predictions frame with each prediction replaced by its scored answer (`extract_answer`)."""
    if rule == "as_is":
        return predictions
    return predictions.assign(
        prediction=[extract_answer(p if isinstance(p, str) else "", rule) for p in predictions["prediction"]]
    )


def run_answer_rule(run) -> str:
    """The answer rule of a run (an inscl.core.runs.Run): its method's for a chain stage, as_is otherwise."""
    from inscl.core.methods import METHODS

    return answer_rule(METHODS.get(run.method)) if run.kind == "chain" else "as_is"
