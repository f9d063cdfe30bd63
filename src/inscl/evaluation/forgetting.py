"""InsCL's forgetting analysis: the test examples of each task that were right just after the task was
learned and wrong at the end, each classified as instruction-related or instruction-unrelated.

For one chain (order, method, seed) of T stages and each task j < T (the last task cannot be forgotten):

- every test example of task j is scored in the predictions of stage j (just learned) and of stage T
  (the end) with the task's primary metric (`inscl.evaluation.score`), after the method's answer
  extraction (`inscl.evaluation.answers`); it is **right** when its score is at least
  `forgetting.threshold` (0-100; exact-match metrics score 0 or 100);
- right at stage j is **learned**; learned and right at T is `retained`; learned and wrong at T is
  **forgotten**, and gets a category:
  - `instruction_related`: the final answer no longer follows the instruction (its format, label set,
    answer type or task);
  - `instruction_unrelated`: it follows the instruction, but its content is wrong.

Both evaluation.tasks settings have these cells: stage j scores task j under `seen` as under `all`.

**Offline classifier** (`classify_offline`), the first check that applies, against the task's answer
profile (its training answers, `AnswerProfile`) and the example's instruction and input; under the
`first_char_accuracy` metric (TRACE's ScienceQA) answers and training answers are their first
character, the answer letter:

1. an empty answer -> related (no answer);
2. an rcl run whose generation has no "Answer:" line -> related (the trained answer format is gone);
3. a classification task: not one of its labels -> related; one of them -> unrelated (a valid label, the
   wrong one);
4. a numeric task: not a number -> related; a number -> unrelated;
5. answers of at most five shapes (letter runs -> a, digit runs -> 9): another shape -> related;
6. fewer words than a quarter of the shortest training answer, or more than four times the longest
   plus two -> related;
7. the answer repeats the instruction's first sentence, or is the input copied -> related;
8. otherwise -> unrelated.

**Judge** (`forgetting.classifier: openai`): prompt `forget-v1` through `inscl.core.llm` (cached by
instruction, input, references and answer, so a rerun pays nothing twice); its JSON verdict. An
example the judge could not settle (failed after the retries and the repair, or stopped by the budget)
keeps its status and no category, and is counted apart in the report.

InsCL's finding (the paper's forgetting analysis): complex reasoning tasks forget mostly the second
way, instruction-unrelated; the report shows it beside the measured shares.
"""

from __future__ import annotations

import json
import logging
import re

import pandas as pd

from inscl.core import artifacts
from inscl.core.config import ConfigError
from inscl.core.io import InputError
from inscl.core.llm import InvalidAnswer, run_chat_requests
from inscl.evaluation.answers import AnswerProfile, is_number, shape, split_rationale
from inscl.evaluation.score import example_scorer, metric_for_task

log = logging.getLogger(__name__)

RETAINED, RELATED, UNRELATED = "retained", "instruction_related", "instruction_unrelated"
CATEGORIES = (RELATED, UNRELATED)
MAX_LABELS = 10

SYSTEM_PROMPT = "You analyse the mistakes of a language model."
PROMPTS = {
    "forget-v1": (
        "A model answered the task below wrongly. Decide which kind of mistake it is:\n"
        '- "instruction-related": the answer does not follow the instruction: it ignores the required format, '
        "answer type, label set, language or task (for example it answers another question, repeats the input, "
        "or gives no answer);\n"
        '- "instruction-unrelated": the answer follows the instruction (the right format and kind of answer), '
        "but its content is wrong.\n\n"
        "Instruction:\n{instruction}\n\nInput:\n{input}\n\nReference answer(s):\n{references}\n\n"
        "Model answer:\n{answer}\n\n"
        'Reply with only JSON: {{"category": "instruction-related" or "instruction-unrelated", "reason": "one sentence"}}'
    ),
}
_JSON_OBJECT = re.compile(r"\{.*\}", re.S)


# ---------------------------------------------------------------------------------------------
# offline classifier


