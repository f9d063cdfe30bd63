"""How long a task's answers and prompts may be at evaluation: max_new_tokens and stop strings per task,
and the prompt truncation that makes room for them.

- max_new_tokens of a task: `max_new_tokens_per_task[task]`, else `max_new_tokens` when it is a
  number (one length for every task, TRACE's 512), else (`auto`) from the task's reference answers:
  ceil(P x (1 + margin)) + extra_tokens, at most max_answer_tokens, with P the `percentile` of their
  lengths in tokens of the evaluated model's tokenizer (no special tokens). The references come from
  the task's train split, so the test answers do not shape their own budget; a task without training
  examples uses its test references (logged).
- Stop strings: `stop_per_task[task]`, else `stop`. The answer is the decoded text before the first
  stop string; EOS always ends an answer.
- Prompt truncation: a prompt keeps at most min(max_prompt_tokens, context - max_new_tokens) tokens,
  losing tokens from the left after its BOS token (the instruction's start goes first, the input's
  end and the response marker stay). TRACE also cuts from the left (tokenizer truncation_side left,
  infer_single.py) but drops the BOS of a cut prompt; we keep it.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def auto_length(lengths, percentile: float, margin: float, extra_tokens: int, max_answer_tokens: int) -> int:
    """ceil(percentile of `lengths` x (1 + margin)) + extra_tokens, between 1 and max_answer_tokens."""
    high = float(np.percentile(np.asarray(lengths, dtype=float), percentile, method="higher")) if len(lengths) else 0
    return max(1, min(max_answer_tokens, math.ceil(high * (1 + margin)) + extra_tokens))


def reference_lengths(instances: pd.DataFrame, task: str, tokenizer) -> list[int]:
    """Token lengths of every reference answer of the task's train split (its test split without one)."""
    rows = instances[instances["task"] == task]
    split = "train" if (rows["split"] == "train").any() else "test"
    if split == "test":
        log.info("%s: no training examples, answer lengths from its test references", task)
    answers = [str(ref) for refs in rows.loc[rows["split"] == split, "output"] for ref in refs]
    if not answers:
        return []
    return [len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]]


def max_new_tokens_per_task(instances: pd.DataFrame, tasks: list[str], tokenizer, evaluation: dict) -> dict[str, int]:
    """{task: max_new_tokens} for `tasks` (see the module docstring)."""
    overrides = evaluation.get("max_new_tokens_per_task") or {}
    fixed = evaluation.get("max_new_tokens", "auto")
    auto = evaluation.get("auto_length") or {}
    lengths = {}
    for task in tasks:
        if task in overrides:
            lengths[task] = int(overrides[task])
        elif fixed != "auto":
            lengths[task] = int(fixed)
        else:
            lengths[task] = auto_length(
                reference_lengths(instances, task, tokenizer),
                auto.get("percentile", 99),
                auto.get("margin", 0.25),
                auto.get("extra_tokens", 4),
                auto.get("max_answer_tokens", 512),
            )
    return lengths


def stop_strings(task: str, evaluation: dict) -> tuple[str, ...]:
    per_task = evaluation.get("stop_per_task") or {}
    return tuple(per_task.get(task, evaluation.get("stop") or ()))


def prompt_room(context: int | None, max_new_tokens: int, max_prompt_tokens: int | None) -> int | None:
    """The most prompt tokens that fit beside `max_new_tokens` (None: no limit)."""
    room = None if context is None else context - max_new_tokens
    if room is not None and room < 2:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context of {context} tokens"
        )
    if max_prompt_tokens is not None:
        room = max_prompt_tokens if room is None else min(room, max_prompt_tokens)
    return room


def fit_to_context(ids: list[int], limit: int | None, bos_id: int | None) -> list[int]:
    """Drop tokens from the left (after a leading BOS) so that len(ids) <= limit."""
    if limit is None or len(ids) <= limit:
        return ids
    if bos_id is not None and ids and ids[0] == bos_id:
        return [bos_id] + ids[len(ids) - limit + 1 :]
    return ids[len(ids) - limit :]


def cut_at_stop(text: str, stops) -> tuple[str, bool]:
    """The text before the first stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text, False) if cut < 0 else (text[:cut], True)
