"""The `icl` method: the base model answers each test prompt after k demonstrations of its task.

TRACE's ICL baseline (BeyonderXX/TRACE@462e39f inference/ICL.py, scripts/ICL.sh), with one change:
the demonstrations come from the task's **training** split, never its test split (TRACE draws them from
the test split it then scores, ICL.py:366-373).

- **Drawing** (`draw_demonstrations`), once per (seed, task), shared by all its test prompts as in
  TRACE: the training rows sorted by instance id (so the file order does not matter), permuted by
  numpy's Generator seeded with stable_seed(seed, "icl", task), then taken in that order when
  - prompt input + answer fit in (room - tokens(instruction + header)) / (2k) tokens, TRACE's
    per-demonstration cap (ICL.py:292-305; room = the prompt room of the task, below);
  - for a classification task (`inscl.evaluation.answers.AnswerProfile`) its label has fewer than
    ceil(k / labels) demonstrations yet (TRACE: fewer than k/3 for FOMC and C-STANCE, i.e. 2 of each
    of the 3 labels at k = 6, ICL.py:306-310); for any other task its answer is not taken yet
    (ICL.py:311-315);
  until k are taken or the rows run out. `icl.shots_per_task` sets k per task (TRACE: MeetingBank 0,
  ICL.py:375-376).
- **Layout** (`icl_prompt`), TRACE's (utils/data/data_collator.py:83-99): the task instruction, the
  `icl.header` text (TRACE's "examples" header verbatim, ICL.py:43), each demonstration's input and
  answer followed by a blank line, then the test input. With `training.template: raw` this is TRACE's
  string exactly: input and answer joined as they are (TRACE's prompts end with a field label such as
  "Answer:"), the instruction and the input's leading blank lines being its task prompt. With another
  template the instruction slot holds instruction, header and demonstrations, each demonstration shaped
  like the template's own input and answer (`DEMONSTRATION`), and the input slot the test input.
  Without demonstrations the prompt is the plain one (no header), as TRACE's MeetingBank.
- **Fallback**: a prompt longer than the room (icl.max_prompt_tokens, at most the model's context
  minus the task's max_new_tokens) drops demonstrations from the end, down to 0; a 0-shot prompt
  that still does not fit is cut from the left like any prompt (inscl.evaluation.lengths).
- **Answers** end at a blank line followed by the first line the demonstrations share (a field label
  such as "Question:", or the template's "### Input:"; a blank line alone when they share none): the
  model starting the next example, TRACE's per-task cut markers (ICL.py:263-289) found from the data.
  The configured stop strings still apply.
- **Scores**: as every model's (inscl.evaluation.score), with the plain prompt as SARI's source.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from inscl.core.hashing import stable_seed
from inscl.core.prompts import build_prompt, encode_prompt
from inscl.evaluation.answers import AnswerProfile
from inscl.evaluation.lengths import max_new_tokens_per_task, prompt_room, stop_strings

log = logging.getLogger(__name__)

SEPARATOR = "\n\n"
# One demonstration per training.template: TRACE joins input and answer directly (data_collator.py:91-92);
# the other templates repeat their own input / answer shape (inscl.core.prompts).
DEMONSTRATION = {
    "raw": "{input}{answer}",
    "inscl": "{input}\n\n{answer}",
    "alpaca": "### Input:\n{input}\n\n### Response:\n{answer}",
    "chat": "Input:\n{input}\nOutput:\n{answer}",
}


@dataclass(frozen=True)
class Demonstration:
    instance_id: str
    body: str  # the input without its leading blank lines
    answer: str
    tokens: int  # body + answer, no special tokens
    label: str | None  # the answer, for a classification task
    reason: str


def split_lead(text: str) -> tuple[str, str]:
    """(leading line breaks, the rest) of an input: the line breaks belong to TRACE's task prompt."""
    body = text.lstrip("\n")
    return text[: len(text) - len(body)], body


def shots_of(task: str, icl: dict) -> int:
    return int((icl.get("shots_per_task") or {}).get(task, icl.get("shots", 6)))


