"""The hf backend: batched generation with transformers, length-sorted, left-padded, KV cache, greedy by default.

Prompts arrive as token ids, already built with the training template and truncated
(`inscl.evaluation.lengths`); a prompt that still exceeds the model's context minus
`max_new_tokens` keeps its BOS token and loses tokens from the left. Each answer ends at the first
EOS, after a stop string, or after `max_new_tokens`. Sampling (optional) is seeded per batch from
`stable_seed`, so reruns give the same text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

from inscl.core.hashing import stable_seed
from inscl.core.prompts import encode_prompt
from inscl.evaluation.backends import Completion, Request, group_requests
from inscl.evaluation.lengths import fit_to_context, prompt_room

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 64
    batch_size: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, evaluation: dict, seed: int = 0, **overrides) -> "GenerationSettings":
        values = {k: evaluation[k] for k in ("batch_size", "do_sample", "temperature", "top_p") if k in evaluation}
        if isinstance(evaluation.get("max_new_tokens"), int):
            values["max_new_tokens"] = evaluation["max_new_tokens"]
        return cls(**{**values, "seed": seed, **overrides})


def _context_limit(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def _left_pad(batch: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids) :] = 1
    return input_ids.to(device), attention.to(device)


def eos_ids(model, tokenizer) -> list[int]:
    """The token ids that end an answer: the generation config's EOS (one or several), else the tokenizer's."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return list(eos) if isinstance(eos, (list, tuple)) else [eos]


def _generation_config(model, tokenizer, settings: GenerationSettings):
    from transformers import GenerationConfig

    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    kwargs = dict(max_new_tokens=settings.max_new_tokens, eos_token_id=eos, pad_token_id=pad, use_cache=True)
    if settings.stop:
        kwargs["stop_strings"] = list(settings.stop)
    if settings.do_sample:
        kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)
    else:
        kwargs.update(do_sample=False)
    return GenerationConfig(**kwargs), eos, pad


def until_eos(ids: list[int], eos) -> tuple[list[int], bool]:
    """The ids before the first EOS, and whether there was one."""
    stops = set(eos if isinstance(eos, (list, tuple)) else [eos])
    for position, token in enumerate(ids):
        if token in stops:
            return ids[:position], True
    return ids, False


@torch.inference_mode()
def generate_completions(
    model, tokenizer, prompt_ids: list[list[int]], settings: GenerationSettings, progress: bool = True, on_batch=None
) -> list[Completion]:
    """One Completion per prompt, in the order of `prompt_ids`.

    Prompts are sorted by length (longest first) so each batch pads little; batches are
    left-padded so every row's last prompt token sits at the same position, and the KV cache
    is on. `on_batch(n)` is called after each batch of n prompts.
    """
    if not prompt_ids:
        return []
    config, eos, pad = _generation_config(model, tokenizer, settings)
    room = prompt_room(_context_limit(model), settings.max_new_tokens, None)
    bos = tokenizer.bos_token_id
    fitted = [fit_to_context(list(ids), room, bos) for ids in prompt_ids]
    order = sorted(range(len(fitted)), key=lambda i: (-len(fitted[i]), i))
    device = next(model.parameters()).device
    results: list[Completion | None] = [None] * len(fitted)
    batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
    extra = {"tokenizer": tokenizer} if settings.stop else {}
    for number, members in enumerate(tqdm(batches, desc="generate", unit="batch", disable=not progress)):
        input_ids, attention = _left_pad([fitted[i] for i in members], pad, device)
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            if settings.do_sample:
                torch.manual_seed(stable_seed(settings.seed, "generate", number))
            output = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config, **extra)
        new_tokens = output[:, input_ids.shape[1] :].tolist()
        for i, tokens in zip(members, new_tokens):
            answer, ended = until_eos(tokens, eos)
            if not ended and settings.stop:  # a row stopped by a stop string is padded to the batch's end
                while answer and answer[-1] == pad:
                    answer.pop()
            results[i] = Completion(token_ids=answer, eos=ended, generated_tokens=len(answer) + ended)
        if on_batch is not None:
            on_batch(len(members))
    return results  # type: ignore[return-value]


def generate_ids(
    model, tokenizer, prompt_ids: list[list[int]], settings: GenerationSettings, progress: bool = True
) -> list[list[int]]:
    """New token ids per prompt (EOS and padding removed), in the order of `prompt_ids`."""
    return [c.token_ids for c in generate_completions(model, tokenizer, prompt_ids, settings, progress)]


def generate_texts(
    model, tokenizer, prompts: list[str], settings: GenerationSettings, progress: bool = True
) -> list[str]:
    """Greedy (or sampled) continuations of `prompts`, decoded without special tokens."""
    ids = [encode_prompt(tokenizer, prompt) for prompt in prompts]
    generated = generate_ids(model, tokenizer, ids, settings, progress=progress)
    return tokenizer.batch_decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class HFBackend:
    """Requests -> completions with transformers `generate`, one length-sorted pass per (max_new_tokens,
    stop strings) group."""

    name = "hf"

    def __init__(self, model, tokenizer, settings: GenerationSettings):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings

    @property
    def context(self) -> int | None:
        return _context_limit(self.model)

    @property
    def eos(self) -> list[int]:
        return eos_ids(self.model, self.tokenizer)

    def generate(self, requests: list[Request], seed: int = 0, on_done=None) -> list[Completion]:
        results: list[Completion | None] = [None] * len(requests)
        for (max_new_tokens, stop), members in group_requests(requests).items():
            settings = replace(
                self.settings, max_new_tokens=max_new_tokens, stop=stop, seed=stable_seed(seed, max_new_tokens, *stop)
            )
            prompts = [list(requests[i].prompt_ids) for i in members]
            done = generate_completions(self.model, self.tokenizer, prompts, settings, progress=False, on_batch=on_done)
            for i, completion in zip(members, done):
                results[i] = completion
        return results  # type: ignore[return-value]

    def close(self) -> None:
        pass
