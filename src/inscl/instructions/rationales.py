"""Rationales for RCL (TRACE's reasoning-augmented continual learning): each training example of the
experiment's tasks gets a reasoning path, and its training target becomes rationale + answer.

TRACE's repository has no RCL code (BeyonderXX/TRACE@462e39f; its README only shows a figure), so the
prompt, the target format and the answer extraction are ours, documented in docs/trace_baselines.md.

- **openai** backend: the versioned prompt `PROMPTS[rcl.prompt_version]` through `inscl.core.llm`
  (bounded concurrency, retries with backoff, one repair request after an unusable answer, the
  `max_requests` / `max_usd` budget, and the response cache keyed by (model, prompt version,
  instruction, input, answer): a rationale is paid for once, also across crashes and reruns). An answer
  is usable when it is not empty and has no line starting with the answer marker (the target adds the
  answer line itself); a code fence around it is removed.
- **offline** backend (`TEMPLATE_VERSION`): a template built from the example alone, with no
  reasoning in it: the instruction's first sentence, the input's first words, and the kind of answer
  (one of the task's labels, a number, or a text of n words). It runs RCL's data path without a key;
  the report says so.
- **target** (`inscl.evaluation.answers.rationale_target`): "<rationale>\\nAnswer: <answer>", the answer
  being the first reference, the one training uses.

`rcl_instances` is the instances artifact with the output of every training example replaced by its
target (eval and test rows unchanged): the training and evaluation of rcl chains read it, so their
automatic answer lengths (evaluation.max_new_tokens: auto) cover the rationale.
"""

from __future__ import annotations

import json
import logging
import re

import pandas as pd

from inscl.core import artifacts
from inscl.core.config import ConfigError
from inscl.core.io import InputError
from inscl.core.llm import InvalidAnswer, run_chat_requests, summarize
from inscl.evaluation.answers import ANSWER_MARKER, AnswerProfile, is_number, rationale_target

log = logging.getLogger(__name__)

SYSTEM_PROMPT = "You explain briefly and step by step how a task's input leads to its correct answer."
PROMPTS = {
    "rcl-v1": (
        "Below are a task instruction, its input and the correct answer. Write the reasoning that leads "
        "from the input to this answer, in at most four short sentences, as a careful student would think "
        "before answering. Do not repeat the instruction. Do not write a line that starts with "
        f'"{ANSWER_MARKER}": the answer is added after your reasoning.\n\n'
        "Instruction:\n{instruction}\n\nInput:\n{input}\n\nCorrect answer:\n{answer}"
    ),
}
TEMPLATE_VERSION = "template-v1"
INPUT_WORDS = 24

_FENCE = re.compile(r"^```[A-Za-z]*\n(.*?)\n?```$", re.S)
_MARKER_LINE = re.compile(rf"^[ \t]*{re.escape(ANSWER_MARKER)}", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.?!。？！])\s")