def token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def draw_demonstrations(
    train: pd.DataFrame, k: int, cap_tokens: float, profile: AnswerProfile, rng: np.random.Generator, tokenizer
) -> list[Demonstration]:
    """Up to k demonstrations from one task's training rows (module docstring)."""
    if k <= 0 or train.empty:
        return []
    rows = train.sort_values("instance_id", kind="stable")
    per_label = math.ceil(k / len(profile.labels)) if profile.labels else None
    taken: dict[str, int] = {}
    chosen: list[Demonstration] = []
    for position in rng.permutation(len(rows)):
        row = rows.iloc[int(position)]
        answer = str(row["output"][0])
        _, body = split_lead(str(row["input"]))
        tokens = token_count(tokenizer, body) + token_count(tokenizer, answer)
        if tokens > cap_tokens:
            continue
        key = answer.strip()
        if per_label is not None:
            if taken.get(key, 0) >= per_label:
                continue
            reason = (
                f"label {key!r}: {taken.get(key, 0) + 1} of at most {per_label}; {tokens} <= {cap_tokens:.0f} tokens"
            )
        else:
            if key in taken:
                continue
            reason = f"a new answer; {tokens} <= {cap_tokens:.0f} tokens"
        taken[key] = taken.get(key, 0) + 1
        chosen.append(Demonstration(str(row["instance_id"]), body, answer, tokens, key if per_label else None, reason))
        if len(chosen) == k:
            break
    return chosen


def icl_prompt(
    instruction: str, text: str, demos: list[Demonstration], header: str, template: str, tokenizer=None
) -> str:
    """TRACE's ICL layout (module docstring); the plain prompt without demonstrations."""
    if not demos:
        return build_prompt(instruction, text, template, tokenizer)
    lead, body = split_lead(text)
    shots = "".join(demonstration_text(d, template) + SEPARATOR for d in demos)
    if template == "raw":
        return f"{instruction}\n{lead}{header}{shots}{body}"
    return build_prompt(f"{instruction}\n{header}{shots}".rstrip(), text, template, tokenizer)


def demonstration_text(demo: Demonstration, template: str) -> str:
    if template not in DEMONSTRATION:
        raise ValueError(f"unknown prompt template {template!r}; expected one of {tuple(DEMONSTRATION)}")
    return DEMONSTRATION[template].format(input=demo.body, answer=demo.answer)


def next_example_stop(demos: list[Demonstration], template: str = "raw") -> str:
    """A blank line and the first line every demonstration starts with (just a blank line when they
    share no whole first line)."""
    if not demos:
        return SEPARATOR
    common = os.path.commonprefix([demonstration_text(d, template) for d in demos])
    first = common.split("\n", 1)[0] if "\n" in common else ""
    return SEPARATOR + first if first.strip() else SEPARATOR


@dataclass
class TaskPrompts:
    demonstrations: list[Demonstration]
    stop: str
    room: int | None


def plan_task(
    task: str,
    instances: pd.DataFrame,
    tokenizer,
    icl: dict,
    max_new_tokens: int,
    context: int | None,
    seed: int,
    max_labels: int,
    template: str = "raw",
) -> TaskPrompts:
    """The demonstrations, stop string and prompt room of one task."""
    rows = instances[instances["task"] == task]
    train = rows[rows["split"] == "train"]
    room = prompt_room(context, max_new_tokens, icl.get("max_prompt_tokens"))
    k = shots_of(task, icl)
    instruction = str(rows["instruction"].iloc[0]) if len(rows) else ""
    fixed = token_count(tokenizer, instruction + icl["header"]) + 1  # + BOS
    cap = math.inf if room is None else max(0.0, (room - fixed) / (2 * max(k, 1)))
    profile = AnswerProfile.of([refs[0] for refs in train["output"]], max_labels)
    demos = draw_demonstrations(
        train, k, cap, profile, np.random.default_rng(stable_seed(seed, "icl", task)), tokenizer
    )
    log.info(
        "%s: %d of %d demonstrations from %d training rows (%s; at most %s tokens each)",
        task,
        len(demos),
        k,
        len(train),
        f"{len(profile.labels)} labels" if profile.labels else "distinct answers",
        "any" if math.isinf(cap) else f"{cap:.0f}",
    )
    return TaskPrompts(demos, next_example_stop(demos, template), room)