def classify_offline(
    answer: str, marker: bool, rationale_run: bool, profile: AnswerProfile, instruction: str, text: str
) -> tuple[str, str]:
    """(category, reason) of a wrong final answer (module docstring)."""
    answer = answer.strip()
    if not answer:
        return RELATED, "no answer"
    if rationale_run and not marker:
        return RELATED, 'no "Answer:" line after the rationale'
    if profile.labels is not None:
        if profile.is_label(answer):
            return UNRELATED, "one of the task's labels, the wrong one"
        return RELATED, f"not one of the task's labels ({', '.join(profile.labels[:MAX_LABELS])})"
    if profile.numeric:
        if is_number(answer):
            return UNRELATED, "a number, the wrong one"
        return RELATED, "not a number, as the task's answers are"
    if profile.shapes is not None and shape(answer) not in profile.shapes:
        return RELATED, f"its form {shape(answer)!r} is none of the task's answer forms"
    words = len(answer.split())
    if words < profile.min_words / 4 or words > 4 * profile.max_words + 2:
        return RELATED, f"{words} words, where the task's answers have {profile.min_words} to {profile.max_words}"
    head = instruction.strip().split("\n")[0][:80].strip()
    if (head and head in answer) or (len(text.strip()) > 20 and answer == text.strip()):
        return RELATED, "it repeats the instruction or copies the input"
    return UNRELATED, "it follows the instruction's format; its content is wrong"


# ---------------------------------------------------------------------------------------------
# judge


