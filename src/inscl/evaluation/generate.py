"""Batched generation for evaluation: length-sorted, left-padded batches, KV cache, greedy by default.

Prompts are built with the training template (`inscl.core.prompts`) and tokenized exactly as training
saw them. A prompt longer than the model's context minus `max_new_tokens` keeps its BOS token
and loses tokens from the left. Each answer ends at the first EOS or after `max_new_tokens`.
Sampling (optional) is seeded per batch from `stable_seed`, so reruns give the same text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from inscl.core import artifacts
from inscl.core.hashing import content_hash, stable_seed
from inscl.core.io import InputError
from inscl.core.prompts import build_prompt, encode_prompt

log = logging.getLogger(__name__)

INSTANCE_COLUMNS = ("task", "split", "instance_id", "instruction", "input", "output")


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 64
    batch_size: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    @classmethod
    def from_config(cls, evaluation: dict, seed: int = 0, **overrides) -> "GenerationSettings":
        values = {
            k: evaluation[k]
            for k in ("max_new_tokens", "batch_size", "do_sample", "temperature", "top_p")
            if k in evaluation
        }
        return cls(**{**values, "seed": seed, **overrides})


def _context_limit(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def fit_to_context(ids: list[int], limit: int | None, bos_id: int | None) -> list[int]:
    """Drop tokens from the left (after a leading BOS) so that len(ids) <= limit."""
    if limit is None or len(ids) <= limit:
        return ids
    if bos_id is not None and ids and ids[0] == bos_id:
        return [bos_id] + ids[len(ids) - limit + 1 :]
    return ids[len(ids) - limit :]


def _left_pad(batch: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids) :] = 1
    return input_ids.to(device), attention.to(device)


def _generation_config(model, tokenizer, settings: GenerationSettings):
    from transformers import GenerationConfig

    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    first_eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else first_eos
    kwargs = dict(max_new_tokens=settings.max_new_tokens, eos_token_id=eos, pad_token_id=pad, use_cache=True)
    if settings.do_sample:
        kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)
    else:
        kwargs.update(do_sample=False)
    return GenerationConfig(**kwargs), eos, pad


def _until_eos(ids: list[int], eos) -> list[int]:
    stops = set(eos if isinstance(eos, (list, tuple)) else [eos])
    for position, token in enumerate(ids):
        if token in stops:
            return ids[:position]
    return ids


@torch.inference_mode()
def generate_ids(
    model, tokenizer, prompt_ids: list[list[int]], settings: GenerationSettings, progress: bool = True
) -> list[list[int]]:
    """New token ids per prompt (EOS and padding removed), in the order of `prompt_ids`.

    Prompts are sorted by length (longest first) so each batch pads little; batches are
    left-padded so every row's last prompt token sits at the same position, and the KV cache
    is on.
    """
    if not prompt_ids:
        return []
    config, eos, pad = _generation_config(model, tokenizer, settings)
    limit = _context_limit(model)
    room = None if limit is None else limit - settings.max_new_tokens
    if room is not None and room < 2:
        raise ValueError(
            f"max_new_tokens={settings.max_new_tokens} leaves no room for a prompt in the model's "
            f"context of {limit} tokens"
        )
    bos = tokenizer.bos_token_id
    fitted = [fit_to_context(list(ids), room, bos) for ids in prompt_ids]
    order = sorted(range(len(fitted)), key=lambda i: (-len(fitted[i]), i))
    device = next(model.parameters()).device
    results: list[list[int] | None] = [None] * len(fitted)
    batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
    for number, members in enumerate(tqdm(batches, desc="generate", unit="batch", disable=not progress)):
        input_ids, attention = _left_pad([fitted[i] for i in members], pad, device)
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            if settings.do_sample:
                torch.manual_seed(stable_seed(settings.seed, "generate", number))
            output = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config)
        new_tokens = output[:, input_ids.shape[1] :].tolist()
        for i, tokens in zip(members, new_tokens):
            results[i] = _until_eos(tokens, eos)
    return results  # type: ignore[return-value]


def generate_texts(
    model, tokenizer, prompts: list[str], settings: GenerationSettings, progress: bool = True
) -> list[str]:
    """Greedy (or sampled) continuations of `prompts`, decoded without special tokens."""
    ids = [encode_prompt(tokenizer, prompt) for prompt in prompts]
    generated = generate_ids(model, tokenizer, ids, settings, progress=progress)
    return tokenizer.batch_decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def select_test_rows(
    instances: pd.DataFrame, tasks: list[str], max_per_task: int | None, source="instances.parquet"
) -> pd.DataFrame:
    """The test rows of `tasks`, at most `max_per_task` each, chosen by a hash of the instance id.

    The choice depends only on the ids, so it is the same for every model and run, and adding
    examples to a task changes the selection as little as possible.
    """
    missing = [c for c in INSTANCE_COLUMNS if c not in instances.columns]
    if missing:
        raise InputError(source, f"missing column(s) {', '.join(missing)}", field=missing[0])
    chosen = []
    for task in tasks:
        rows = instances[(instances["task"] == task) & (instances["split"] == "test")]
        if rows.empty:
            raise InputError(source, "task has no test examples", record=task, field="split")
        if max_per_task is not None and len(rows) > max_per_task:
            keys = rows["instance_id"].astype(str).map(lambda i: content_hash(f"{task}\x1f{i}"))
            rows = rows.loc[keys.sort_values(kind="stable").index[:max_per_task]].sort_index()
        chosen.append(rows)
    return pd.concat(chosen)


def predict(
    instances: pd.DataFrame,
    tasks: list[str],
    model,
    tokenizer,
    evaluation: dict,
    template: str = "plain",
    seed: int = 0,
    source="instances.parquet",
    progress: bool = True,
) -> pd.DataFrame:
    """Generate for the capped test rows of `tasks` -> the predictions artifact's frame."""
    rows = select_test_rows(instances, tasks, evaluation.get("max_test_per_task"), source)
    prompts = [build_prompt(ins, inp, template, tokenizer) for ins, inp in zip(rows["instruction"], rows["input"])]
    settings = GenerationSettings.from_config(evaluation, seed=seed)
    log.info("generating for %d test examples of %d task(s), batch %d", len(prompts), len(tasks), settings.batch_size)
    predictions = generate_texts(model, tokenizer, prompts, settings, progress=progress)
    return pd.DataFrame(
        {
            "task": rows["task"].astype(str).to_list(),
            "instance_id": rows["instance_id"].astype(str).to_list(),
            "prompt": prompts,
            "prediction": predictions,
            "references": [[str(r) for r in refs] for refs in rows["output"]],
        },
        columns=artifacts.columns("predictions"),
    )
