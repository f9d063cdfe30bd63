"""Training examples: the rows of a stage (its tasks' training split plus the replay set) and their
tokenisation into prompt + answer + EOS, with the loss on the answer and EOS only."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from inscl.core.io import InputError
from inscl.core.prompts import build_prompt

# Label of a token that takes no loss (the prompt, padding).
IGNORE_INDEX = -100


def load_training_rows(instances_path, tasks: list[str], replay_path=None) -> pd.DataFrame:
    """Training rows of `tasks` plus the replayed rows: instruction, input, answer (first reference)."""
    instances = pd.read_parquet(
        instances_path, columns=["task", "split", "instance_id", "instruction", "input", "output"]
    )
    train = instances[(instances["split"] == "train") & instances["task"].isin(tasks)]
    for task in tasks:
        if not (train["task"] == task).any():
            raise InputError(instances_path, f"no training examples for task {task!r}", field="task")
    frames = [train.assign(replayed=False)]
    if replay_path is not None:
        replay = pd.read_parquet(replay_path)
        missing = [c for c in ("task", "instance_id", "instruction", "input", "output") if c not in replay.columns]
        if missing:
            raise InputError(replay_path, "missing column", field=missing[0])
        frames.append(replay[["task", "instance_id", "instruction", "input", "output"]].assign(replayed=True))
    rows = pd.concat(frames, ignore_index=True)
    answers = []
    for position, (instance_id, refs) in enumerate(zip(rows["instance_id"], rows["output"])):
        if refs is None or len(refs) == 0 or not isinstance(refs[0], str):
            source = replay_path if rows["replayed"].iat[position] else instances_path
            raise InputError(source, "no reference answer", record=instance_id, field="output")
        answers.append(refs[0])
    rows["answer"] = answers
    rows["instruction"] = rows["instruction"].fillna("").astype(str)
    rows["input"] = rows["input"].fillna("").astype(str)
    return rows[["task", "instance_id", "instruction", "input", "answer", "replayed"]]


def load_pass_rows(path) -> pd.DataFrame:
    """The rows of an extra pass after a stage (`extra{k}.parquet`, inscl.replay.general) in `position`
    order: instruction, input, answer (first reference)."""
    frame = pd.read_parquet(path)
    missing = [c for c in ("instance_id", "instruction", "input", "output", "position") if c not in frame.columns]
    if missing:
        raise InputError(path, "missing column", field=missing[0])
    rows = frame.sort_values("position", kind="stable").reset_index(drop=True)
    answers = []
    for instance_id, refs in zip(rows["instance_id"], rows["output"]):
        if refs is None or len(refs) == 0 or not isinstance(refs[0], str):
            raise InputError(path, "no reference answer", record=instance_id, field="output")
        answers.append(refs[0])
    return pd.DataFrame(
        {
            "instruction": rows["instruction"].fillna("").astype(str),
            "input": rows["input"].fillna("").astype(str),
            "answer": answers,
        }
    )


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def targets(self) -> int:
        """Tokens that take the loss."""
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass(frozen=True)
class Lengths:
    """Token limits of a training example (training.max_length / max_prompt_length / max_answer_length)."""

    total: int
    prompt: int | None = None
    answer: int | None = None

    @classmethod
    def of(cls, training: dict, model_limit: int | None = None) -> "Lengths":
        total = int(training["max_length"])
        return cls(
            min(total, model_limit) if model_limit else total,
            training.get("max_prompt_length"),
            training.get("max_answer_length"),
        )


def assemble(prompt_ids: list[int], answer_ids: list[int], eos_id: int, lengths: Lengths, bos_id=None) -> Example:
    """Prompt + answer + EOS with loss on the answer and EOS only.

    The answer keeps its first `lengths.answer` tokens (EOS included), the prompt its last
    `lengths.prompt` (after BOS, as TRACE truncates from the left). Then, too long for
    `lengths.total`: the prompt loses tokens from its left (after BOS); an answer that alone does
    not fit is cut on the right, keeping one prompt token.
    """
    target = list(answer_ids) + [eos_id]
    if lengths.answer:
        target = target[: lengths.answer - 1] + [eos_id]
    target = target[: lengths.total - 1]
    room = lengths.total - len(target)
    if lengths.prompt:
        room = min(room, lengths.prompt)
    if len(prompt_ids) > room:
        keep_bos = bos_id is not None and prompt_ids[0] == bos_id and room >= 2
        prompt_ids = (prompt_ids[:1] + prompt_ids[len(prompt_ids) - room + 1 :]) if keep_bos else prompt_ids[-room:]
    return Example(list(prompt_ids) + target, [IGNORE_INDEX] * len(prompt_ids) + target)


def encode_examples(tokenizer, rows: pd.DataFrame, template: str, lengths: Lengths) -> list[Example]:
    """Tokenise training rows (batched) into answer-only-labelled examples."""
    if tokenizer.eos_token_id is None:
        raise InputError(getattr(tokenizer, "name_or_path", "tokenizer"), "the tokenizer has no EOS token")
    prompts = [build_prompt(i, x, template, tokenizer) for i, x in zip(rows["instruction"], rows["input"])]
    bos = tokenizer.bos_token
    with_bos = [not (bos and p.startswith(bos)) for p in prompts]
    prompt_ids: list[list[int] | None] = [None] * len(prompts)
    for add_special in (True, False):
        chosen = [k for k, flag in enumerate(with_bos) if flag == add_special]
        if chosen:
            encoded = tokenizer([prompts[k] for k in chosen], add_special_tokens=add_special)["input_ids"]
            for k, ids in zip(chosen, encoded):
                prompt_ids[k] = ids
    answer_ids = tokenizer(rows["answer"].tolist(), add_special_tokens=False)["input_ids"]
    return [
        assemble(p, a, tokenizer.eos_token_id, lengths, tokenizer.bos_token_id) for p, a in zip(prompt_ids, answer_ids)
    ]