def training_rows(instances: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """The training examples of `tasks` with their answer (first reference)."""
    rows = instances[(instances["split"] == "train") & instances["task"].isin(tasks)].copy()
    rows["answer"] = [str(refs[0]) if len(refs) else "" for refs in rows["output"]]
    empty = rows["answer"].str.strip() == ""
    if empty.any():
        raise InputError("instances.parquet", "empty answer", record=rows["instance_id"][empty].iloc[0], field="output")
    return rows


# ---------------------------------------------------------------------------------------------
# openai backend


def build_messages(instruction: str, text: str, answer: str, prompt_version: str) -> list[dict]:
    if prompt_version not in PROMPTS:
        raise ConfigError(f"rcl.prompt_version: unknown prompt version {prompt_version!r}; known: {sorted(PROMPTS)}")
    user = PROMPTS[prompt_version].format(instruction=instruction, input=text or "(none)", answer=answer)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_rationale(text: str) -> str:
    """The rationale of a model answer; InvalidAnswer when it is empty or carries an answer line."""
    body = (text or "").strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    if not body:
        raise InvalidAnswer("empty rationale")
    if _MARKER_LINE.search(body):
        raise InvalidAnswer(f'a line starts with "{ANSWER_MARKER}"')
    return body


def repair_rationale(messages: list[dict], bad_answer: str | None, problem: str) -> list[dict]:
    return [
        *messages,
        {"role": "assistant", "content": bad_answer or ""},
        {
            "role": "user",
            "content": f"Your answer could not be used ({problem}). Reply again with only the reasoning, "
            f'without a line that starts with "{ANSWER_MARKER}".',
        },
    ]


def rationales_openai(rows: pd.DataFrame, rcl: dict, cache_dir) -> list[dict]:
    endpoint, version = rcl["openai"], rcl["prompt_version"]
    requests = [
        (json.dumps([i, x, a], ensure_ascii=False), build_messages(i, x, a, version))
        for i, x, a in zip(rows["instruction"], rows["input"], rows["answer"])
    ]
    results = run_chat_requests(
        requests, endpoint, cache_dir, version, validate=parse_rationale, repair=repair_rationale, desc="rationales"
    )
    log.info("rationales: %s", json.dumps(summarize(results)))
    return [
        {
            "rationale": result.parsed if result.status == "ok" else None,
            "backend": "openai",
            "model": result.model,
            "prompt_version": version,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "cost_usd": result.cost_usd,
            "status": result.status,
            "error": result.error,
        }
        for result in results
    ]


# ---------------------------------------------------------------------------------------------
# offline backend


def first_sentence(text: str) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return _SENTENCE_END.split(line, maxsplit=1)[0]


def answer_kind(answer: str, profile: AnswerProfile) -> str:
    if profile.is_label(answer):
        return f"one of the labels {', '.join(profile.labels)}"
    if is_number(answer):
        return "a number"
    words = len(answer.split())
    return f"a text of {words} word{'s' if words != 1 else ''}"


def template_rationale(instruction: str, text: str, answer: str, profile: AnswerProfile) -> str:
    """The offline rationale: what the example says, no reasoning (module docstring)."""
    words = text.split()
    shown = " ".join(words[:INPUT_WORDS]) + (" ..." if len(words) > INPUT_WORDS else "")
    lines = [f"The task: {first_sentence(instruction)}"]
    if shown:
        lines.append(f"The input: {shown}")
    lines.append(f"The answer is {answer_kind(answer, profile)}.")
    return "\n".join(lines)


def rationales_offline(rows: pd.DataFrame, max_labels: int = 10) -> list[dict]:
    profiles = {task: AnswerProfile.of(group["answer"], max_labels) for task, group in rows.groupby("task")}
    return [
        {
            "rationale": template_rationale(i, x, a, profiles[t]),
            "backend": "offline",
            "model": None,
            "prompt_version": TEMPLATE_VERSION,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost_usd": 0.0,
            "status": "ok",
            "error": None,
        }
        for t, i, x, a in zip(rows["task"], rows["instruction"], rows["input"], rows["answer"])
    ]


# ---------------------------------------------------------------------------------------------


def write_rationales(
    instances: pd.DataFrame, tasks: list[str], rcl: dict, cache_dir
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rationales artifact frame, rcl_instances frame) for the training examples of `tasks`."""
    rows = training_rows(instances, tasks)
    backend = rcl["backend"]
    if backend == "openai":
        made = rationales_openai(rows, rcl, cache_dir)
    elif backend == "offline":
        made = rationales_offline(rows)
    else:
        raise ConfigError(f"rcl.backend: unknown backend {backend!r}")
    table = pd.concat([rows[["task", "instance_id", "answer"]].reset_index(drop=True), pd.DataFrame(made)], axis=1)
    missing = table["status"] != "ok"
    if missing.any() and not rcl.get("allow_missing", False):
        counts = table.loc[missing, "status"].value_counts().to_dict()
        raise InputError(
            f"rcl.{backend}",
            f"{int(missing.sum())} of {len(table)} rationales missing ({counts}); paid answers are cached, so a "
            "rerun pays only for these (raise the budget, or set rcl.allow_missing to train them on the answer alone)",
            field="rcl.allow_missing",
        )
    table["target"] = [
        rationale_target(r, a) if ok else f"{ANSWER_MARKER} {a}"
        for r, a, ok in zip(table["rationale"], table["answer"], ~missing)
    ]
    if missing.any():
        log.warning("%d examples without a rationale train on the answer line alone", int(missing.sum()))
    targets = dict(zip(table["instance_id"], table["target"]))
    rcl_instances = instances.copy()
    replace = rcl_instances["instance_id"].isin(targets.keys()) & (rcl_instances["split"] == "train")
    rcl_instances.loc[replace, "output"] = pd.Series(
        [[targets[i]] for i in rcl_instances.loc[replace, "instance_id"]],
        index=rcl_instances.index[replace],
        dtype=object,
    )
    log.info("%d training targets of %d tasks: rationale + answer (%s backend)", len(table), len(tasks), backend)
    return table[artifacts.columns("rationales")], rcl_instances