def judge_messages(instruction: str, text: str, references: list[str], answer: str, prompt_version: str) -> list[dict]:
    if prompt_version not in PROMPTS:
        raise ConfigError(
            f"forgetting.prompt_version: unknown prompt version {prompt_version!r}; known: {sorted(PROMPTS)}"
        )
    user = PROMPTS[prompt_version].format(
        instruction=instruction, input=text or "(none)", references="\n".join(references), answer=answer or "(empty)"
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_category(text: str) -> tuple[str, str]:
    """(category, reason) from the judge's JSON answer; InvalidAnswer otherwise."""
    match = _JSON_OBJECT.search(text or "")
    if match is None:
        raise InvalidAnswer("no JSON object in the answer")
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError:
        raise InvalidAnswer("malformed JSON") from None
    category = str(value.get("category", "") if isinstance(value, dict) else "").strip().lower().replace("-", "_")
    if category not in CATEGORIES:
        raise InvalidAnswer('"category" is neither "instruction-related" nor "instruction-unrelated"')
    return category, str(value.get("reason", "")).strip()


def classify_with_judge(forgotten: pd.DataFrame, forgetting: dict, cache_dir) -> pd.DataFrame:
    endpoint, version = forgetting["openai"], forgetting["prompt_version"]
    requests = []
    for instruction, text, refs, answer in zip(
        forgotten["instruction"], forgotten["input"], forgotten["references"], forgotten["answer_final"]
    ):
        key = json.dumps([instruction, text, list(refs), answer], ensure_ascii=False)
        requests.append((key, judge_messages(instruction, text, list(refs), answer, version)))
    results = run_chat_requests(
        requests, endpoint, cache_dir, version, validate=parse_category, desc="forgetting judge"
    )
    return forgotten.assign(
        category=[r.parsed[0] if r.status == "ok" else None for r in results],
        reason=[r.parsed[1] if r.status == "ok" else r.error for r in results],
        classifier=f"openai:{endpoint.get('model', 'gpt-4')}:{version}",
        status=[r.status for r in results],
        cost_usd=[float(r.cost_usd) for r in results],
    )


# ---------------------------------------------------------------------------------------------
# one chain


def scored_part(answer: str, metric: str) -> str:
    """What the task's metric reads of an answer: the first character under first_char_accuracy
    (TRACE's ScienceQA answer letter), else all of it."""
    return answer.strip()[:1] if metric == "first_char_accuracy" else answer


def scored(predictions: pd.DataFrame, task: str, evaluation: dict, rationale_run: bool, source) -> pd.DataFrame:
    """instance_id, score, answer (extracted) and marker of one task's predictions."""
    rows = predictions[predictions["task"] == task]
    if rows.empty:
        raise InputError(source, "no predictions for the task", record=task, field="task")
    metric = metric_for_task(task, evaluation.get("metrics", {}))
    scorer = example_scorer(metric, bool(evaluation.get("normalize_exact_match", False)))
    answers, markers, scores = [], [], []
    for prompt, prediction, refs in zip(rows["prompt"], rows["prediction"], rows["references"]):
        text = prediction if isinstance(prediction, str) else ""
        answer, marker = split_rationale(text) if rationale_run else (text, False)
        answers.append(answer)
        markers.append(marker)
        scores.append(scorer(str(prompt), answer, list(refs)))
    return pd.DataFrame(
        {"instance_id": rows["instance_id"].to_numpy(), "score": scores, "answer": answers, "marker": markers}
    ).assign(metric=metric)


def analyse_chain(
    order: str,
    method: str,
    seed: int,
    tasks: list[str],
    predictions: dict[int, pd.DataFrame],
    instances: pd.DataFrame,
    evaluation: dict,
    forgetting: dict,
    rationale_run: bool = False,
    cache_dir="cache",
    sources: dict[int, str] | None = None,
) -> pd.DataFrame:
    """The forgetting artifact's rows of one chain: every learned example of tasks 1..T-1 (module
    docstring). `predictions[k]` is the predictions frame of stage k (1..T)."""
    sources = sources or {}
    T, threshold = len(tasks), float(forgetting.get("threshold", 50))
    lookup = instances.set_index("instance_id")
    frames = []
    for j, task in enumerate(tasks[:-1], start=1):
        learned = scored(predictions[j], task, evaluation, rationale_run, sources.get(j, f"stage {j}"))
        final = scored(predictions[T], task, evaluation, rationale_run, sources.get(T, f"stage {T}"))
        both = learned.merge(final, on=["instance_id", "metric"], suffixes=("_learned", "_final"), validate="1:1")
        both = both[both["score_learned"] >= threshold].reset_index(drop=True)
        train = instances[(instances["task"] == task) & (instances["split"] == "train")]
        metric = str(both["metric"].iloc[0]) if len(both) else ""
        profile = AnswerProfile.of([scored_part(refs[0], metric) for refs in train["output"]], MAX_LABELS)
        context = lookup.loc[both["instance_id"], ["instruction", "input", "output"]].reset_index(drop=True)
        both = pd.concat([both, context.rename(columns={"output": "references"})], axis=1)
        both["forgotten"] = both["score_final"] < threshold
        offline = [
            classify_offline(scored_part(a, metric), m, rationale_run, profile, i, x)
            if f
            else (RETAINED, "right at the end too")
            for a, m, i, x, f in zip(
                both["answer_final"], both["marker_final"], both["instruction"], both["input"], both["forgotten"]
            )
        ]
        both = both.assign(
            order=order,
            method=method,
            seed=int(seed),
            task=task,
            task_index=j,
            category=[c for c, _ in offline],
            reason=[r for _, r in offline],
            classifier=["offline" if f else "none" for f in both["forgotten"]],
            status="ok",
            cost_usd=0.0,
        )
        log.info(
            "%s/%s/seed%s %s: %d learned, %d forgotten (%s)",
            order,
            method,
            seed,
            task,
            len(both),
            int(both["forgotten"].sum()),
            both.loc[both["forgotten"], "category"].value_counts().to_dict(),
        )
        frames.append(both)
    result = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=artifacts.columns("forgetting"))
    if forgetting.get("classifier", "offline") == "openai" and len(result):
        forgotten = result["forgotten"].astype(bool)
        judged = classify_with_judge(result[forgotten], forgetting, cache_dir)
        result.loc[forgotten, ["category", "reason", "classifier", "status", "cost_usd"]] = judged[
            ["category", "reason", "classifier", "status", "cost_usd"]
        ].to_numpy()
    return result.reindex(columns=artifacts.columns("forgetting"))