def build_icl_prompts(
    rows: pd.DataFrame,
    instances: pd.DataFrame,
    tokenizer,
    evaluation: dict,
    icl: dict,
    template: str,
    context: int | None,
    seed: int,
) -> tuple[list[str], list[int], dict[str, TaskPrompts], dict]:
    """(ICL prompt per row, shots per row, plan per task, the evaluation settings with the ICL stops)."""
    tasks = list(dict.fromkeys(rows["task"]))
    lengths = max_new_tokens_per_task(instances, tasks, tokenizer, evaluation)
    plans = {
        task: plan_task(
            task, instances, tokenizer, icl, lengths[task], context, seed, int(icl.get("max_labels", 10)), template
        )
        for task in tasks
    }
    prompts, shots = [], []
    for task, instruction, text in zip(rows["task"], rows["instruction"], rows["input"]):
        plan = plans[task]
        for n in range(len(plan.demonstrations), -1, -1):
            prompt = icl_prompt(instruction, text, plan.demonstrations[:n], icl["header"], template, tokenizer)
            if plan.room is None or n == 0 or len(encode_prompt(tokenizer, prompt)) <= plan.room:
                break
        prompts.append(prompt)
        shots.append(n)
    fewer = sum(n < len(plans[t].demonstrations) for t, n in zip(rows["task"], shots))
    if fewer:
        log.info("%d of %d prompts hold fewer demonstrations to fit the context", fewer, len(prompts))
    stops = {
        task: list(stop_strings(task, evaluation)) + ([plan.stop] if plan.demonstrations else [])
        for task, plan in plans.items()
    }
    return (
        prompts,
        shots,
        plans,
        {**evaluation, "stop_per_task": stops, "max_prompt_tokens": icl.get("max_prompt_tokens")},
    )


def demonstrations_frame(plans: dict[str, TaskPrompts]) -> pd.DataFrame:
    rows = [
        {
            "task": task,
            "rank": rank,
            "instance_id": d.instance_id,
            "label": d.label,
            "tokens": d.tokens,
            "reason": d.reason,
        }
        for task, plan in plans.items()
        for rank, d in enumerate(plan.demonstrations, start=1)
    ]
    return pd.DataFrame(rows, columns=["task", "rank", "instance_id", "label", "tokens", "reason"])


@dataclass
class ICLResult:
    predictions: pd.DataFrame
    scores: pd.DataFrame
    demonstrations: pd.DataFrame
    shots: pd.DataFrame


def run_icl(
    instances: pd.DataFrame,
    tasks: list[str],
    backend,
    tokenizer,
    evaluation: dict,
    icl: dict,
    template: str,
    seed: int,
    output,
    label: str = "icl",
    model_folders=(),
) -> ICLResult:
    """Answer the test rows of `tasks` with demonstrations, resumable like every predict job
    (predictions written to `output`), and score them."""
    from inscl.evaluation.predict import predict, select_test_rows
    from inscl.evaluation.score import score_predictions

    rows = select_test_rows(instances, tasks, evaluation.get("max_test_per_task"))
    prompts, shots, plans, settings = build_icl_prompts(
        rows, instances, tokenizer, evaluation, icl, template, backend.context, seed
    )
    predictions, _ = predict(
        rows,
        instances,
        backend,
        tokenizer,
        settings,
        output,
        template=template,
        seed=stable_seed("icl", seed),
        label=label,
        prompts=prompts,
        model_folders=model_folders,
    )
    plain = [build_prompt(i, x, template, tokenizer) for i, x in zip(rows["instruction"], rows["input"])]
    scores = score_predictions(predictions.assign(prompt=plain), evaluation, source=output)
    shots_frame = pd.DataFrame(
        {
            "task": predictions["task"],
            "instance_id": predictions["instance_id"],
            "shots": shots,
            "prompt_tokens": predictions["prompt_tokens"],
        }
    )
    return ICLResult(predictions, scores, demonstrations_frame(plans), shots_frame)
